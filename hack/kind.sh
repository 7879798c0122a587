#!/usr/bin/env bash
# The kind path of `make e2e-kind` and `LONGSHOT_CLUSTER=kind make demo`, with nothing pulled from a registry:
#
#   hack/kind.sh docker-up        start a Docker engine when none answers (installs Debian's docker.io; root), and
#                                 install Debian's ipset when missing (kube-router on the three-node cluster)
#   hack/kind.sh kind             print the path of kind (built from the Go module proxy by hack/go-tools.sh)
#   hack/kind.sh node-image       print the reference of the node image (built by hack/kind-node-image.sh)
#   hack/kind.sh up [NAME]        a one-node kind cluster NAME (default longshot) from that image, with
#                                 hack/kind/cluster.yaml, and Longshot's images (hack/images.sh) loaded with
#                                 `kind load image-archive`; prints its kubeconfig
#   hack/kind.sh down [NAME]      delete the cluster
#
# Docker and the local cluster side by side: dockerd here runs its own containerd (/var/run/docker/containerd,
# root /var/lib/docker/containerd), apart from the local cluster's (socket, state and root under
# /var/tmp/longshot-cluster); and docker-up turns IP forwarding on first, because a dockerd that turns it on
# itself also sets the FORWARD chain's policy to DROP, which would cut the local cluster's bridged Pod traffic
# (br_netfilter is loaded). Where root lacks CAP_SYS_RESOURCE (these machines), dockerd gets a runc wrapper as
# its default runtime (hack/kind/runc-without-sys-resource), as Docker 20.10 would otherwise hand every
# privileged container (each kind node) a capability runc cannot apply.
# Either cluster is a machine-wide singleton: hold /tmp/longshot-cluster.lock.
# The three-node cluster (hack/kind/cluster-3.yaml, make e2e-kind) is made by the e2e session
# (tests/e2e/kind.py), which also sets up its Pod network and NetworkPolicy enforcement; see docs/install.md.
#
# Environment: LONGSHOT_KIND_DIR (kubeconfigs, default /var/tmp/longshot-kind), DOCKERD_LOG
# (default /var/log/longshot-dockerd.log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="${LONGSHOT_KIND_DIR:-/var/tmp/longshot-kind}"
IMAGES=(pause operator agent)

log() { printf '[kind] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# root's capability bounding set lacks CAP_SYS_RESOURCE on these machines: then dockerd needs the runc wrapper
# hack/kind/runc-without-sys-resource as its default runtime, or no --privileged container (a kind node) starts
lacks_sys_resource() {
  local bnd; bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
  (( (0x$bnd >> 24 & 1) == 0 ))
}
RUNC_WRAPPER=/var/lib/longshot/runc-without-sys-resource

# ipset on this host: kube-router, the NetworkPolicy engine of the three-node cluster (tests/e2e/kind.py), runs
# here inside each node's network namespace and programs its sets with this host's ipset
ipset_up() {
  command -v ipset >/dev/null && return 0
  [[ $(id -u) == 0 ]] || { log "no ipset, and installing it needs root: the three-node cluster's kube-router needs it"; return 0; }
  log "installing Debian's ipset (kube-router, the kind tier's NetworkPolicy engine)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipset >&2
}

docker_up() {
  ipset_up
  if docker info >/dev/null 2>&1; then
    if lacks_sys_resource && [[ "$(docker info --format '{{.DefaultRuntime}}')" != longshot-runc ]]; then
      die "this Docker engine runs privileged containers with runc directly, and root lacks CAP_SYS_RESOURCE here:
kind's node containers would fail with 'unable to apply caps: operation not permitted'. Restart dockerd with
  --add-runtime longshot-runc=$RUNC_WRAPPER --default-runtime longshot-runc
(hack/kind.sh docker-up does that when it starts dockerd itself)."
    fi
    return 0
  fi
  [[ $(id -u) == 0 ]] || die "no Docker engine answers, and starting one needs root"
  if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
  fi
  sysctl -qw net.ipv4.ip_forward=1
  local logfile="${DOCKERD_LOG:-/var/log/longshot-dockerd.log}"
  log "starting dockerd (log $logfile)"
  local flags=()
  if lacks_sys_resource; then
    install -D -m 0755 "$ROOT/hack/kind/runc-without-sys-resource" "$RUNC_WRAPPER"
    flags=(--add-runtime "longshot-runc=$RUNC_WRAPPER" --default-runtime longshot-runc)
  fi
  nohup dockerd "${flags[@]}" >>"$logfile" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd is up"; return 0; }
    sleep 1
  done
  die "dockerd did not answer within 60s; see $logfile"
}

kind_bin() { bash "$ROOT/hack/go-tools.sh" kind; }

up() {
  local name=${1:-longshot} kind image kubeconfig
  docker_up
  kind=$(kind_bin)
  image=$(bash "$ROOT/hack/kind-node-image.sh")
  mkdir -p "$DIR"
  kubeconfig="$DIR/$name.kubeconfig"
  if "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    log "cluster $name exists"
  else
    start=$(date +%s)
    "$kind" create cluster --name "$name" --image "$image" --config "$ROOT/hack/kind/cluster.yaml" \
      --kubeconfig "$kubeconfig" --wait 3m >&2
    log "cluster $name up in $(( $(date +%s) - start ))s"
  fi
  "$kind" get kubeconfig --name "$name" >"$kubeconfig"
  for i in "${IMAGES[@]}"; do
    "$kind" load image-archive --name "$name" "$(bash "$ROOT/hack/images.sh" path "$i")" >&2
  done
  echo "$kubeconfig"
}

down() {
  local name=${1:-longshot}
  "$(kind_bin)" delete cluster --name "$name" >&2
  docker rm -f longshot-git >/dev/null 2>&1 || true  # the demo's git daemon (hack/demo.sh)
  rm -f "$DIR/$name.kubeconfig"
}

case "${1:-}" in
  docker-up) docker_up ;;
  kind) kind_bin ;;
  node-image) bash "$ROOT/hack/kind-node-image.sh" ;;
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 docker-up|kind|node-image|up [NAME]|down [NAME]" >&2; exit 2 ;;
esac
