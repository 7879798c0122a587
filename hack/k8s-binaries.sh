#!/usr/bin/env bash
# Provide pinned Kubernetes binaries for the integration and e2e tiers.
#
#   hack/k8s-binaries.sh            ensure every binary is present AT ITS PINNED VERSION, print the bin directory
#   hack/k8s-binaries.sh --check    exit 0 when every cached binary is there at its pinned version, 1 otherwise
#                                   (no work, no lock; says on stderr what is missing or wrong)
#
# Pins: Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl),
# etcd $ETCD_VERSION, helm $HELM_VERSION, kwok $KWOK_VERSION. Every run checks the version each cached binary
# reports (`--version` and friends); a binary at another version is moved aside to bin/.rejected/ and provided
# again, so the cache never serves a version it does not pin.
#
# Order of sources, per binary ($K8S_BINARIES_SOURCES, default "assets download build"):
#   assets    $KUBEBUILDER_ASSETS (controller-runtime's envtest layout), when its binary has the pinned version;
#   download  the official release, when the release host answers; the checksum the project publishes is
#             verified before anything is installed (dl.k8s.io `<bin>.sha256`, etcd's `SHA256SUMS`, helm's
#             `.sha256sum`); kwok publishes no checksum, so its download is accepted on its version alone;
#   build     the Go module proxy with this machine's Go toolchain. Each tool is built in a wrapper module whose
#             go.mod is rewritten on EVERY run (so a pin changed here, or a go.mod left by an older run, can
#             never leak another version in) and whose resolved version is checked with `go list -m` before
#             building. k8s.io/kubernetes needs its go.mod's `./staging` replaces turned into the published
#             k8s.io/* v0.X.Y modules.
#
# Safe to run twice at once: a lock (flock on $CACHE/.lock) serialises runs; the second finds the first's
# result and only checks it. Atomic: downloads and builds land in $BIN/.tmp.* first, are checked (checksum,
# version), and only then renamed into place, so a partial file is never executable under its final name.
#
# Extra binaries: K8S_BINARIES_EXTRA="kubeadm kube-proxy" provides those too (hack/kind-node-image.sh needs them).
#
# Overrides (tests use them): LONGSHOT_CACHE (the cache directory, default ~/.cache/longshot/k8s-<version>),
# K8S_BINARIES_SOURCES, and the release base URLs K8S_RELEASE_URL, ETCD_RELEASE_URL, HELM_RELEASE_URL,
# KWOK_RELEASE_URL.
#
# Progress goes to stderr; the only stdout line is the bin directory, so callers can do
#   BIN=$(hack/k8s-binaries.sh)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
K8S_MINOR=${K8S_VERSION#v1.}; K8S_MINOR=${K8S_MINOR%%.*}
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"

K8S_RELEASE_URL="${K8S_RELEASE_URL:-https://dl.k8s.io/release}"
ETCD_RELEASE_URL="${ETCD_RELEASE_URL:-https://github.com/etcd-io/etcd/releases/download}"
HELM_RELEASE_URL="${HELM_RELEASE_URL:-https://get.helm.sh}"
KWOK_RELEASE_URL="${KWOK_RELEASE_URL:-https://github.com/kubernetes-sigs/kwok/releases/download}"
SOURCES="${K8S_BINARIES_SOURCES:-assets download build}"

CACHE="${LONGSHOT_CACHE:-$HOME/.cache/longshot/k8s-${K8S_VERSION}}"
BIN="$CACHE/bin"
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# more Kubernetes binaries, e.g. K8S_BINARIES_EXTRA="kubeadm kube-proxy" for the kind node image
read -r -a EXTRA_BINS <<<"${K8S_BINARIES_EXTRA:-}"
for b in "${EXTRA_BINS[@]}"; do
  case "$b" in
    kubeadm|kube-proxy) KUBE_BINS+=("$b") ;;
    *) echo "[k8s-binaries] K8S_BINARIES_EXTRA: unknown binary $b (kubeadm, kube-proxy)" >&2; exit 2 ;;
  esac
done
ALL_BINS=(etcd "${KUBE_BINS[@]}" helm kwok)

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }

