#!/usr/bin/env bash
# Build Longshot's container images locally, with no registry: a Debian base from debootstrap, a static
# pause image, and images/operator + images/agent built with buildah. Each image is saved as a
# docker-archive in the cache, keyed by a hash of its inputs, so a warm run does nothing.
#
#   hack/images.sh [build] [base|pause|operator|agent|all]   build what is stale (default: all)
#   hack/images.sh build model-server                         the real-model server of make e2e-llm (not in all:
#                                                              a model from PyPI; see images/model-server)
#   hack/images.sh import <containerd-socket> [names...]       build, then `ctr import` into namespace k8s.io
#   hack/images.sh path <name>                                 print the archive of <name> (building it)
#   hack/images.sh ref <name>                                  print the image reference of <name>
#   hack/images.sh base-lock                                   debootstrap the base's rootfs only and check it
#                                                              against images/base/base.lock (records it if missing)
#
# Environment:
#   LONGSHOT_IMAGE_CACHE   cache directory (default ~/.cache/longshot/images)
#   LONGSHOT_DEBIAN_MIRROR Debian mirror for debootstrap (default: the first one in /etc/apt/sources.list*)
#   LONGSHOT_BASE_RELOCK=1 record the base's packages in images/base/base.lock instead of checking them
#   LONGSHOT_BASE_STRICT=1 also fail when the base's rootfs digest differs from the lock's (same packages)
#   LONGSHOT_IMAGE_TAG     tag of the operator and agent images (default dev)
#   LONGSHOT_BUILD_CA_BUNDLE  CA bundle trusted by pip during builds (default $PIP_CERT, $SSL_CERT_FILE or
#                          /etc/ssl/certs/ca-certificates.crt), passed as the build secret `ca-bundle`
#   AGENT_BUILD_ARGS       extra `--build-arg K=V ...` for the agent image (e.g. INSTALL_CLAUDE_CODE=1)
#
# Progress goes to stderr, saying for each image whether it was built or found in the cache.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LONGSHOT_IMAGE_CACHE:-$HOME/.cache/longshot/images}"
TAG="${LONGSHOT_IMAGE_TAG:-dev}"
SUITE=bookworm
BASE_PACKAGES="python3,python3-venv,git,make,ca-certificates,openssh-client"
PAUSE_REF="registry.k8s.io/pause:3.10"
BASE_REF="localhost/longshot-base:${SUITE}"

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$CACHE"

mirror() {
  if [[ -n "${LONGSHOT_DEBIAN_MIRROR:-}" ]]; then echo "$LONGSHOT_DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | sed -n -e 's#^URIs:[[:space:]]*\(http[^ ]*/debian\)/*$#\1#p' -e 's#^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^ ]*/debian\)/*[[:space:]].*#\2#p' \
      | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

# sha256 of stdin, short
digest() { sha256sum | cut -c1-16; }

# hash of files: their paths and contents
# (operator/longshot_testing, the test clusters, is not part of the images: changing it rebuilds nothing)
hash_files() {
  (cd "$ROOT" && find "$@" -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -not -name '*.pyc' \
       -not -path 'operator/longshot_testing/*' \
     | LC_ALL=C sort | xargs sha256sum) | digest
}

ref_of() {
  case "$1" in
    base) echo "$BASE_REF" ;;
    pause) echo "$PAUSE_REF" ;;
    operator) echo "docker.io/library/longshot-operator:${TAG}" ;;
    agent) echo "docker.io/library/longshot-agent:${TAG}" ;;
    model-server) echo "docker.io/library/longshot-model-server:${TAG}" ;;
    *) die "unknown image $1 (base, pause, operator, agent, model-server)" ;;
  esac
}

key_of() {
  case "$1" in
    base) printf '%s %s %s v1' "$SUITE" "$BASE_PACKAGES" "$(mirror)" | digest ;;
    pause) hash_files hack/cluster/pause.c ;;
    operator|agent)
      { key_of base; echo "${AGENT_BUILD_ARGS:-}"; hash_files "images/$1" operator pyproject.toml README.md "requirements/$1.txt"; } | digest ;;
    model-server) { key_of base; hash_files images/model-server hack/model_server.py; } | digest ;;
  esac
}

