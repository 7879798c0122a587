"""A real single-node Kubernetes cluster on this machine, for the e2e tier and ``make demo``.

It is :class:`~longshot_testing.controlplane.ControlPlane` (etcd, kube-apiserver, kube-controller-manager)
plus what makes Pods really run:

* a Linux bridge (``lsbr0``, ``10.244.0.1/24``) created up front: the API server, the kubelet and the
  git forge listen on its gateway address, so Pods reach them without DNS or kube-proxy;
* the Pod subnet routed to the bridge only (a route of it through a kind node, left by the kind tier, is deleted:
  :meth:`LocalCluster.pod_route`);
* an iptables filter chain accepting the bridge's forwarded traffic (:data:`FORWARD_CHAIN`: a Docker engine may leave
  FORWARD's policy at DROP); NetworkPolicy's chain is kept before it;
* an iptables DNAT rule for the ``kubernetes`` Service (``10.96.0.1:443`` to the API server), the one
  Service in-cluster clients need (there is no kube-proxy);
* containerd with its own config, state, root and socket under the work directory (``restrict_oom_score_adj``
  because root lacks CAP_SYS_RESOURCE here, the cgroupfs driver on cgroup v1), runc, and the CNI ``bridge``
  + ``host-local`` plugins from ``/usr/lib/cni``;
* dnsmasq on the bridge address as the cluster DNS (no CoreDNS image without a registry): it answers
  ``kubernetes.default.svc.cluster.local`` (the Service above) and ``git-server.<ns>.svc.cluster.local``
  (the forge, for the names in ``examples/``), and NXDOMAIN for the rest of ``cluster.local``;
* a git forge (``longshot_testing.forge``: smart HTTP that needs a credential for every clone and push,
  like a real one) on ``10.244.0.1:3000`` serving the bare repositories under ``git/``; its one account
  is ``longshot`` with a random password made at ``up`` (``git_credentials``, file ``forge/credentials``,
  0600), which builds name in a ``git-token`` Secret: only the operator and longshot-gateway get it, never
  an agent Pod;
* NetworkPolicy enforcement (:meth:`LocalCluster.start_network_policies`): SIG Network's
  kube-network-policies, built from the Go module proxy at a pinned version (:data:`KNP_VERSION`), where the
  kernel has the nftables ``queue`` expression; else (kernels without ``CONFIG_NFT_QUEUE``, such as the
  development machines) the iptables enforcer ``longshot_testing.netpolicy``; ``cluster.json`` records
  which one enforces and why (``networkPolicy``);
* a service proxy (``longshot_testing.serviceproxy``: ClusterIP routing and Service DNS names), as there
  is no kube-proxy and no CoreDNS;
* kube-scheduler, and a kubelet (cgroupfs, ``failSwapOn: false``, a KubeletConfiguration file,
  authenticated with a client certificate ``system:node:<node>`` signed by the cluster CA; webhook
  authentication and authorization of its own API, which the API server calls with a client certificate);
* images imported with ``ctr`` from docker archives (``hack/images.sh`` builds them, no registry).

Everything lives in one work directory (default ``/var/tmp/longshot-cluster``, or ``$LONGSHOT_CLUSTER_DIR``),
with each component's log in ``logs/``; ``cluster.json`` records what runs so that another process can
stop it. ``up`` is idempotent (a healthy cluster is reused), ``down`` removes everything it made: Pods'
containers and shims, mounts, cgroups, the bridge, the iptables chain and the work directory.

Command line (root needed)::

    python -m longshot_testing.cluster up [--images hack-archive.tar ...]
    python -m longshot_testing.cluster status
    python -m longshot_testing.cluster down

Nothing here imports the rest of Longshot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longshot_testing import controlplane as cpl

BRIDGE = "lsbr0"
BRIDGE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
NAT_CHAIN = "LONGSHOT-SVC"
FORWARD_CHAIN = "LONGSHOT-FWD"
"""Filter chain accepting forwarded traffic to and from the bridge, jumped to from FORWARD: a Docker engine that
turned IP forwarding on itself (``hack/kind.sh docker-up`` turns it on first) leaves FORWARD's policy at DROP, even
after it stopped, and without it Pod-to-Pod traffic (a Service's DNAT to a Pod included) would be dropped."""
NODE_NAME = "longshot-node"
GIT_PORT = 3000
"""Port of the git forge (smart HTTP) on the bridge address."""
FORGE_USER = "longshot"
CLUSTER_DOMAIN = "cluster.local"
GIT_SERVICE_NAMES = ("git-server.longshot-system.svc", "git-server.default.svc")
"""DNS names of the forge (``http://git-server.longshot-system.svc:3000/demo.git`` as in examples/)."""
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
KNP_MODULE = "sigs.k8s.io/kube-network-policies"
KNP_VERSION = "v0.7.0"
KNP_CACHE = Path.home() / ".cache" / "longshot" / f"kube-network-policies-{KNP_VERSION}"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
DEFAULT_WORKDIR = Path(os.environ.get("LONGSHOT_CLUSTER_DIR", "/var/tmp/longshot-cluster"))


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster at all (not root, no containerd, no cgroup memory controller).

    Tests skip on this and only on this; anything else that goes wrong is a failure."""


class ClusterError(RuntimeError):
    """A component did not start; the message names it and points at its log."""


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, input=input)


def preflight() -> None:
    """Raise :class:`ClusterUnavailable` with the reason when this machine cannot run containers."""
    if sys.platform != "linux":
        raise ClusterUnavailable(f"needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise ClusterUnavailable("needs root (containerd, runc, network namespaces, cgroups)")
    missing = [b for b in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip", "git",
                           "dnsmasq")
               if shutil.which(b) is None]
    if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
        missing.append("CNI plugins (bridge, host-local)")
    if missing:
        raise ClusterUnavailable(f"missing {', '.join(missing)}; run hack/cluster/install-deps.sh")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        raise ClusterUnavailable("no cgroup memory controller mounted")


def dns_lookup(server: str, name: str, timeout: float = 1.0) -> str | None:
    """The first A record of ``name`` from the DNS server at ``server:53`` (None when there is none)."""
    import socket
    import struct

    query = struct.pack(">HHHHHH", 0x4C53, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (server, 53))
        reply = s.recv(512)
    if struct.unpack(">H", reply[6:8])[0] == 0:
        return None
    return socket.inet_ntoa(reply[-4:])


def _cni_bin_dir() -> str:
    return next(d for d in CNI_BIN_DIRS if Path(d, "bridge").exists())


def _ancestors() -> set[int]:
    """This process and every process above it."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _pids_alive(pids: Sequence[int]) -> bool:
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    return bool(pids) and all(alive(p) for p in pids)


@dataclass
class LocalCluster:
    """``LocalCluster(bin_dir).up()``: a Ready single node; ``.down()`` removes it."""

    bin_dir: Path
    workdir: Path = DEFAULT_WORKDIR
    images: Sequence[Path] = ()
    """docker/OCI archives to import into containerd (namespace ``k8s.io``)."""
    node_name: str = NODE_NAME
    git_port: int = GIT_PORT
    control_plane: cpl.ControlPlane | None = None
    processes: list[cpl.Process] = field(default_factory=list)
    reused: bool = False
    """True when ``up`` found this cluster already running (then the caller did not start it)."""
    network_policies: bool = True
    """Enforce NetworkPolicy with kube-network-policies (when it runs on this kernel; see
    :meth:`start_network_policies` and ``network_policy_status``)."""

    # --- paths ---------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "cluster.json"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "cp" / "admin.kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def registry_hosts(self) -> Path:
        """containerd's registry ``config_path``: ``<host:port>/hosts.toml`` for each registry configured."""
        return self.workdir / "containerd" / "certs.d"

    def trust_plain_http_registry(self, hostport: str) -> Path:
        """Let the node pull from the registry ``hostport`` on this host over plain HTTP (a ``hosts.toml`` under
        containerd's ``config_path``, read at every pull: no restart). Only loopback addresses, as a release's
        registry anywhere else is spoken to over verified TLS; a cluster started before ``config_path`` was part
        of its config is refused, naming the fix."""
        host = hostport.rsplit(":", 1)[0]
        if host not in ("localhost", "127.0.0.1"):
            raise ValueError(f"{hostport}: plain HTTP only for a registry on this host (localhost, 127.0.0.1)")
        config = (self.workdir / "containerd" / "config.toml").read_text()
        if f'config_path = "{self.registry_hosts}"' not in config:
            raise ClusterError(f"the running cluster's containerd has no registry config_path ({self.workdir}/"
                               "containerd/config.toml predates it): make cluster-down, then start it again")
        d = self.registry_hosts / hostport
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(f'server = "http://{hostport}"\n\n[host."http://{hostport}"]\n'
                                      '  capabilities = ["pull", "resolve"]\n')
        return d / "hosts.toml"

    @property
    def logs(self) -> Path:
        return self.workdir / "cp" / "logs"

    @property
    def git_root(self) -> Path:
        return self.workdir / "git"

    @property
    def git_url(self) -> str:
        """Base URL of the forge as Pods (and the host) see it: ``http://10.244.0.1:3000``."""
        return f"http://{BRIDGE_IP}:{self.git_port}"

    @property
    def forge_credentials_file(self) -> Path:
        return self.workdir / "forge" / "credentials"

    @property
    def git_credentials(self) -> tuple[str, str]:
        """The forge's account ``(user, password)``: what a ``git-token`` Secret holds."""
        user, _, password = self.forge_credentials_file.read_text().strip().partition(":")
        return user, password

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def api_server_ports(self) -> list[int]:
        """The chart's ``egress.networkPolicy.apiServerPorts`` for this cluster: the defaults and the port the API
        server listens on (the Service ``kubernetes`` is DNATed to it on the bridge). An egress.allow entry for
        the bridge names its own purposes and ports only, so the API server's port must be listed here."""
        port = self.control_plane.apiserver_port if self.control_plane else self.state().get("apiserverPort")
        return sorted({443, 6443, *([int(port)] if port else [])})

    # --- lifecycle -----------------------------------------------------------------------------------

    def up(self) -> LocalCluster:
        preflight()
        state = self.state()
        if state and _pids_alive(state.get("pids", [])) and self._node_ready():
            self.reused = True
            log(f"already up (node {self.node_name} Ready); KUBECONFIG={self.kubeconfig}")
            self.import_images()
            self._start_forge()
            self._start_service_proxy()
            if self.network_policies:
                self.start_network_policies()
            return self
        if state or self.workdir.exists():
            log("found a stopped or broken cluster; cleaning it up first")
            self.down()
        else:
            self._kill_strays()  # processes of a cluster whose state is gone would hold its ports
        start = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            self._pki()
            self._start_control_plane()
            self._write_state()
            self._start_containerd()
            self._write_state()
            self.import_images()
            self._start_dns()
            self._start_scheduler()
            self._start_kubelet()
            self._write_state()
            self._wait_node_ready()
            self._start_forge()
            self._start_service_proxy()
            self._write_state()
            if self.network_policies:
                self.start_network_policies()
                self._write_state()
        except BaseException:
            log(f"start failed; logs are in {self.logs}")
            raise
        log(f"up in {time.monotonic() - start:.0f}s: node {self.node_name} Ready; KUBECONFIG={self.kubeconfig}; "
            f"git forge {self.git_url}/ (user {FORGE_USER}, password in {self.forge_credentials_file})")
        return self

    def _write_state(self) -> None:
        procs = list(self.control_plane.processes if self.control_plane else []) + self.processes
        cp = self.control_plane
        state = {
            "kubeconfig": str(self.kubeconfig),
            "server": cp.server if cp else None,
            "apiserverPort": cp.apiserver_port if cp else None,
            "containerdSocket": str(self.containerd_socket),
            "gitUrl": self.git_url,
            "gitRoot": str(self.git_root),
            "node": self.node_name,
            "bridge": BRIDGE,
            "bridgeIP": BRIDGE_IP,
            "pids": [p.popen.pid for p in procs if p.alive()],
            "processes": {p.name: p.popen.pid for p in procs},
        }
        previous = self.state()
        if "networkPolicy" in previous:
            state["networkPolicy"] = previous["networkPolicy"]
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    # --- network -------------------------------------------------------------------------------------

    def _network(self) -> None:
        for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
            path = Path("/proc/sys") / key
            if path.exists() and path.read_text().strip() != value:
                path.write_text(value)
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
            log(f"created bridge {BRIDGE}")
        if f" {BRIDGE_IP}/" not in _run("ip", "-4", "addr", "show", BRIDGE).stdout:
            _run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        self.pod_route()
        self._forward_accept()
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-longshot.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "longshot",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.workdir / "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))

    @staticmethod
    def pod_route() -> list[str]:
        """The Pod subnet routed to the bridge, and only there: a route of it through another device (the kind
        tier routes each kind node's podCIDR, ``10.244.0.0/24`` among them, through the node, and a session that
        ends while kind is up leaves those routes with Docker's bridge) is deleted, else the host's traffic to the
        Pods (the kubelet's probes, the API server's answers) would go to a kind node. The routes deleted."""
        removed = []
        for line in _run("ip", "-4", "route", "show", "exact", POD_SUBNET, check=False).stdout.splitlines():
            words = line.split()
            if not words or (f" dev {BRIDGE} " in f" {line} "):
                continue
            spec = [words[0]]
            for key in ("via", "dev", "table", "metric"):
                if key in words[:-1]:
                    spec += [key, words[words.index(key) + 1]]
            if _run("ip", "route", "del", *spec, check=False).returncode == 0:
                removed.append(line.strip())
                log(f"deleted a route of the Pod subnet through another device: {line.strip()}")
        _run("ip", "route", "replace", POD_SUBNET, "dev", BRIDGE, "proto", "kernel", "scope", "link", "src",
             BRIDGE_IP)
        return removed

    @staticmethod
    def _forward_accept() -> None:
        """Accept what the bridge forwards whatever FORWARD's policy (a Docker engine, running or gone, may set it to
        DROP). Inserted first; NetworkPolicy's chain (``netpolicy``) puts itself before it when it starts."""
        ipt = ("iptables", "-w")
        if _run(*ipt, "-N", FORWARD_CHAIN, check=False).returncode != 0:
            _run(*ipt, "-F", FORWARD_CHAIN)
        for direction in ("-i", "-o"):
            _run(*ipt, "-A", FORWARD_CHAIN, direction, BRIDGE, "-j", "ACCEPT")
        if _run(*ipt, "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
            _run(*ipt, "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)

    def _service_nat(self, apiserver_port: int) -> None:
        """DNAT ``10.96.0.1:443`` to the API server: the ``kubernetes`` Service without kube-proxy."""
        ipt = ("iptables", "-w", "-t", "nat")
        if _run(*ipt, "-N", NAT_CHAIN, check=False).returncode != 0:
            _run(*ipt, "-F", NAT_CHAIN)
        _run(*ipt, "-A", NAT_CHAIN, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
             "-j", "DNAT", "--to-destination", f"{BRIDGE_IP}:{apiserver_port}")
        for hook in ("PREROUTING", "OUTPUT"):
            if _run(*ipt, "-C", hook, "-j", NAT_CHAIN, check=False).returncode != 0:
                _run(*ipt, "-I", hook, "-j", NAT_CHAIN)

    # --- certificates --------------------------------------------------------------------------------

    def _pki(self) -> None:
        pki = self.workdir / "cp" / "pki"
        cpl.make_pki(pki, ("127.0.0.1", "localhost", BRIDGE_IP))
        self._client_cert(pki, "kubelet", f"system:node:{self.node_name}", "system:nodes")
        # the API server's client certificate towards kubelets (logs, exec, port-forward)
        self._client_cert(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")

    @staticmethod
    def _client_cert(pki: Path, name: str, cn: str, org: str) -> None:
        if (pki / f"{name}.crt").exists():
            return
        ext = pki / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=clientAuth\n")
        for argv in (
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/O={org}/CN={cn}"],
            ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "3650", "-extfile", ext.name],
        ):
            subprocess.run(["openssl", *argv], cwd=pki, check=True, capture_output=True)

    # --- components ----------------------------------------------------------------------------------

    def _start_control_plane(self) -> None:
        pki = self.workdir / "cp" / "pki"
        self.control_plane = cpl.ControlPlane(
            workdir=self.workdir / "cp", bin_dir=self.bin_dir,
            hosts=("127.0.0.1", "localhost", BRIDGE_IP), bind_address=BRIDGE_IP, server_host=BRIDGE_IP,
            extra_apiserver_flags=(f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                                   f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                                   "--kubelet-preferred-address-types=InternalIP"))
        self.control_plane.start()
        self._service_nat(self.control_plane.apiserver_port)
        log(f"control plane up: {self.control_plane.server}")

    def _spawn(self, name: str, argv: list[str]) -> cpl.Process:
        assert self.control_plane is not None
        proc = self.control_plane._spawn(name, argv)
        self.control_plane.processes.remove(proc)  # ours to stop, after the kubelet and containerd
        self.processes.append(proc)
        return proc

    def _wait(self, proc: cpl.Process, check: Any, timeout: float) -> None:
        assert self.control_plane is not None
        try:
            self.control_plane._wait_healthy(proc, check, timeout)
        except cpl.ControlPlaneError as e:
            raise ClusterError(str(e)) from None

    def _start_containerd(self) -> None:
        d = self.workdir / "containerd"
        d.mkdir(parents=True, exist_ok=True)
        config = d / "config.toml"
        config.write_text(self.containerd_config())
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])

        def ready() -> bool:
            return _run("ctr", "--address", str(self.containerd_socket), "version", check=False).returncode == 0

        self._wait(proc, ready, 60)
        log(f"containerd up: {self.containerd_socket}")

    def containerd_config(self) -> str:
        """The node's containerd config (its own root, state and socket under the work directory)."""
        d = self.workdir / "containerd"
        return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{d / 'containerd.sock.ttrpc'}"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root lacks CAP_SYS_RESOURCE on these machines: never lower a container's oom_score_adj
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{_cni_bin_dir()}"
    conf_dir = "{self.workdir / 'cni'}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # one directory a registry, each with its hosts.toml (read at every pull): see trust_plain_http_registry
    config_path = "{self.registry_hosts}"
"""

    def import_images(self, archives: Sequence[Path] | None = None) -> None:
        """Import docker/OCI archives into containerd, skipping any already imported (by file and size)."""
        done = self.workdir / "containerd" / "imported"
        done.mkdir(parents=True, exist_ok=True)
        for archive in archives if archives is not None else self.images:
            archive = Path(archive)
            marker = done / f"{archive.name}.{archive.stat().st_size}"
            if marker.exists():
                log(f"image {archive.name}: already imported")
                continue
            start = time.monotonic()
            result = _run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", "import",
                          str(archive), check=False)
            if result.returncode != 0:
                raise ClusterError(f"ctr images import {archive} failed: {result.stderr.strip()}")
            marker.touch()
            log(f"image {archive.name}: imported in {time.monotonic() - start:.0f}s")

    def _start_dns(self) -> None:
        names = [f"kubernetes.default.svc.{CLUSTER_DOMAIN}/{KUBERNETES_SERVICE_IP}"]
        names += [f"{n}.{CLUSTER_DOMAIN}/{BRIDGE_IP}" for n in GIT_SERVICE_NAMES]
        self.service_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.service_hosts.touch()
        proc = self._spawn("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
            f"--listen-address={BRIDGE_IP}", "--bind-interfaces", "--port=53", f"--local=/{CLUSTER_DOMAIN}/",
            f"--addn-hosts={self.service_hosts}", "--log-facility=-", *[f"--address=/{n}" for n in names],
        ])

        self._wait(proc, lambda: dns_lookup(BRIDGE_IP, f"kubernetes.default.svc.{CLUSTER_DOMAIN}")
                   == KUBERNETES_SERVICE_IP, 10)
        log(f"cluster DNS (dnsmasq) on {BRIDGE_IP}:53")

    @property
    def service_hosts(self) -> Path:
        """The hosts file of Service names the service proxy writes and dnsmasq serves."""
        return self.workdir / "dns" / "services"

    def _start_service_proxy(self) -> None:
        """ClusterIP routing and Service DNS names (``longshot_testing.serviceproxy``): no kube-proxy here."""
        state = self.state()
        pid = (state.get("processes") or {}).get("service-proxy")
        if pid and _pids_alive([pid]):
            return
        dnsmasq = (state.get("processes") or {}).get("dnsmasq") or next(
            (p.popen.pid for p in self.processes if p.name == "dnsmasq"), 0)
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / "service-proxy.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "longshot_testing.serviceproxy", f"--kubeconfig={self.kubeconfig}",
             f"--hosts={self.service_hosts}", f"--dnsmasq-pid={dnsmasq}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        proc = cpl.Process("service-proxy", popen, self.logs / "service-proxy.log")
        self.processes.append(proc)
        self._wait(proc, lambda: "services" in proc.log.read_text(errors="replace"), 60)
        self._record_reused(popen.pid, "service-proxy")
        log("service proxy up (ClusterIP routing, Service DNS names)")

    def _record_reused(self, pid: int, name: str) -> None:
        if not self.reused:
            return
        state = self.state()
        state.setdefault("processes", {})[name] = pid
        state.setdefault("pids", []).append(pid)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    # --- NetworkPolicy --------------------------------------------------------------------------------

    def start_network_policies(self) -> dict[str, Any]:
        """Enforce NetworkPolicy: kube-network-policies if it can program this kernel, else the iptables
        enforcer. Returns (and records in ``cluster.json`` as ``networkPolicy``) what enforces, and why."""
        state = self.state()
        status = dict(state.get("networkPolicy") or {})
        for name in ("kube-network-policies", "netpolicy"):
            pid = (state.get("processes") or {}).get(name)
            if pid and _pids_alive([pid]):
                return status
        try:
            binary = build_kube_network_policies()
            status = {"enforcer": "kube-network-policies", "version": KNP_VERSION}
            problem = self._start_knp(binary)
        except ClusterError as e:
            problem = str(e)
        if problem:
            log(f"kube-network-policies {KNP_VERSION} cannot enforce NetworkPolicy here: {problem}")
            status = {"enforcer": "longshot_testing.netpolicy", "kubeNetworkPolicies": problem}
            self._start_netpolicy_enforcer()
        state = self.state()
        state["networkPolicy"] = status
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        return status

    def _start_knp(self, binary: Path) -> str | None:
        """Run kube-network-policies as a host process with its own ServiceAccount; None when it enforces,
        else the error it reported."""
        assert self.control_plane is not None or self.kubeconfig.exists()
        rbac = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "kube-network-policies", "namespace": "kube-system"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "kube-network-policies"},
             "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
                       {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                        "verbs": ["list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "kube-network-policies"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "kube-network-policies"},
             "subjects": [{"kind": "ServiceAccount", "name": "kube-network-policies", "namespace": "kube-system"}]},
        ]}
        self.kubectl("apply", "-f", "-", input=json.dumps(rbac))
        token = self.kubectl("-n", "kube-system", "create", "token", "kube-network-policies",
                             "--duration=720h").stdout.strip()
        sa = self.workdir / "knp" / "serviceaccount"
        sa.mkdir(parents=True, exist_ok=True)
        (sa / "token").write_text(token)
        (sa / "namespace").write_text("kube-system")
        (sa / "ca.crt").write_bytes((self.workdir / "cp" / "pki" / "ca.crt").read_bytes())
        port = json.loads(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1]
        # in-cluster configuration only: give it the ServiceAccount files in a private mount namespace
        script = ("mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount && "
                  f"cp {sa}/* /run/secrets/kubernetes.io/serviceaccount/ && exec {binary} "
                  f"--hostname-override={self.node_name} --metrics-bind-address=127.0.0.1:{cpl.free_port()} --v=2")
        log_path = self.logs / "kube-network-policies.log"
        out = log_path.open("ab")
        popen = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBERNETES_SERVICE_HOST": BRIDGE_IP,
                 "KUBERNETES_SERVICE_PORT": port},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        proc = cpl.Process("kube-network-policies", popen, log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if popen.poll() is not None:
                return f"exited with code {popen.returncode}: {_tail(text)}"
            if '"syncing nftables rules" error=' in text:
                proc.stop()
                return "syncing its nftables rules failed: " + _tail(text[text.index('"syncing nftables rules"'):])
            if "Syncing nftables rules" in text and "nfqueue" in text.lower() and "error" not in text.lower():
                break
            time.sleep(0.5)
        self.processes.append(proc)
        self._record_reused(popen.pid, "kube-network-policies")
        log(f"kube-network-policies {KNP_VERSION} enforcing NetworkPolicy")
        return None

    def _start_netpolicy_enforcer(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / "netpolicy.log").open("ab")
        popen = subprocess.Popen([sys.executable, "-m", "longshot_testing.netpolicy",
                                  f"--kubeconfig={self.kubeconfig}", f"--pod-cidr={POD_SUBNET}"],
                                 stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        proc = cpl.Process("netpolicy", popen, self.logs / "netpolicy.log")
        self.processes.append(proc)
        self._wait(proc, lambda: "enforcing" in proc.log.read_text(errors="replace"), 60)
        self._record_reused(popen.pid, "netpolicy")
        log("NetworkPolicy enforced by longshot_testing.netpolicy (iptables)")

    def _start_scheduler(self) -> None:
        cp = self.control_plane
        assert cp is not None
        kubeconfig = cpl.write_kubeconfig(self.workdir / "cp" / "scheduler.kubeconfig", cp.server,
                                          cp.pki / "ca.crt", cp.scheduler_token, user="system:kube-scheduler")
        proc = self._spawn("kube-scheduler", [
            cp.binary("kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={cpl.free_port()}",
            "--v=1",
        ])
        # healthy as soon as it serves; it needs no node to be up
        self._wait(proc, lambda: "Serving securely" in proc.log.read_text(errors="replace")
                   or "Starting Kubernetes Scheduler" in proc.log.read_text(errors="replace"), 60)
        log("kube-scheduler up")

    def _start_kubelet(self) -> None:
        cp = self.control_plane
        assert cp is not None
        k = self.workdir / "kubelet"
        for sub in ("root", "pod-logs", "certs"):
            (k / sub).mkdir(parents=True, exist_ok=True)
        pki = cp.pki
        kubeconfig = k / "kubelet.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": cp.server,
                                                        "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": "kubelet", "user": {"client-certificate": str(pki / "kubelet.crt"),
                                                   "client-key": str(pki / "kubelet.key")}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
            "current-context": "local",
        }, indent=2))
        self.healthz_port = cpl.free_port()
        config = k / "config.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": True,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(k / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "clusterDNS": [BRIDGE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "serializeImagePulls": False,
            "maxPods": 110,
            # a test node on a shared disk: never evict or garbage-collect the locally imported images
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "imageMinimumGCAge": "87600h",
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": True,
        }, indent=2))
        proc = self._spawn("kubelet", [
            cp.binary("kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={k / 'root'}",
            f"--cert-dir={k / 'certs'}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={BRIDGE_IP}",
            "--v=1",
        ])

        def healthy() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        self._wait(proc, healthy, 120)
        log("kubelet up")

    def _node_ready(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", "get", "node", self.node_name,
             "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", "--request-timeout=5s"],
            capture_output=True, text=True, check=False)
        return result.returncode == 0 and result.stdout.strip() == "True"

    def _wait_node_ready(self) -> None:
        kubelet = next(p for p in self.processes if p.name == "kubelet")
        self._wait(kubelet, self._node_ready, 120)
        # the kubelet registers with the not-ready taint and the node-lifecycle controller (off in this
        # control plane: it would also evict Pods when the node is slow) removes it once the node is Ready
        self.kubectl("taint", "node", self.node_name, "node.kubernetes.io/not-ready:NoSchedule-", check=False)
        log(f"node {self.node_name} Ready")

    def _start_forge(self) -> None:
        """The git forge on the bridge address: every repository under ``git/``, a credential for everything."""
        import secrets

        self.git_root.mkdir(parents=True, exist_ok=True)
        state = self.state()
        pid = (state.get("processes") or {}).get("git-forge")
        if pid and _pids_alive([pid]):
            return
        creds = self.forge_credentials_file
        if not creds.exists():
            creds.parent.mkdir(parents=True, exist_ok=True)
            creds.touch(mode=0o600)
            creds.write_text(f"{FORGE_USER}:{secrets.token_urlsafe(24)}\n")
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / "git-forge.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "longshot_testing.forge", f"--root={self.git_root}", f"--host={BRIDGE_IP}",
             f"--port={self.git_port}", f"--credentials={creds}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        proc = cpl.Process("git-forge", popen, self.logs / "git-forge.log")
        self.processes.append(proc)

        def listening() -> bool:
            import socket

            with socket.create_connection((BRIDGE_IP, self.git_port), timeout=1):
                return True

        self._wait(proc, listening, 30)
        if self.reused:  # keep the recorded state of the running cluster, add the forge
            state.setdefault("processes", {})["git-forge"] = popen.pid
            state.setdefault("pids", []).append(popen.pid)
            self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        log(f"git forge serving {self.git_root} at {self.git_url}/ (credentials needed)")

    # --- helpers -------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                               f"--cache-dir={self.workdir / 'kubectl-cache'}", *args],
                              input=input, capture_output=True, text=True, check=check, timeout=timeout)

    def keep_logs(self, destination: Path) -> Path:
        destination.mkdir(parents=True, exist_ok=True)
        for f in self.logs.glob("*.log"):
            shutil.copy2(f, destination / f.name)
        return destination

    def status(self) -> dict[str, Any]:
        state = self.state()
        procs = state.get("processes") or {}
        return {
            "workdir": str(self.workdir),
            "running": {name: _pids_alive([pid]) for name, pid in procs.items()},
            "nodeReady": self._node_ready(),
            "kubeconfig": state.get("kubeconfig"),
            "server": state.get("server"),
            "gitUrl": state.get("gitUrl"),
            "networkPolicy": state.get("networkPolicy"),
        }

    # --- teardown ------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything ``up`` started (in this or another process) and remove what it made."""
        state = self.state()
        procs: dict[str, int] = dict(state.get("processes") or {})
        # processes this object started: stop them through Popen, which reaps them
        mine = {p.name: p for p in self.processes + list(self.control_plane.processes if self.control_plane else [])}
        for p in mine.values():
            procs.setdefault(p.name, p.popen.pid)

        def stop(*names: str) -> None:
            """SIGTERM every process of ``names`` at once, then wait for each (SIGKILL after 10 s)."""
            pids = {n: procs.pop(n) for n in names if n in procs}
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
            for n, pid in pids.items():
                if n in mine and mine[n].popen.pid == pid:
                    mine[n].stop()  # reaps it
                else:
                    _kill_group(pid, n)
                log(f"stopped {n} (pid {pid})")

        # kubelet first (it would restart containers), then the Pods' containers, then containerd
        stop("kubelet", "kube-scheduler", "kube-network-policies", "netpolicy", "service-proxy", "git-forge",
             "git-daemon", "dnsmasq")
        self._remove_containers()
        stop("containerd")
        self._kill_shims()
        stop("kube-controller-manager", "kube-apiserver", *[n for n in procs if n != "etcd"])
        stop("etcd")
        self._kill_strays()
        self.processes.clear()
        if self.control_plane:
            self.control_plane.processes.clear()
        self._unmount()
        self._remove_cgroups()
        ipt = ("iptables", "-w", "-t", "nat")
        for chain in (NAT_CHAIN, "LONGSHOT-SVCPROXY"):
            for hook in ("PREROUTING", "OUTPUT"):
                while _run(*ipt, "-D", hook, "-j", chain, check=False).returncode == 0:
                    pass
            _run(*ipt, "-F", chain, check=False)
            _run(*ipt, "-X", chain, check=False)
        while _run("iptables", "-w", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode == 0:
            pass
        _run("iptables", "-w", "-F", FORWARD_CHAIN, check=False)
        _run("iptables", "-w", "-X", FORWARD_CHAIN, check=False)
        for veth in _run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.splitlines():
            _run("ip", "link", "delete", veth.split(":")[1].strip().split("@")[0], check=False)
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            _run("ip", "link", "delete", BRIDGE, check=False)
            log(f"deleted bridge {BRIDGE}")
        if self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.workdir.exists():
                log(f"could not remove all of {self.workdir} (busy mounts?)")
            else:
                log(f"removed {self.workdir}")

    def _remove_containers(self) -> None:
        sock = self.containerd_socket
        if not sock.exists():
            return
        ctr = ("ctr", "--address", str(sock), "-n", "k8s.io")
        tasks = _run(*ctr, "tasks", "ls", "-q", check=False).stdout.split()
        for t in tasks:
            _run(*ctr, "tasks", "kill", "-s", "SIGKILL", t, check=False)
        for t in tasks:
            _run(*ctr, "tasks", "delete", "-f", t, check=False)
        containers = _run(*ctr, "containers", "ls", "-q", check=False).stdout.split()
        for c in containers:
            _run(*ctr, "containers", "delete", c, check=False)
        if tasks or containers:
            log(f"removed {len(containers)} containers ({len(tasks)} running)")

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes of our containerd outlive it; find them by socket address."""
        needle = str(self.containerd_socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(proc.name), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _kill_strays(self) -> None:
        """SIGKILL processes left by a cluster whose state file is gone (an ``up`` killed half way, a lost
        record): every process whose command line names this cluster's directory, except ours."""
        needle = str(self.workdir).encode()
        own = _ancestors()
        killed = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in own:
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(cmdline.split(b"\0", 1)[0].decode(errors="replace").rsplit("/", 1)[-1])
        if killed:
            log(f"killed {len(killed)} stray processes of an earlier cluster: {', '.join(sorted(set(killed)))}")

    def _unmount(self) -> None:
        root = str(self.workdir.resolve()) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        ours = sorted({m.replace("\\040", " ") for m in mounts if m.startswith(root)}, key=len, reverse=True)
        for m in ours:
            _run("umount", "-l", m, check=False)
        if ours:
            log(f"unmounted {len(ours)} mounts under {self.workdir}")
        # network namespaces of Pods, made by the CNI under /var/run/netns (cni-<uuid>)
        netns = Path("/var/run/netns")
        if netns.is_dir():
            for ns in netns.glob("cni-*"):
                _run("umount", "-l", str(ns), check=False)
                with contextlib.suppress(OSError):
                    ns.unlink()

    def _remove_cgroups(self) -> None:
        """Remove ``kubepods`` cgroups the kubelet made (deepest first), once their processes are gone."""
        removed = 0
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / "kubepods"
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()
                    removed += 1
        if removed:
            log(f"removed {removed} kubepods cgroups")


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])[:1500]


