#!/usr/bin/env bash
# Build a kind node image for the pinned Kubernetes locally, with no registry, and print its reference.
#
#   hack/kind-node-image.sh          build (or find in the cache) localhost/longshot-kind-node:<version>
#   hack/kind-node-image.sh --ref    print the reference only
#
# `kind build node-image` cannot run here: it pulls kind's base image and then, inside it, the etcd, CoreDNS,
# kindnetd and local-path-provisioner images from their registries. So this script assembles the same kind of
# image from what the machine has:
#   * a Debian rootfs from debootstrap with Debian's systemd, containerd, runc, CNI plugins and iptables;
#   * kind's own node files (entrypoint, systemd units, kubelet drop-ins, containerd config) from the
#     sigs.k8s.io/kind module at the pinned kind version (Go module proxy), with the paths of Debian's packages;
#   * the pinned binaries (hack/k8s-binaries.sh, plus kubeadm and kube-proxy built the same way);
#   * the control-plane images (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd) made
#     from those binaries, and the pause image of hack/images.sh, preloaded into the node's containerd;
#   * CoreDNS at kubeadm's pin, built from the Go module proxy (hack/go-tools.sh coredns).
# What kind would pull and this image does not have: kindnetd (the kind config sets disableDefaultCNI and the
# node has a bridge CNI config instead: one node needs no more) and local-path-provisioner (a StorageClass
# without provisioner; nothing here asks for volumes). hack/kind/cluster.yaml is the matching kind config.
#
# Cached: the image is saved to $LONGSHOT_KIND_CACHE (default ~/.cache/longshot/kind) as a docker archive keyed
# by a hash of its inputs; a warm run only `docker load`s it when the engine lacks it. Needs root, docker,
# debootstrap, go. Progress on stderr; stdout is the image reference.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KIND_VERSION=v0.30.0
ETCD_TAG=3.6.16            # the pinned etcd of hack/k8s-binaries.sh; hack/kind/cluster.yaml sets this imageTag
PAUSE_REF="registry.k8s.io/pause:3.10"
CACHE="${LONGSHOT_KIND_CACHE:-$HOME/.cache/longshot/kind}"
NODE_REF="localhost/longshot-kind-node:${K8S_VERSION}"
SUITE=bookworm
NODE_PACKAGES="systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,nftables,conntrack,\
iproute2,ethtool,kmod,mount,util-linux,ca-certificates,procps,libseccomp2,pigz,socat,jq,bash,e2fsprogs"

log() { printf '[kind-node-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" == "--ref" ]]; then echo "$NODE_REF"; exit 0; fi
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, docker)"
for t in docker debootstrap go tar sha256sum; do command -v "$t" >/dev/null || die "needs $t"; done
docker info >/dev/null 2>&1 || die "no working Docker engine (start dockerd: hack/kind.sh docker-up)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || { log "another build holds $CACHE/.lock; waiting"; flock 9; }
start=$(date +%s)

# --- inputs -------------------------------------------------------------------------------------------------
BIN=$(bash "$ROOT/hack/k8s-binaries.sh")
KBIN=$(LONGSHOT_CACHE="$CACHE/k8s-${K8S_VERSION}" KUBEBUILDER_ASSETS="$BIN" K8S_BINARIES_EXTRA="kubeadm kube-proxy" \
       bash "$ROOT/hack/k8s-binaries.sh")