archive_of() { echo "$CACHE/$1-$(key_of "$1").tar"; }

need_root() { [[ $(id -u) -eq 0 ]] || die "building images needs root (buildah, debootstrap)"; }

BUILDAH=(buildah --storage-driver "${LONGSHOT_BUILDAH_DRIVER:-overlay}")

save() {  # save <local image> <archive> <ref>
  local tmp="$2.tmp"
  rm -f "$tmp"
  "${BUILDAH[@]}" push --quiet "$1" "docker-archive:$tmp:$3" >/dev/null
  mv "$tmp" "$2"
}

BASE_LOCK="$ROOT/images/base/base.lock"

# rootfs <dir> <tar>: debootstrap the base into <dir>, normalise it, write it as a reproducible <tar> (sorted, one
# mtime, numeric owners) and print the lock of what it holds: the suite's release, every package's version, and the
# tar's sha256. The mirror serves one point release of the suite at a time (no snapshot archive is reachable here),
# so a rebuild after a point release gets newer packages: the lock's check says so instead of drifting silently.
rootfs() {
  local dir=$1 tar=$2 release epoch
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$dir" "$(mirror)" >"$dir.debootstrap.log" 2>&1 \
    || { tail -n 30 "$dir.debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  release=$(cat "$dir"/var/lib/apt/lists/*_dists_"${SUITE}"_{InRelease,Release} 2>/dev/null | sed -n -e 's/^Version: //p' -e 's/^Date: //p' | head -n2 | paste -sd' ')
  [[ -n "$release" ]] || release="unknown"
  epoch=$(date -d "$(echo "$release" | cut -d' ' -f2-)" +%s 2>/dev/null || echo 0)
  # smaller and reproducible: no apt lists, docs, caches, logs, backups of dpkg's and debconf's databases, or
  # dates of the build (the shadow file's last password change is the release's day)
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/* \
         "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir"/tmp/* "$dir"/var/cache/ldconfig/aux-cache \
         "$dir"/var/lib/dpkg/*-old "$dir"/var/cache/debconf/*-old "$dir"/etc/*- "$dir"/etc/machine-id \
         "$dir"/var/lib/dbus/machine-id
  [[ -f "$dir/etc/shadow" ]] && sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1$(( epoch / 86400 )):/" "$dir/etc/shadow"
  echo "deb $(mirror) $SUITE main" >"$dir/etc/apt/sources.list"
  find "$dir" -newermt "@$epoch" -exec touch --no-dereference --date="@$epoch" {} + 2>/dev/null || true
  tar -C "$dir" --sort=name --mtime="@$epoch" --clamp-mtime --owner=0 --group=0 --numeric-owner \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --format=posix -cf "$tar" .
  echo "# The debootstrap base of hack/images.sh: what its rootfs held when this was recorded. A build whose"
  echo "# packages differ fails (the mirror moved to another point release: see docs/install.md#reproducible-builds)."
  echo "suite: $SUITE"
  echo "release: $release"
  echo "include: $BASE_PACKAGES"
  echo "rootfs-sha256: $(sha256sum "$tar" | cut -d' ' -f1)"
  dpkg-query --admindir="$dir/var/lib/dpkg" -W -f '${Package}=${Version}\n' | LC_ALL=C sort | sed 's/^/package: /'
}

# check_base_lock <new lock>: compare with images/base/base.lock (record it when missing or LONGSHOT_BASE_RELOCK=1)
check_base_lock() {
  local new=$1
  if [[ ! -s "$BASE_LOCK" || "${LONGSHOT_BASE_RELOCK:-}" == 1 ]]; then
    mkdir -p "$(dirname "$BASE_LOCK")"
    cp "$new" "$BASE_LOCK"
    log "base: recorded $BASE_LOCK (commit it)"
    return
  fi
  if ! diff -u --label "$BASE_LOCK" --label "this build" <(grep -E '^(suite|include|package):' "$BASE_LOCK") \
       <(grep -E '^(suite|include|package):' "$new") >&2; then
    die "base: the rootfs differs from $BASE_LOCK in the packages above ($(sed -n 's/^release: //p' "$BASE_LOCK") -> $(sed -n 's/^release: //p' "$new")): LONGSHOT_BASE_RELOCK=1 hack/images.sh build base records the new list; commit it after the tiers pass on it"
  fi
  if [[ "$(sed -n 's/^rootfs-sha256: //p' "$BASE_LOCK")" != "$(sed -n 's/^rootfs-sha256: //p' "$new")" ]]; then
    log "base: the same packages, but the rootfs's sha256 differs from $BASE_LOCK ($(sed -n 's/^rootfs-sha256: //p' "$new")): a maintainer script wrote something of the build's"
    [[ "${LONGSHOT_BASE_STRICT:-}" == 1 ]] && die "base: LONGSHOT_BASE_STRICT=1: refusing a rootfs whose digest differs"
  fi
  return 0
}

build_base() {
  local out=$1 work
  work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-base.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  log "base: debootstrap $SUITE ($BASE_PACKAGES) from $(mirror) (a few minutes, once)"
  rootfs "$work/rootfs" "$work/rootfs.tar" >"$work/base.lock"
  check_base_lock "$work/base.lock"
  printf 'FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["/bin/bash"]\n' >"$work/Containerfile"
  "${BUILDAH[@]}" bud --quiet --isolation chroot -f "$work/Containerfile" -t "$BASE_REF" "$work" >/dev/null
  save "$BASE_REF" "$out" "$BASE_REF"
}

build_pause() {
  local out=$1 work
  work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-pause.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  log "pause: compiling a static pause binary"
  gcc -Os -static -o "$work/pause" "$ROOT/hack/cluster/pause.c"
  strip "$work/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Containerfile"
  "${BUILDAH[@]}" bud --quiet --isolation chroot -f "$work/Containerfile" -t "$PAUSE_REF" "$work" >/dev/null
  save "$PAUSE_REF" "$out" "$PAUSE_REF"
}

build_app() {  # operator | agent
  local name=$1 out=$2 work ref
  ref=$(ref_of "$name")
  ensure base >/dev/null
  # the base must be in buildah's storage (a warm cache may only have the archive)
  "${BUILDAH[@]}" inspect --type image "$BASE_REF" >/dev/null 2>&1 \
    || "${BUILDAH[@]}" pull --quiet "docker-archive:$(archive_of base)" >/dev/null
  work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-$name.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  # a small build context: the package sources and the Dockerfile, nothing else (.venv, .git, ...)
  mkdir -p "$work/images"
  cp -a "$ROOT/pyproject.toml" "$ROOT/README.md" "$work/"
  # the image's lock (requirements/NAME.txt: every package pinned with its hashes; make lock)
  mkdir -p "$work/requirements" && cp "$ROOT/requirements/$name.txt" "$work/requirements/"
  (cd "$ROOT" && tar --exclude='__pycache__' --exclude='*.egg-info' --exclude='*.pyc' \
     --exclude='operator/longshot_testing' -cf - operator images) | tar -C "$work" -xf -
  log "$name: buildah bud images/$name/Dockerfile (BASE_IMAGE=$BASE_REF)"
  local args=() secret=()
  # the machine's CA bundle, for pip behind a TLS-inspecting proxy (a build secret: not in the image)
  local ca="${LONGSHOT_BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
  [[ -s "$ca" ]] && secret=(--secret "id=ca-bundle,src=$ca")
  # shellcheck disable=SC2206
  [[ "$name" == agent && -n "${AGENT_BUILD_ARGS:-}" ]] && args=(${AGENT_BUILD_ARGS})
  "${BUILDAH[@]}" bud --quiet --layers --isolation chroot --network host \
    --build-arg "BASE_IMAGE=$BASE_REF" "${args[@]}" "${secret[@]}" \
    -f "$work/images/$name/Dockerfile" -t "$ref" "$work" >&2
  save "$ref" "$out" "$ref"
}

build_model_server() {  # hack/model_server.py with cyllama's prebuilt llama.cpp and the model, from PyPI
  local out=$1 work ref secret=()
  ref=$(ref_of model-server)
  ensure base >/dev/null
  "${BUILDAH[@]}" inspect --type image "$BASE_REF" >/dev/null 2>&1 \
    || "${BUILDAH[@]}" pull --quiet "docker-archive:$(archive_of base)" >/dev/null
  work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-model-server.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  mkdir -p "$work/images" "$work/hack"
  cp -a "$ROOT/images/model-server" "$work/images/"
  cp "$ROOT/hack/model_server.py" "$work/hack/"
  local ca="${LONGSHOT_BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
  [[ -s "$ca" ]] && secret=(--secret "id=ca-bundle,src=$ca")
  log "model-server: buildah bud images/model-server/Dockerfile (BASE_IMAGE=$BASE_REF)"
  "${BUILDAH[@]}" bud --quiet --layers --isolation chroot --network host \
    --build-arg "BASE_IMAGE=$BASE_REF" "${secret[@]}" \
    -f "$work/images/model-server/Dockerfile" -t "$ref" "$work" >&2
  save "$ref" "$out" "$ref"
}

ensure() {  # ensure <name>: print the archive, building it when missing
  local name=$1 out start
  out=$(archive_of "$name")
  if [[ -s "$out" ]]; then
    log "$name: cached ($(basename "$out"))"
  else
    need_root
    start=$(date +%s)
    # drop archives of older inputs of the same image
    rm -f "$CACHE/$name"-*.tar "$CACHE/$name"-*.tar.tmp
    case "$name" in
      base|pause) "build_$name" "$out" ;;
      model-server) build_model_server "$out" ;;
      *) build_app "$name" "$out" ;;
    esac
    log "$name: built $(basename "$out") ($(du -h "$out" | cut -f1)) in $(( $(date +%s) - start ))s"
  fi
  echo "$out"
}

ALL=(pause base operator agent)

cmd=${1:-build}
case "$cmd" in
  build)
    shift || true
    names=("$@"); [[ ${#names[@]} -eq 0 || "${names[0]}" == all ]] && names=("${ALL[@]}")
    for n in "${names[@]}"; do ensure "$n" >/dev/null; done ;;
  import)
    sock=${2:?usage: hack/images.sh import <containerd-socket> [names...]}
    shift 2
    names=("$@"); [[ ${#names[@]} -eq 0 ]] && names=(pause operator agent)
    for n in "${names[@]}"; do
      archive=$(ensure "$n")
      ref=$(ref_of "$n")
      # skip when containerd already has this exact archive (recorded by its key in a label)
      key=$(basename "$archive" .tar)
      if ctr --address "$sock" -n k8s.io images ls "name==$ref" 2>/dev/null | grep -q "longshot.dev/key=$key"; then
        log "$n: already imported into containerd ($ref)"
        continue
      fi
      start=$(date +%s)
      ctr --address "$sock" -n k8s.io images import --no-unpack=false "$archive" >/dev/null
      ctr --address "$sock" -n k8s.io images label "$ref" "longshot.dev/key=$key" >/dev/null
      log "$n: imported $ref into containerd in $(( $(date +%s) - start ))s"
    done ;;
  path) ensure "${2:?name}" ;;
  base-lock)  # debootstrap the base's rootfs (no image, no buildah) and check it against images/base/base.lock
    need_root
    work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    rootfs "$work/rootfs" "$work/rootfs.tar" >"$work/base.lock"
    check_base_lock "$work/base.lock"
    log "base: $(sed -n 's/^release: //p' "$work/base.lock"), $(grep -c '^package:' "$work/base.lock") packages, rootfs $(sed -n 's/^rootfs-sha256: //p' "$work/base.lock")" ;;
  ref) ref_of "${2:?name}" ;;
  key) key_of "${2:?name}" ;;
  *) die "unknown command $cmd (build, import, path, ref)" ;;
esac