# pinned <name>: the version <name> must report
pinned() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    *) echo "$K8S_VERSION" ;;
  esac
}

# reported <path> <name>: the version the binary at <path> reports, "v"-prefixed ("" when it cannot tell)
reported() {
  local path=$1 name=$2 out
  case "$name" in
    etcd) out=$(timeout 20 "$path" --version 2>/dev/null | sed -n 's/^etcd Version: *\([0-9][^ ]*\).*/v\1/p' || true) ;;
    kubectl) out=$(timeout 20 "$path" version --client 2>/dev/null | sed -n 's/^Client Version: *\(v[^ ]*\).*/\1/p' || true) ;;
    helm) out=$(timeout 20 "$path" version --template '{{.Version}}' 2>/dev/null || true) ;;
    kwok) out=$(timeout 20 "$path" --version 2>/dev/null | grep -o 'v[0-9][0-9.]*[0-9]' | head -n1 || true) ;;
    kubeadm) out=$(timeout 20 "$path" version -o short 2>/dev/null || true) ;;
    *) out=$(timeout 20 "$path" --version 2>/dev/null | sed -n 's/^Kubernetes *\(v[^ ]*\).*/\1/p' || true) ;;
  esac
  printf '%s' "${out%%$'\n'*}"
}

# good <path> <name>: the binary exists, is executable and reports its pinned version
good() {
  [[ -x "$1" ]] && [[ "$(reported "$1" "$2")" == "$(pinned "$2")" ]]
}

# problems: one line per cached binary that is missing or at the wrong version
problems() {
  local b v
  for b in "${ALL_BINS[@]}"; do
    if [[ ! -e "$BIN/$b" && ! -L "$BIN/$b" ]]; then
      echo "$b: missing"
    elif [[ ! -x "$BIN/$b" ]]; then
      echo "$b: not executable (or a dangling link)"
    else
      v=$(reported "$BIN/$b" "$b")
      [[ "$v" == "$(pinned "$b")" ]] || echo "$b: reports ${v:-no version}, pinned $(pinned "$b")"
    fi
  done
}

missing() { problems | cut -d: -f1 | tr '\n' ' ' | sed 's/ *$//'; }

if [[ "${1:-}" == "--check" ]]; then
  [[ -d "$BIN" ]] || { log "no cache at $BIN"; exit 1; }
  out=$(problems)
  [[ -z "$out" ]] && exit 0
  printf '%s\n' "$out" | sed 's/^/[k8s-binaries] /' >&2
  exit 1
fi

mkdir -p "$BIN"
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another run holds $CACHE/.lock; waiting for it"
  flock 9
