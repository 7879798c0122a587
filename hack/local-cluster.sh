#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine (root needed), for `make e2e` and `make demo`.
#
#   hack/local-cluster.sh up       binaries + images (cached) + etcd, kube-apiserver, controller-manager,
#                                  scheduler, containerd, kubelet, a bridge CNI and a git daemon; idempotent
#   hack/local-cluster.sh status   what runs; exit 0 when the node is Ready
#   hack/local-cluster.sh down     stop everything and remove the work directory, bridge and iptables chain
#   hack/local-cluster.sh env      print `export KUBECONFIG=...` (eval "$(hack/local-cluster.sh env)")
#
# The cluster itself is longshot_testing.cluster (shared with the e2e tests); this script provides its
# inputs: the Debian packages (hack/cluster/install-deps.sh), the Kubernetes binaries
# (hack/k8s-binaries.sh) and the images (hack/images.sh). Work directory: $LONGSHOT_CLUSTER_DIR
# (default /var/tmp/longshot-cluster).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
WORKDIR="${LONGSHOT_CLUSTER_DIR:-/var/tmp/longshot-cluster}"

log() { printf '[local-cluster] %s\n' "$*" >&2; }

cmd=${1:-status}
case "$cmd" in
  up)
    start=$(date +%s)
    if ! bash "$ROOT/hack/cluster/install-deps.sh" --check 2>/dev/null; then
      bash "$ROOT/hack/cluster/install-deps.sh"
    fi
    BIN=$(bash "$ROOT/hack/k8s-binaries.sh")
    archives=()
    for image in pause operator agent; do
      archives+=("$(bash "$ROOT/hack/images.sh" path "$image")")
    done
    "$PY" -m longshot_testing.cluster up --workdir "$WORKDIR" --bin-dir "$BIN" --images "${archives[@]}" >/dev/null
    log "ready in $(( $(date +%s) - start ))s; use it with: export KUBECONFIG=$WORKDIR/cp/admin.kubeconfig"
    ;;
  down)
    BIN=$(bash "$ROOT/hack/k8s-binaries.sh" 2>/dev/null)
    "$PY" -m longshot_testing.cluster down --workdir "$WORKDIR" --bin-dir "$BIN"
    ;;
  status)
    BIN=$(bash "$ROOT/hack/k8s-binaries.sh" 2>/dev/null)
    "$PY" -m longshot_testing.cluster status --workdir "$WORKDIR" --bin-dir "$BIN"
    ;;
  env)
    echo "export KUBECONFIG=$WORKDIR/cp/admin.kubeconfig"
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
