#!/usr/bin/env bash
# Provide pinned Kubernetes binaries for the integration and e2e tiers.
#
#   hack/k8s-binaries.sh            ensure every binary is present, print the bin directory on stdout
#   hack/k8s-binaries.sh --check    exit 0 when every binary is already there, 1 otherwise (no work)
#
# Order of sources, per binary:
#   1. $KUBEBUILDER_ASSETS (controller-runtime's envtest layout: etcd, kube-apiserver, kubectl);
#   2. the cache, $LONGSHOT_CACHE (default ~/.cache/longshot/k8s-<version>);
#   3. the official release download, when dl.k8s.io (and friends) answer;
#   4. a build from the Go module proxy with this machine's Go toolchain. k8s.io/kubernetes is built
#      through a wrapper module whose go.mod replaces each k8s.io/* staging module (which the
#      kubernetes go.mod points at ./staging/...) with its published v0.X.Y version.
#
# Idempotent: a second run finds everything in the cache and only says so.
# Progress goes to stderr; the only stdout line is the bin directory, so callers can do
#   BIN=$(hack/k8s-binaries.sh)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
K8S_MINOR=${K8S_VERSION#v1.}; K8S_MINOR=${K8S_MINOR%%.*}
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"

CACHE="${LONGSHOT_CACHE:-$HOME/.cache/longshot/k8s-${K8S_VERSION}}"
BIN="$CACHE/bin"
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
ALL_BINS=(etcd "${KUBE_BINS[@]}" helm kwok)

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }

have() { [[ -x "$BIN/$1" ]]; }

missing() {
  local b out=()
  for b in "${ALL_BINS[@]}"; do have "$b" || out+=("$b"); done
  echo "${out[@]:-}"
}

if [[ "${1:-}" == "--check" ]]; then
  [[ -z "$(missing)" ]] && exit 0 || exit 1
fi

mkdir -p "$BIN"
start=$(date +%s)

# 1. KUBEBUILDER_ASSETS
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -d "${KUBEBUILDER_ASSETS}" ]]; then
  for b in "${ALL_BINS[@]}"; do
    if ! have "$b" && [[ -x "$KUBEBUILDER_ASSETS/$b" ]]; then
      ln -sf "$KUBEBUILDER_ASSETS/$b" "$BIN/$b"
      log "$b: linked from KUBEBUILDER_ASSETS ($KUBEBUILDER_ASSETS)"
    fi
  done
fi

todo=$(missing)
if [[ -z "$todo" ]]; then
  log "all binaries cached in $BIN (nothing to do)"
  echo "$BIN"
  exit 0
fi
log "missing: $todo"

# 3. official downloads, only when the release hosts answer
online=false
if curl -fsS -m 5 -o /dev/null "https://dl.k8s.io/release/stable.txt" 2>/dev/null; then
  online=true
fi

download() {
  local name=$1 tmp
  tmp=$(mktemp -d)
  case "$name" in
    etcd)
      curl -fsSL "https://github.com/etcd-io/etcd/releases/download/${ETCD_VERSION}/etcd-${ETCD_VERSION}-linux-amd64.tar.gz" \
        | tar -xz -C "$tmp" --strip-components=1
      install -m 0755 "$tmp/etcd" "$BIN/etcd" ;;
    helm)
      curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz" | tar -xz -C "$tmp" --strip-components=1
      install -m 0755 "$tmp/helm" "$BIN/helm" ;;
    kwok)
      curl -fsSL -o "$BIN/kwok" "https://github.com/kubernetes-sigs/kwok/releases/download/${KWOK_VERSION}/kwok-linux-amd64"
      chmod 0755 "$BIN/kwok" ;;
    *)
      curl -fsSL -o "$BIN/$name" "https://dl.k8s.io/release/${K8S_VERSION}/bin/linux/amd64/$name"
      chmod 0755 "$BIN/$name" ;;
  esac
  rm -rf "$tmp"
}

if $online; then
  for b in $todo; do
    log "$b: downloading the official release"
    download "$b" || log "$b: download failed, will build it"
  done
  todo=$(missing)
fi

# 4. build from the Go module proxy
if [[ -n "$todo" ]]; then
  command -v go >/dev/null || { log "no Go toolchain and no download: cannot provide $todo"; exit 1; }
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  WORK="$CACHE/src"
  mkdir -p "$WORK"

  # wrapper <dir> <module> <version> [extra go.mod lines...]: a module that requires <module>@<version>
  wrapper() {
    local dir=$1 mod=$2 ver=$3; shift 3
    mkdir -p "$dir"
    if [[ ! -f "$dir/go.mod" ]]; then
      {
        echo "module longshot.dev/hack/$(basename "$dir")"
        echo
        echo "go 1.24"
        printf '%s\n' "$@"
      } >"$dir/go.mod"
      (cd "$dir" && go get "$mod@$ver" >&2)
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
    minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    pkgs=()
    for b in "${KUBE_BINS[@]}"; do
      [[ " $todo " == *" $b "* ]] && pkgs+=("k8s.io/kubernetes/cmd/$b")
    done
    (cd "$WORK/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}" >&2)
    log "built ${pkgs[*]}"
  fi

  if [[ " $todo " == *" etcd "* ]]; then
    log "building etcd ${ETCD_VERSION}"
    wrapper "$WORK/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
    (cd "$WORK/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2)
  fi
  if [[ " $todo " == *" helm "* ]]; then
    log "building helm ${HELM_VERSION}"
    wrapper "$WORK/helm" helm.sh/helm/v3 "$HELM_VERSION"
    (cd "$WORK/helm" && go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${K8S_MINOR} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${K8S_MINOR}" \
      -o "$BIN/helm" helm.sh/helm/v3/cmd/helm >&2)
  fi
  if [[ " $todo " == *" kwok "* ]]; then
    log "building kwok ${KWOK_VERSION}"
    wrapper "$WORK/kwok" sigs.k8s.io/kwok "$KWOK_VERSION"
    (cd "$WORK/kwok" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" \
      -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok >&2)
  fi
fi

todo=$(missing)
if [[ -n "$todo" ]]; then
  log "could not provide: $todo"
  exit 1
fi
log "all binaries ready in $BIN after $(( $(date +%s) - start ))s"
echo "$BIN"
