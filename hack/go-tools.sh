#!/usr/bin/env bash
# Provide pinned Go tools the tests and the kind path use, built from the Go module proxy with this machine's
# Go toolchain (no prebuilt downloads), into a cache:
#
#   hack/go-tools.sh TOOL           ensure TOOL is built at its pin, print its path on stdout
#   hack/go-tools.sh --check TOOL   exit 0 when the cached TOOL is there at its pin, 1 otherwise (no work)
#
# Tools and pins:
#   kind              sigs.k8s.io/kind@v0.30.0                 (`go install`; the kind path of make e2e/demo)
#   kstatus           hack/kstatus, on sigs.k8s.io/cli-utils v0.37.2 (its go.mod/go.sum pin every module)
#   dashboard-linter  github.com/grafana/dashboard-linter@v0.1.1
#   kube-linter       golang.stackrox.io/kube-linter/cmd/kube-linter@v0.7.6
#   helm-docs         github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2 (the chart README: make chart-docs)
#   coredns           github.com/coredns/coredns@v1.12.1        (the kind node image's cluster DNS; kubeadm's pin)
#   skaffold          github.com/GoogleContainerTools/skaffold/v2@v2.16.1, through the wrapper module hack/skaffold
#                     (skaffold's go.mod has replace directives, which `go install pkg@version` refuses; the wrapper
#                     carries them, and its go.sum pins every module). Cold: see docs/install.md#skaffold-dev-on-kind
#   jaeger            github.com/jaegertracing/jaeger/cmd/jaeger, v1.76.0 (Jaeger v2: an OpenTelemetry collector
#                     with in-memory storage and a query API; the trace collector of the tracing tests). Its go.mod
#                     has replace directives, so `go install pkg@version` refuses it: hack/jaeger is a module that
#                     requires it as a `tool`, and its go.mod/go.sum pin every module
#   syft              github.com/anchore/syft/cmd/syft@v1.57.1  (make release: an SPDX and a CycloneDX SBOM per image)
#   cosign            github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5  (make release/push: signs each image by
#                     digest and attaches its SBOM as an attestation, with a local key, no transparency log)
#   kube-router       github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v2.1.0 (the NetworkPolicy engine of
#                     the kind tier, firewall mode only: iptables and ipset; tests/e2e/kind.py). v2.1.0 is the only
#                     version the Go module proxy serves here (v2.2.1, v2.4.1, v2.5.0: 403 "not available"); its
#                     version string is set with -X as kube-router's Makefile does
#
# The same guarantees as hack/k8s-binaries.sh: a lock (flock on $TOOLS/.lock) so two runs never race; the
# cached binary's version is checked on every run (`go version -m`: the module and version it was built from;
# kstatus: the hash of its sources and the cli-utils version it reports) and rebuilt on mismatch; builds go
# to $TOOLS/bin/.tmp.* and are renamed into place only after that check.
#
# Cache: $LONGSHOT_TOOLS (default ~/.cache/longshot/tools). Progress on stderr; stdout is the binary's path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="${LONGSHOT_TOOLS:-$HOME/.cache/longshot/tools}"
BIN="$TOOLS/bin"

log() { printf '[go-tools] %s\n' "$*" >&2; }

# spec TOOL: "<module> <version> <package> [<version variable>]" of a `go install` tool (the variable, a path in
# the module, is set to the version with -X), or "local <dir>" for a module in this repo
spec() {
  case "$1" in
    kind) echo "sigs.k8s.io/kind v0.30.0 sigs.k8s.io/kind" ;;
    dashboard-linter) echo "github.com/grafana/dashboard-linter v0.1.1 github.com/grafana/dashboard-linter" ;;
    kube-linter) echo "golang.stackrox.io/kube-linter v0.7.6 golang.stackrox.io/kube-linter/cmd/kube-linter" ;;
    helm-docs) echo "github.com/norwoodj/helm-docs v1.14.2 github.com/norwoodj/helm-docs/cmd/helm-docs" ;;
    coredns) echo "github.com/coredns/coredns v1.12.1 github.com/coredns/coredns" ;;
    kstatus) echo "local hack/kstatus" ;;
    skaffold) echo "wrapper hack/skaffold github.com/GoogleContainerTools/skaffold/v2 v2.16.1 github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold" ;;
    syft) echo "github.com/anchore/syft v1.57.1 github.com/anchore/syft/cmd/syft" ;;
    cosign) echo "github.com/sigstore/cosign/v2 v2.6.5 github.com/sigstore/cosign/v2/cmd/cosign" ;;
    kube-router) echo "github.com/cloudnativelabs/kube-router/v2 v2.1.0 github.com/cloudnativelabs/kube-router/v2/cmd/kube-router pkg/version.Version" ;;
    jaeger) echo "tool hack/jaeger github.com/jaegertracing/jaeger v1.76.0 github.com/jaegertracing/jaeger/cmd/jaeger" ;;
    *) return 1 ;;
  esac
}

