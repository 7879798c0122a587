#!/usr/bin/env bash
# Install the Debian packages the local cluster (hack/local-cluster.sh) and the image builds
# (hack/images.sh) need: containerd, runc, the CNI plugins, buildah, debootstrap, iptables, dnsmasq
# (the cluster's small DNS server) and friends, and prometheus (the e2e test that scrapes the operator runs
# the binary itself, with its own config; the Debian service it installs is not used) and tinyproxy (the
# egress-proxy tests run it on loopback with their own config; its Debian service is not used either), skopeo
# (make release/push copy images with it) and docker-registry (Distribution 2.8: the registry e2e test runs it on
# loopback with its own config; its Debian service is not used).
#
#   hack/cluster/install-deps.sh           install what is missing (idempotent; runs apt-get update once)
#   hack/cluster/install-deps.sh --check   exit 0 when everything is installed, 1 otherwise (no work)
#   hack/cluster/install-deps.sh PKG...    the same for these packages only (make test: prometheus, for promtool)
#
# Needs root (or passwordless sudo). CI calls this once before `make e2e` / `make demo`.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins buildah debootstrap iptables iproute2 conntrack
          socat ethtool dnsmasq-base git openssl make gcc libc6-dev prometheus tinyproxy skopeo docker-registry)
if [[ $# -gt 0 && "$1" != "--check" ]]; then
  PACKAGES=("$@")
  set --
fi

log() { printf '[install-deps] %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  [[ ${#missing[@]} -eq 0 ]] && exit 0
  log "missing: ${missing[*]}"
  exit 1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all packages installed (nothing to do)"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { log "need root to install ${missing[*]}"; exit 1; }
  SUDO="sudo"
fi
log "installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# the Debian package starts containerd as a system service; the local cluster runs its own instance
# (own socket, config and state) and does not need it, so leave the system one as the admin set it.
log "installed ${missing[*]}"