KIND_SRC=$(cd /tmp && GOFLAGS= go mod download -json "sigs.k8s.io/kind@${KIND_VERSION}" \
           | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$KIND_SRC/images/base/files" ]] || die "no kind sources for ${KIND_VERSION} in the Go module cache"
PAUSE_ARCHIVE=$(bash "$ROOT/hack/images.sh" path pause)
COREDNS=$(bash "$ROOT/hack/go-tools.sh" coredns)

key=$( { echo "$K8S_VERSION $KIND_VERSION $ETCD_TAG $SUITE $NODE_PACKAGES"; cat "${BASH_SOURCE[0]}";
         cat "$ROOT"/hack/kind/node/*; sha256sum "$PAUSE_ARCHIVE" "$COREDNS";
         for b in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd; do
           sha256sum "$KBIN/$b"; done; } | sha256sum | cut -c1-16)
ARCHIVE="$CACHE/node-${K8S_VERSION}-${key}.tar"
if [[ "$(docker image inspect -f '{{index .Config.Labels "dev.longshot.kind-node-key"}}' "$NODE_REF" 2>/dev/null)" \
      == "$key" ]]; then
  log "$NODE_REF is up to date in docker (key $key)"
  echo "$NODE_REF"; exit 0
fi
if [[ -f "$ARCHIVE" ]]; then
  log "loading $ARCHIVE"
  docker load -i "$ARCHIVE" >&2
  echo "$NODE_REF"; exit 0
fi

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
BUILD_CONTAINER="longshot-kind-build-$$"
cleanup() { docker rm -f "$BUILD_CONTAINER" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

# --- 1. the Debian rootfs (cached by its package list) ----------------------------------------------------
mirror="${LONGSHOT_DEBIAN_MIRROR:-$(sed -n 's#^URIs:[[:space:]]*\(http[^ ]*/debian\)/*$#\1#p' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs_key=$(echo "$SUITE $NODE_PACKAGES $mirror" | sha256sum | cut -c1-16)
ROOTFS="$CACHE/rootfs-${SUITE}-${rootfs_key}.tar"
if [[ ! -f "$ROOTFS" ]]; then
  log "debootstrap $SUITE with $NODE_PACKAGES (a few minutes)"
  debootstrap --variant=minbase --include="$NODE_PACKAGES" "$SUITE" "$WORK/rootfs" "$mirror" >&2
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -cf "$ROOTFS.tmp" . && mv "$ROOTFS.tmp" "$ROOTFS"
  rm -rf "$WORK/rootfs"
fi
docker import "$ROOTFS" "localhost/longshot-kind-rootfs:${rootfs_key}" >/dev/null

# --- 2. the node image: kind's files, Debian paths, the binaries --------------------------------------------
ctx="$WORK/node"
mkdir -p "$ctx/bin"
cp -r "$KIND_SRC/images/base/files" "$ctx/files"
chmod -R u+w "$ctx/files"
cp "$ROOT"/hack/kind/node/* "$ctx/"
# kind's containerd config for Debian's containerd 1.6 (the same v2 format): no fuse-overlayfs (rootless only);
# restrict_oom_score_adj, as root lacks CAP_SYS_RESOURCE on these machines (docs/install.md, kind); Debian's CNI plugins
sed -e '/^\[proxy_plugins/d' -e '/fuse-overlayfs/d' -e '/^  type = "snapshot"/d' -e '/^  address = /d' \
    -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
    "$KIND_SRC/images/base/files/etc/containerd/config.toml" >"$ctx/containerd-config.toml"
printf '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n  conf_dir = "/etc/cni/net.d"\n' \
  >>"$ctx/containerd-config.toml"
grep -q 'restrict_oom_score_adj = true' "$ctx/containerd-config.toml" || die "kind's containerd config changed shape"
for b in kubeadm kubelet kubectl; do cp -L "$KBIN/$b" "$ctx/bin/$b"; done
cat >"$ctx/Dockerfile" <<EOF
FROM localhost/longshot-kind-rootfs:${rootfs_key}
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
COPY containerd-config.toml /etc/containerd/config.toml
COPY 10-longshot-bridge.conflist /etc/cni/net.d/10-longshot-bridge.conflist
COPY default-storage.yaml /kind/manifests/default-storage.yaml
COPY bin/ /usr/bin/
RUN set -eux; chmod 0755 /usr/local/bin/* /kind/bin/* /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl; \\
    sed -i -e 's#/usr/local/bin/containerd#/usr/bin/containerd#' -e '/^OOMScoreAdjust/d' \\
      /etc/systemd/system/containerd.service; \\
    mkdir -p /opt/cni /etc/kubernetes/manifests /var/lib/kubelet; ln -sfn /usr/lib/cni /opt/cni/bin; \\
    ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
      | jq 'del(.process.rlimits)' >/etc/containerd/cri-base.json; \\
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; \\
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \\
    echo "ReadKMsg=no" >>/etc/systemd/journald.conf; \\
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service; \\
    systemctl mask systemd-binfmt.service; \\
    echo "${K8S_VERSION}" >/kind/version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
LABEL dev.longshot.kind-node-key=${key}
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
log "building the node image"
docker build -q -t "localhost/longshot-kind-node-build:${key}" "$ctx" >&2

# --- 3. control-plane images from the pinned binaries -----------------------------------------------------
images=()
mapfile -t wanted < <("$KBIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
for ref in "${wanted[@]}"; do
  name=${ref##*/}; name=${name%%:*}
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler)
      d="$WORK/img-$name"; mkdir -p "$d"; cp -L "$KBIN/$name" "$d/$name"
      printf 'FROM scratch\nCOPY %s /usr/local/bin/%s\nENTRYPOINT ["/usr/local/bin/%s"]\n' "$name" "$name" "$name" \
        >"$d/Dockerfile"
      docker build -q -t "$ref" "$d" >/dev/null; images+=("$ref") ;;
    kube-proxy)
      # iptables, conntrack and the rest kube-proxy runs: the node's own Debian userland
      d="$WORK/img-$name"; mkdir -p "$d"; cp -L "$KBIN/kube-proxy" "$d/kube-proxy"
      printf 'FROM localhost/longshot-kind-rootfs:%s\nCOPY kube-proxy /usr/local/bin/kube-proxy\n' "$rootfs_key" \
        >"$d/Dockerfile"
      docker build -q -t "$ref" "$d" >/dev/null; images+=("$ref") ;;
    etcd)
      ref="registry.k8s.io/etcd:${ETCD_TAG}"
      d="$WORK/img-etcd"; mkdir -p "$d"; cp -L "$KBIN/etcd" "$d/etcd"
      printf 'FROM scratch\nCOPY etcd /usr/local/bin/etcd\nENV PATH=/usr/local/bin\nENTRYPOINT ["/usr/local/bin/etcd"]\n' \
        >"$d/Dockerfile"
      docker build -q -t "$ref" "$d" >/dev/null; images+=("$ref") ;;
    coredns)
      # the operator reaches the API server as kubernetes.default.svc (kopf): the cluster needs its DNS
      d="$WORK/img-coredns"; mkdir -p "$d"; cp -L "$COREDNS" "$d/coredns"
      printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$d/Dockerfile"
      docker build -q -t "$ref" "$d" >/dev/null; images+=("$ref") ;;
    pause) ;;  # the pause image comes from hack/images.sh
    *) die "kubeadm lists an image this script does not know: $ref" ;;
  esac