fi
start=$(date +%s)
# holding the lock, no other run is under way: what an interrupted run left in $BIN/.tmp.* is garbage
rm -rf "$BIN"/.tmp.*
TMP=$(mktemp -d "$BIN/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# install <file> <name>: check <file>'s version, then rename it into $BIN/<name> (atomic on one filesystem)
install_checked() {
  local file=$1 name=$2 v
  chmod 0755 "$file"
  v=$(reported "$file" "$name")
  if [[ "$v" != "$(pinned "$name")" ]]; then
    log "$name: the new binary reports ${v:-no version}, pinned $(pinned "$name"); not installed"
    rm -f "$file"
    return 1
  fi
  mv -f "$file" "$BIN/$name"
}

# Reject what the cache holds at the wrong version: moved aside, never served again.
while IFS= read -r line; do
  [[ -n "$line" ]] || continue
  b=${line%%:*}
  if [[ -e "$BIN/$b" || -L "$BIN/$b" ]]; then
    mkdir -p "$BIN/.rejected"
    mv -f "$BIN/$b" "$BIN/.rejected/$b.$(date +%s).$$"
    log "rejected the cached $line (moved to $BIN/.rejected/)"
  fi
done < <(problems | grep -v ': missing$' || true)

todo=$(missing)
if [[ -z "$todo" ]]; then
  log "all binaries cached in $BIN at their pinned versions (nothing to do)"
  echo "$BIN"
  exit 0
fi
log "to provide: $todo"

# 1. KUBEBUILDER_ASSETS
if [[ " $SOURCES " == *" assets "* && -n "${KUBEBUILDER_ASSETS:-}" && -d "${KUBEBUILDER_ASSETS}" ]]; then
  for b in $todo; do
    src="$KUBEBUILDER_ASSETS/$b"
    [[ -x "$src" ]] || continue
    if good "$src" "$b"; then
      ln -s "$src" "$TMP/$b" && mv -f "$TMP/$b" "$BIN/$b"
      log "$b: linked from KUBEBUILDER_ASSETS ($KUBEBUILDER_ASSETS)"
    else
      log "$b: KUBEBUILDER_ASSETS has $(reported "$src" "$b" || true), pinned $(pinned "$b"); not used"
    fi
  done
  todo=$(missing)
fi

# 2. official downloads, only when the release host answers
fetch() { curl -fsSL --retry 2 -m 600 -o "$2" "$1"; }

# sha256_of <file>
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify <file> <expected sha256> <what>
verify() {
  local got
  got=$(sha256_of "$1")
  if [[ -z "$2" || "$got" != "$2" ]]; then
    log "$3: sha256 ${got} does not match the published ${2:-(none found)}; refused"
    return 1
  fi
}

download() {
  local name=$1 d="$TMP/dl-$1" sum
  rm -rf "$d"; mkdir -p "$d"
  case "$name" in
    etcd)
      local tgz="etcd-${ETCD_VERSION}-linux-amd64.tar.gz"
      fetch "$ETCD_RELEASE_URL/${ETCD_VERSION}/$tgz" "$d/$tgz" || return 1
      fetch "$ETCD_RELEASE_URL/${ETCD_VERSION}/SHA256SUMS" "$d/SHA256SUMS" || return 1
      sum=$(awk -v f="$tgz" '$2 == f || $2 == "*"f {print $1}' "$d/SHA256SUMS")
      verify "$d/$tgz" "$sum" "$tgz" || return 1
      tar -xzf "$d/$tgz" -C "$d" --strip-components=1 "etcd-${ETCD_VERSION}-linux-amd64/etcd" || return 1
      mv "$d/etcd" "$TMP/etcd" ;;
    helm)
      local tgz="helm-${HELM_VERSION}-linux-amd64.tar.gz"
      fetch "$HELM_RELEASE_URL/$tgz" "$d/$tgz" || return 1
      fetch "$HELM_RELEASE_URL/$tgz.sha256sum" "$d/sum" || return 1
      sum=$(awk '{print $1; exit}' "$d/sum")
      verify "$d/$tgz" "$sum" "$tgz" || return 1
      tar -xzf "$d/$tgz" -C "$d" --strip-components=1 linux-amd64/helm || return 1
      mv "$d/helm" "$TMP/helm" ;;
    kwok)
      fetch "$KWOK_RELEASE_URL/${KWOK_VERSION}/kwok-linux-amd64" "$TMP/kwok" || return 1 ;;
    *)
      fetch "$K8S_RELEASE_URL/${K8S_VERSION}/bin/linux/amd64/$name" "$d/$name" || return 1
      fetch "$K8S_RELEASE_URL/${K8S_VERSION}/bin/linux/amd64/$name.sha256" "$d/sum" || return 1
      sum=$(awk '{print $1; exit}' "$d/sum")
      verify "$d/$name" "$sum" "$name" || return 1
      mv "$d/$name" "$TMP/$name" ;;
  esac
  rm -rf "$d"
  install_checked "$TMP/$name" "$name"
}

if [[ -n "$todo" && " $SOURCES " == *" download "* ]]; then
  if curl -fsS -m 5 -o /dev/null "$K8S_RELEASE_URL/stable.txt" 2>/dev/null; then
    for b in $todo; do
      log "$b: downloading the official release $(pinned "$b")"
      download "$b" || log "$b: download failed or was refused; trying the next source"
    done
    todo=$(missing)
  else
    log "$K8S_RELEASE_URL does not answer: no downloads"
  fi
fi

