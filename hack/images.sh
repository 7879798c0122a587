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
#
# Environment:
#   LONGSHOT_IMAGE_CACHE   cache directory (default ~/.cache/longshot/images)
#   LONGSHOT_DEBIAN_MIRROR Debian mirror for debootstrap (default: the first one in /etc/apt/sources.list*)
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
      { key_of base; echo "${AGENT_BUILD_ARGS:-}"; hash_files "images/$1" operator pyproject.toml README.md; } | digest ;;
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

build_base() {
  local out=$1 work
  work=$(mktemp -d "${TMPDIR:-/tmp}/longshot-base.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  log "base: debootstrap $SUITE ($BASE_PACKAGES) from $(mirror) (a few minutes, once)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  # smaller and reproducible enough: no apt lists, docs or caches in the image
  rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/*.bin "$work/rootfs"/var/cache/apt/archives/*.deb \
         "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/locale/* \
         "$work/rootfs"/var/log/*.log "$work/rootfs"/tmp/*
  echo "deb $(mirror) $SUITE main" >"$work/rootfs/etc/apt/sources.list"
  tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
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
  ref) ref_of "${2:?name}" ;;
  key) key_of "${2:?name}" ;;
  *) die "unknown command $cmd (build, import, path, ref)" ;;
esac