done
docker save -o "$WORK/control-plane.tar" "${images[@]}"
log "control-plane images: ${images[*]}"

# --- 4. preload them into the node's containerd (content only: unpacked on first use), then commit ---------
docker run -d --init --name "$BUILD_CONTAINER" --privileged --entrypoint sleep \
  "localhost/longshot-kind-node-build:${key}" infinity >/dev/null
docker exec "$BUILD_CONTAINER" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
for _ in $(seq 1 60); do
  docker exec "$BUILD_CONTAINER" ctr version >/dev/null 2>&1 && break
  sleep 1  # containerd's socket appears within a second or two
done
for archive in "$WORK/control-plane.tar" "$PAUSE_ARCHIVE"; do
  docker exec -i "$BUILD_CONTAINER" ctr -n k8s.io images import --no-unpack --all-platforms --digests - <"$archive" >&2
done
docker exec "$BUILD_CONTAINER" ctr -n k8s.io images ls -q >&2
docker exec "$BUILD_CONTAINER" bash -c 'pkill containerd; while pgrep -x containerd >/dev/null; do sleep 0.2; done; rm -f /tmp/containerd.log'
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  "$BUILD_CONTAINER" "$NODE_REF" >/dev/null
docker save -o "$ARCHIVE.tmp" "$NODE_REF" && mv "$ARCHIVE.tmp" "$ARCHIVE"
find "$CACHE" -maxdepth 1 -name "node-${K8S_VERSION}-*.tar" ! -name "$(basename "$ARCHIVE")" -delete
log "built $NODE_REF in $(( $(date +%s) - start ))s (saved as $ARCHIVE)"
echo "$NODE_REF"