source_hash() {
  (cd "$ROOT/$1" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
}

# want TOOL: what the check must see; have PATH TOOL: what the binary at PATH shows
want() {
  local s; s=$(spec "$1")
  if [[ $s == local* ]]; then
    echo "kstatus $(source_hash "${s#local }") cli-utils v0.37.2"
  elif [[ $s == wrapper* || $s == tool* ]]; then
    read -r _ _ mod ver _ <<<"$s"; echo "$mod $ver"
  else
    read -r mod ver _ _ <<<"$s"; echo "$mod $ver"
  fi
}
have() {
  local path=$1 tool=$2
  [[ -x "$path" ]] || return 0
  if [[ $(spec "$tool") == local* ]]; then
    timeout 20 "$path" -version 2>/dev/null || true
  elif [[ $(spec "$tool") == tool* ]]; then  # built in the wrapper module: the tool's module is the main one
    local s; s=$(spec "$tool"); read -r _ _ mod _ <<<"$s"
    go version -m "$path" 2>/dev/null | awk -v m="$mod" '($1 == "mod" || $1 == "dep") && $2 == m {print $2, $3; exit}' || true
  else  # a wrapper's build records the tool's module as its "mod" too (the module of the main package)
    go version -m "$path" 2>/dev/null | awk '$1 == "mod" {print $2, $3; exit}' || true
  fi
}

[[ $# -ge 1 ]] || { echo "usage: $0 [--check] kind|kstatus|dashboard-linter|kube-linter|helm-docs|coredns|skaffold|jaeger|syft|cosign|kube-router" >&2; exit 2; }
check=false
if [[ "$1" == "--check" ]]; then check=true; shift; fi
tool=${1:?tool name}
spec "$tool" >/dev/null || { log "unknown tool $tool (kind, kstatus, dashboard-linter, kube-linter, helm-docs, coredns, skaffold, jaeger, syft, cosign, kube-router)"; exit 2; }
command -v go >/dev/null || { log "no Go toolchain: cannot build $tool (Go >= 1.24 is a requirement)"; exit 1; }

target="$BIN/$tool"
if $check; then
  [[ "$(have "$target" "$tool")" == "$(want "$tool")" ]]
  exit
fi

mkdir -p "$BIN"
exec 9>"$TOOLS/.lock"
flock -n 9 || { log "another run holds $TOOLS/.lock; waiting for it"; flock 9; }

got=$(have "$target" "$tool")
if [[ "$got" == "$(want "$tool")" ]]; then
  echo "$target"
  exit 0
fi
[[ -e "$target" ]] && log "$tool: the cached binary is '${got:-unreadable}', want '$(want "$tool")'; rebuilding"

rm -rf "$BIN"/.tmp.*
TMP=$(mktemp -d "$BIN/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local
start=$(date +%s)
s=$(spec "$tool")
if [[ $s == local* ]]; then
  dir="$ROOT/${s#local }"
  log "$tool: building $dir"
  (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X main.SourceHash=$(source_hash "${s#local }")" -o "$TMP/$tool" . >&2)
elif [[ $s == wrapper* ]]; then
  read -r _ dir mod ver pkg <<<"$s"
  log "$tool: go build $pkg ($mod $ver) in $dir"
  # -X: the version `skaffold version` prints (skaffold's Makefile sets it the same way)
  if ! (cd "$ROOT/$dir" && GOFLAGS=-mod=readonly go build -trimpath \
        -ldflags "-s -w -X $mod/pkg/skaffold/version.version=$ver" -o "$TMP/$tool" "$pkg" >&2); then
    log "$tool: could not build $pkg $ver from the Go module proxy (see the go error above)"
    exit 1
  fi
elif [[ $s == tool* ]]; then
  read -r _ dir mod ver pkg <<<"$s"
  log "$tool: building $pkg ($mod $ver, pinned by $dir/go.mod and go.sum)"
  if ! (cd "$ROOT/$dir" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$TMP/$tool" "$pkg" >&2); then
    log "$tool: could not build $pkg from the Go module proxy (see the go error above)"
    exit 1
  fi
else
  read -r mod ver pkg xvar <<<"$s"
  ldflags="-s -w${xvar:+ -X $mod/$xvar=$ver}"
  log "$tool: go install $pkg@$ver"
  if ! (cd "$TMP" && GOFLAGS= GOBIN="$TMP" go install -trimpath -ldflags "$ldflags" "$pkg@$ver" >&2); then
    log "$tool: could not build $pkg@$ver from the Go module proxy (see the go error above)"
    exit 1
  fi
  [[ -x "$TMP/$tool" ]] || mv "$TMP/$(basename "$pkg")" "$TMP/$tool"
fi
got=$(have "$TMP/$tool" "$tool")
if [[ "$got" != "$(want "$tool")" ]]; then
  log "$tool: the new binary is '${got}', want '$(want "$tool")'; not installed"
  exit 1
fi
mv -f "$TMP/$tool" "$target"
log "$tool: built in $(( $(date +%s) - start ))s"
echo "$target"