def build_kube_network_policies(cache: Path = KNP_CACHE) -> Path:
    """The kube-network-policies binary at :data:`KNP_VERSION`, built once from the Go module proxy."""
    binary = cache / "kube-network-policies"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise ClusterError("building kube-network-policies needs Go")
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod",
           # the module proxy's checksum database does not answer for this module here (404); the version is pinned
           "GONOSUMDB": KNP_MODULE}
    log(f"building {KNP_MODULE}@{KNP_VERSION} from the Go module proxy (once)")
    dl = subprocess.run(["go", "mod", "download", "-json", f"{KNP_MODULE}@{KNP_VERSION}"], env={**env, "GOFLAGS": ""},
                        capture_output=True, text=True, check=False)
    try:
        src = Path(json.loads(dl.stdout)["Dir"])
    except (ValueError, KeyError):
        detail = _tail(dl.stdout + dl.stderr)
        raise ClusterError(f"go mod download {KNP_MODULE}@{KNP_VERSION} failed: {detail}") from None
    work = cache / "src"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    for path in work.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    build = subprocess.run(["go", "build", "-o", str(binary), "./cmd"], cwd=work, env=env, capture_output=True,
                           text=True, check=False)
    if build.returncode != 0:
        raise ClusterError(f"go build of kube-network-policies failed: {_tail(build.stderr)}")
    return binary


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _kill_group(pid: int, name: str, timeout: float = 10) -> None:
    """Stop a process another process started (recorded in cluster.json): SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longshot_testing.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "import"))
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--bin-dir", type=Path,
                        default=Path(os.environ.get("LONGSHOT_BIN_DIR",
                                                    Path.home() / ".cache/longshot/k8s-v1.34.4/bin")))
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="archives to import into containerd")
    args = parser.parse_args(argv)
    cluster = LocalCluster(bin_dir=args.bin_dir, workdir=args.workdir, images=args.images)
    try:
        if args.command == "up":
            cluster.up()
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "import":
            cluster.import_images()
        elif args.command == "down":
            cluster.down()
        else:
            status = cluster.status()
            print(json.dumps(status, indent=2))
            return 0 if status["nodeReady"] else 1
    except ClusterUnavailable as e:
        log(f"cannot run a cluster on this machine: {e}")
        return 2
    except (ClusterError, cpl.ControlPlaneError, TimeoutError) as e:
        log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