# 3. build from the Go module proxy
if [[ -n "$todo" && " $SOURCES " == *" build "* ]]; then
  command -v go >/dev/null || { log "no Go toolchain and no download: cannot provide $todo"; exit 1; }
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  WORK="$CACHE/src"
  mkdir -p "$WORK"

  # wrapper <dir> <module> <version> [extra go.mod lines...]: (re)write the wrapper module requiring exactly
  # <module>@<version>, and fail unless `go list -m` resolves it to that version.
  wrapper() {
    local dir=$1 mod=$2 ver=$3 got; shift 3
    mkdir -p "$dir"
    {
      echo "module longshot.dev/hack/$(basename "$dir")"
      echo
      echo "go 1.24"
      printf '%s\n' "$@"
    } >"$dir/go.mod.new"
    mv -f "$dir/go.mod.new" "$dir/go.mod"
    (cd "$dir" && go get "$mod@$ver" >&2)
    got=$(cd "$dir" && go list -m -f '{{.Version}}' "$mod")
    if [[ "$got" != "$ver" ]]; then
      log "$dir: go.mod resolves $mod to ${got:-nothing}, pinned $ver"
      return 1
    fi
  }

  needs_kube=false
  for b in "${KUBE_BINS[@]}"; do [[ " $todo " == *" $b "* ]] && needs_kube=true; done
  if $needs_kube; then
    log "building Kubernetes ${K8S_VERSION} from the Go module proxy (several minutes on a cold cache)"
    staging=v0.${K8S_VERSION#v1.}
    gomod=$(cd /tmp && GOFLAGS= go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    # each `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.34.N`
    replaces=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod" | sort -u \
      | awk -v v="$staging" '{printf "replace %s => %s %s\n", $1, $1, v}')
    mapfile -t replace_lines <<<"$replaces"
    wrapper "$WORK/kubernetes" k8s.io/kubernetes "$K8S_VERSION" "${replace_lines[@]}"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${K8S_MINOR}"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    pkgs=()
    for b in "${KUBE_BINS[@]}"; do
      [[ " $todo " == *" $b "* ]] && pkgs+=("k8s.io/kubernetes/cmd/$b")
    done
    mkdir -p "$TMP/kube"
    (cd "$WORK/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$TMP/kube/" "${pkgs[@]}" >&2)
    for p in "${pkgs[@]}"; do
      b=${p##*/}
      install_checked "$TMP/kube/$b" "$b" && log "$b: built"
    done
  fi

  if [[ " $todo " == *" etcd "* ]]; then
    log "building etcd ${ETCD_VERSION}"
    wrapper "$WORK/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
    (cd "$WORK/etcd" && go build -trimpath -ldflags "-s -w" -o "$TMP/etcd" go.etcd.io/etcd/server/v3 >&2)
    install_checked "$TMP/etcd" etcd || true
  fi
  if [[ " $todo " == *" helm "* ]]; then
    log "building helm ${HELM_VERSION}"
    wrapper "$WORK/helm" helm.sh/helm/v3 "$HELM_VERSION"
    (cd "$WORK/helm" && go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${K8S_MINOR} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${K8S_MINOR}" \
      -o "$TMP/helm" helm.sh/helm/v3/cmd/helm >&2)
    install_checked "$TMP/helm" helm || true
  fi
  if [[ " $todo " == *" kwok "* ]]; then
    log "building kwok ${KWOK_VERSION}"
    wrapper "$WORK/kwok" sigs.k8s.io/kwok "$KWOK_VERSION"
    (cd "$WORK/kwok" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
      -o "$TMP/kwok" sigs.k8s.io/kwok/cmd/kwok >&2)
    install_checked "$TMP/kwok" kwok || true
  fi
fi

out=$(problems)
if [[ -n "$out" ]]; then
  printf '%s\n' "$out" | sed 's/^/[k8s-binaries] could not provide /' >&2
  log "sources tried: $SOURCES (set KUBEBUILDER_ASSETS, or make dl.k8s.io or the Go module proxy reachable)"
  exit 1
fi
log "all binaries ready in $BIN after $(( $(date +%s) - start ))s"
echo "$BIN"
