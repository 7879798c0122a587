"""The e2e tier on a kind cluster, through pytest-kind: ``LONGSHOT_E2E_CLUSTER=kind`` (or automatically when
the local cluster cannot run here and kind can).

:class:`KindE2ECluster` offers what the tests use of ``longshot_testing.cluster.LocalCluster``: ``kubectl``,
``kubeconfig``, ``bin_dir``, ``workdir``, ``git_root`` and ``git_url``, ``keep_logs`` and ``down``. The
cluster is pytest-kind's ``KindCluster`` with the kind of ``hack/go-tools.sh kind`` (sigs.k8s.io/kind v0.30.0
built from the Go module proxy; or ``$LONGSHOT_KIND``), the node image of ``hack/kind-node-image.sh`` (built
locally from the pinned binaries, no registry) and ``hack/kind/cluster.yaml``; the images are the
archives of ``hack/images.sh`` loaded with ``kind load image-archive``, and the git server is ``git daemon``
in a container of the agent image on kind's Docker network, serving ``git_root`` from the host (as
``hack/demo.sh`` does), so the tests create and inspect repositories on the host exactly as with the local
cluster.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLUSTER_NAME = "longshot-e2e"
GIT_CONTAINER = "longshot-e2e-git"
WORKDIR = Path("/var/tmp/longshot-e2e-kind")
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = ROOT / "hack" / "kind" / "cluster.yaml"
MULTINODE_NAME = "longshot-e2e-multinode"
MULTINODE_CONFIG = ROOT / "hack" / "kind" / "cluster-3.yaml"
POD_SUBNET = "10.244.0.0/16"  # networking.podSubnet of both configs
CNI_CONFIG = "/etc/cni/net.d/10-longshot-bridge.conflist"  # the node image's (hack/kind/node/)
SERVICE_SUBNET = "10.96.0.0/16"  # kind's default networking.serviceSubnet (neither config sets one)
KUBE_ROUTER_HEALTH_PORT = 20244  # kube-router's default --health-port, on each node's address
ENGINES = ("kube-router", "longshot")


def netpol_engine() -> str:
    """``$LONGSHOT_KIND_NETPOL``: what enforces NetworkPolicy on the three-node cluster. ``kube-router`` (the
    default): kube-router's firewall mode, built from the Go module proxy by ``hack/go-tools.sh kube-router``;
    ``longshot``: the project's own enforcer ``longshot_testing.netpolicy`` (the local cluster's)."""
    raw = os.environ.get("LONGSHOT_KIND_NETPOL", "kube-router").strip() or "kube-router"
    if raw not in ENGINES:
        raise RuntimeError(f"LONGSHOT_KIND_NETPOL={raw!r}: expected one of {', '.join(ENGINES)}")
    return raw


def nodes_wanted() -> int:
    """``$LONGSHOT_KIND_NODES``: 1 (hack/kind/cluster.yaml) or 3 (hack/kind/cluster-3.yaml)."""
    raw = os.environ.get("LONGSHOT_KIND_NODES", "1").strip() or "1"
    if raw not in ("1", "3"):
        raise RuntimeError(f"LONGSHOT_KIND_NODES={raw!r}: expected 1 or 3")
    return int(raw)


def kind_binary() -> str | None:
    """``$LONGSHOT_KIND``, else the kind that ``hack/go-tools.sh kind`` builds (cached), else the one on PATH."""
    if os.environ.get("LONGSHOT_KIND"):
        return os.environ["LONGSHOT_KIND"]
    built = subprocess.run(["bash", str(ROOT / "hack" / "go-tools.sh"), "kind"], capture_output=True, text=True,
                           check=False)
    if built.returncode == 0:
        return built.stdout.strip().splitlines()[-1]
    return shutil.which("kind")


def unavailable() -> str | None:
    """Why a kind cluster cannot be made here, or None when it can."""
    if importlib.util.find_spec("pytest_kind") is None:
        return "pytest-kind is not installed (pip install -e '.[e2e]')"
    if kind_binary() is None:
        return "no kind: `hack/go-tools.sh kind` could not build it and there is none on PATH"
    if shutil.which("docker") is None:
        return "no `docker` on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          check=False)
    if info.returncode != 0 or not info.stdout.strip():
        last = (info.stderr.strip().splitlines() or ["no server version"])[-1]
        return f"no working Docker engine (`docker info`: {last})"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


@dataclass
class KindE2ECluster:
    bin_dir: Path
    images: Sequence[Path]
    agent_image: str
    """Reference of the agent image inside ``images`` (it also runs the git daemon)."""
    name: str = CLUSTER_NAME
    workdir: Path = WORKDIR
    reused: bool = False
    kind: Any = field(default=None, repr=False)
    nodes: int = 1
    """1 or 3 (:func:`nodes_wanted`); with 3 the cluster is ``MULTINODE_NAME`` and ``MULTINODE_CONFIG``."""
    enforcers: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    engine: str = "longshot"
    """What enforces NetworkPolicy on the three-node cluster (:func:`netpol_engine`); nothing on one node."""
    engine_version: str = ""
    """The engine's version as it reports it (kube-router: its ``--version``)."""
    routes: list[str] = field(default_factory=list)
    """The host routes to the nodes' podCIDRs that :meth:`up` added (:func:`route_pods`), removed by :meth:`down`."""
    pods_routed: bool = False
    """Every node's podCIDR is routed from this host: the host reaches Pod addresses."""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def git_root(self) -> Path:
        return self.workdir / "git"

    git_url: str = ""
    """``git://<container IP>:9418`` once :meth:`up` ran."""

    def up(self) -> KindE2ECluster:
        from pytest_kind import KindCluster

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.git_root.mkdir(parents=True, exist_ok=True)
        kind_bin = kind_binary()
        assert kind_bin is not None
        node_image = _run("bash", str(ROOT / "hack" / "kind-node-image.sh")).stdout.strip().splitlines()[-1]
        self.kind = KindCluster(self.name, kubeconfig=self.kubeconfig, kind_path=Path(kind_bin),
                                kubectl_path=self.bin_dir / "kubectl", image=node_image)
        self.kind.create(config_file=MULTINODE_CONFIG if self.nodes == 3 else CLUSTER_CONFIG)
        if self.nodes == 3:
            nodes = pod_network(self.kubectl, expected=3)
            if len(nodes) != 3:
                raise RuntimeError(f"cluster {self.name} has {len(nodes)} nodes, not 3: delete it "
                                   f"(kind delete cluster --name {self.name}) and run again")
            if self.engine == "kube-router":
                binary, self.engine_version = kube_router_binary()
                self.enforcers = start_kube_router(self.kubectl, nodes, self.workdir, binary)
            else:
                self.enforcers = start_enforcers(self.kubectl, nodes, self.workdir)
        for archive in self.images:
            _run(kind_bin, "load", "image-archive", "--name", self.name, str(archive))
        self._start_git_daemon()
        nodes = _nodes(self.kubectl)
        self.routes = route_pods(nodes)
        self.pods_routed = all(n.pod_cidr in self.routes for n in nodes)
        return self

    @property
    def host_address(self) -> str:
        """This host as Pods reach it: the gateway of kind's Docker network (the local cluster's is its bridge
        address). A Pod's packet to it leaves through its node, masqueraded to the node's address."""
        out = _run("docker", "network", "inspect", "kind", "-f",
                   "{{range .IPAM.Config}}{{.Gateway}} {{end}}").stdout.split()
        v4 = [a for a in out if ipaddress.ip_address(a).version == 4]
        if not v4:
            raise RuntimeError(f"kind's Docker network has no IPv4 gateway: {out}")
        return v4[0]

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start_network_policies(self) -> dict[str, Any]:
        """What enforces NetworkPolicy here, as ``LocalCluster.start_network_policies`` reports it (empty: nothing,
        the one-node kind cluster's bridge)."""
        if not self.enforcers:
            return {}
        if self.engine == "kube-router":
            return {"enforcer": "kube-router", "version": self.engine_version, "nodes": self.nodes,
                    "mode": "firewall (--run-firewall, no router, no service proxy): iptables and ipset"}
        return {"enforcer": "longshot_testing.netpolicy", "nodes": self.nodes,
                "kubeNetworkPolicies": "no CONFIG_NFT_QUEUE in this kernel (docs/security.md)"}

    @property
    def netpol_summary(self) -> str:
        """One line for the session's summary: ``netpol_engine=<engine> <version>``, or ``none`` and why."""
        if not self.enforcers:
            return "netpol_engine=none (one-node kind cluster: its bridge enforces no NetworkPolicy)"
        if self.engine == "kube-router":
            return f"netpol_engine=kube-router {self.engine_version} on {self.nodes} nodes"
        return f"netpol_engine=longshot_testing.netpolicy on {self.nodes} nodes"

    def _start_git_daemon(self) -> None:
        agent = next(a for a in self.images if "agent" in a.name)
        _run("docker", "load", "-i", str(agent))
        _run("docker", "rm", "-f", GIT_CONTAINER, check=False)
        _run("docker", "run", "-d", "--name", GIT_CONTAINER, "--network", "kind", "--user", "0:0",
             "-v", f"{self.git_root}:/git", "--entrypoint", "git", self.agent_image,
             "daemon", "--base-path=/git", "--export-all", "--enable=receive-pack", "--reuseaddr",
             "--informative-errors", "/git")
        ip = _run("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  GIT_CONTAINER).stdout.strip()
        self.git_url = f"git://{ip}:9418"

    def guard(self) -> None:
        """Refuse to run against anything but this kind cluster."""
        config = self.kind_config()
        context = config.get("current-context")
        if context != f"kind-{self.name}":
            raise RuntimeError(f"refusing to run e2e tests against context {context!r}: not kind-{self.name}")

    def kind_config(self) -> dict[str, Any]:
        out = _run(str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", "config", "view", "--raw",
                   "-o", "json").stdout
        return dict(json.loads(out))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, check=check, timeout=timeout)

    def keep_logs(self, destination: Path) -> Path:
        destination.mkdir(parents=True, exist_ok=True)
        kind_bin = kind_binary()
        if kind_bin:
            _run(kind_bin, "export", "logs", "--name", self.name, str(destination / "kind"), check=False)
        if self.logs.is_dir():
            shutil.copytree(self.logs, destination / "host", dirs_exist_ok=True)
        return destination

    def down(self) -> None:
        stop_enforcers(self.enforcers)
        unroute_pods(self.routes)
        _run("docker", "rm", "-f", GIT_CONTAINER, check=False)
        if os.environ.get("LONGSHOT_KIND_KEEP") == "1":
            return  # a developer's loop: the next session reuses the cluster (kind create finds it) and its workdir
        if self.kind is not None:
            self.kind.delete()
        shutil.rmtree(self.workdir, ignore_errors=True)


def route_pods(nodes: Sequence[Node]) -> list[str]:
    """Routes on this host to every node's podCIDR through the node's address, so that the host reaches Pod
    addresses as it does on the local cluster (the node is the host there): Prometheus scraping Pod IPs, the
    operator's health endpoint, a probe of a neighbour Pod. A prefix this host already reaches directly (the local
    cluster's bridge, ``10.244.0.0/24`` on ``lsbr0``, when it is up) is left alone. The prefixes routed."""
    added = []
    for n in nodes:
        if not n.pod_cidr:
            continue
        existing = _run("ip", "route", "show", "exact", n.pod_cidr, check=False).stdout.strip()
        if existing and " via " not in f" {existing}":
            continue  # a device route of this host (another cluster's bridge): not ours to take over
        _run("ip", "route", "replace", n.pod_cidr, "via", n.ip)
        added.append(n.pod_cidr)
    return added


def unroute_pods(prefixes: Sequence[str]) -> None:
    for prefix in prefixes:
        _run("ip", "route", "del", prefix, check=False)


class NodeShell:
    """Commands and files of one node: ``docker exec`` into the kind node's container (its cgroups, its Pods'
    processes in its PID namespace)."""

    def __init__(self, node: str) -> None:
        self.node = node

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", "exec", self.node, "sh", "-c", script], capture_output=True, text=True,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"on node {self.node}: {script!r} failed ({result.returncode}): {result.stderr}")
        return result


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    pod_cidr: str
    control_plane: bool


def _nodes(kubectl: Any) -> list[Node]:
    items = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    out = []
    for n in items:
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        out.append(Node(name=n["metadata"]["name"], ip=ip, pod_cidr=n["spec"].get("podCIDR", ""),
                        control_plane="node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})))
    return out


def _bridge_config(pod_cidr: str) -> str:
    """The node image's bridge config (hack/kind/node/10-longshot-bridge.conflist) for one node's podCIDR:
    no ipMasq (a Pod's address must survive the hop to another node; the node masquerades only what leaves
    POD_SUBNET), and forceAddress, as a worker's bridge may already carry the image's fixed gateway address."""
    return json.dumps({
        "cniVersion": "1.0.0", "name": "longshot-kind",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "forceAddress": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=2)


def _node_sh(node: str, script: str, input: str | None = None) -> str:
    result = subprocess.run(["docker", "exec", "-i", node, "sh", "-ec", script], input=input, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"on node {node}: {script!r} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def pod_network(kubectl: Any, timeout: float = 240, expected: int = 1) -> list[Node]:
    """What kindnetd does, for a cluster without it: every node's bridge on its own podCIDR, routes to the other
    nodes' podCIDRs through their node IPs, masquerading for traffic that leaves the Pod network; then the Pods
    that started with the image's fixed subnet on a worker are deleted (their controllers make new ones) and
    every node is Ready. Idempotent. Returns the nodes, once ``expected`` of them registered (``kind create``
    returns when the workers joined; a joined worker's Node object may follow a moment later)."""
    from longshot_testing import controlplane as cpl

    def all_have_cidrs() -> list[Node] | None:
        nodes = _nodes(kubectl)
        return nodes if len(nodes) >= expected and all(n.pod_cidr for n in nodes) else None

    nodes: list[Node] = cpl.wait_until(all_have_cidrs, timeout, f"{expected} nodes, each with a podCIDR", interval=1)
    for n in nodes:
        _node_sh(n.name, f"cat > {CNI_CONFIG}.tmp && mv {CNI_CONFIG}.tmp {CNI_CONFIG}",
                 input=_bridge_config(n.pod_cidr))
        routes = "".join(f"ip route replace {o.pod_cidr} via {o.ip}\n" for o in nodes if o.name != n.name)
        masq = f"-s {POD_SUBNET} ! -d {POD_SUBNET} -m comment --comment longshot-pod-network -j MASQUERADE"
        _node_sh(n.name, routes + f"iptables -t nat -C POSTROUTING {masq} 2>/dev/null || "
                                  f"iptables -t nat -A POSTROUTING {masq}\n"
                                  # Pod-to-Pod traffic on one node is bridged: let iptables (the enforcer) see it
                                  "sysctl -qw net.bridge.bridge-nf-call-iptables=1\n")
    by_name = {n.name: n for n in nodes}
    pods = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    for p in pods:
        spec, status = p["spec"], p.get("status") or {}
        node = by_name.get(spec.get("nodeName", ""))
        if node is None or spec.get("hostNetwork") or not status.get("podIP"):
            continue
        if ipaddress.ip_address(status["podIP"]) not in ipaddress.ip_network(node.pod_cidr):
            kubectl("-n", p["metadata"]["namespace"], "delete", "pod", p["metadata"]["name"], "--wait=false")

    def ready() -> bool:
        items = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
        return all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                   for n in items)

    cpl.wait_until(ready, timeout, "every node to be Ready", interval=1)
    kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", f"--timeout={int(timeout)}s",
            timeout=timeout + 20)
    return nodes


def start_enforcers(kubectl: Any, nodes: Sequence[Node], workdir: Path,
                    timeout: float = 90) -> list[subprocess.Popen[bytes]]:
    """``longshot_testing.netpolicy`` once per node, on this host but inside the node container's network
    namespace (its iptables are the node's), talking to the API server at the control plane's node address.
    Returns the processes once each says it is enforcing."""
    from longshot_testing import controlplane as cpl

    cp = next(n for n in nodes if n.control_plane)
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["clusters"][0]["cluster"]["server"] = f"https://{cp.ip}:6443"
    kubeconfig = workdir / "enforcer.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    kubeconfig.chmod(0o600)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for n in nodes:
        pid = _run("docker", "inspect", "-f", "{{.State.Pid}}", n.name).stdout.strip()
        log_path = logs / f"netpolicy-{n.name}.log"
        with log_path.open("ab") as out:
            procs.append((subprocess.Popen(
                ["nsenter", f"--net=/proc/{pid}/ns/net", "--", sys.executable, "-m", "longshot_testing.netpolicy",
                 f"--kubeconfig={kubeconfig}", f"--pod-cidr={POD_SUBNET}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True), log_path))

    def enforcing() -> bool:
        for proc, log_path in procs:
            if proc.poll() is not None:
                stop_enforcers([p for p, _ in procs])
                raise RuntimeError(f"the enforcer of {log_path.name} exited ({proc.returncode}): "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
        return all("enforcing" in log_path.read_text(errors="replace") for _, log_path in procs)

    cpl.wait_until(enforcing, timeout, "the NetworkPolicy enforcer of every node", interval=0.5)
    return [p for p, _ in procs]


KUBE_ROUTER_RBAC: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kube-router", "namespace": "kube-system"}},
    # what its firewall mode watches (kube-router's own generic DaemonSet grants these, plus the leases and
    # services/status that only its router and service proxy write): read-only
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kube-router"},
     "rules": [
         {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
          "verbs": ["get", "list", "watch"]},
         {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
         {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
     ]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "kube-router"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-router"},
     "subjects": [{"kind": "ServiceAccount", "name": "kube-router", "namespace": "kube-system"}]},
]


def kube_router_binary() -> tuple[str, str]:
    """``hack/go-tools.sh kube-router`` (built from the Go module proxy, cached), and the version it reports."""
    built = _run("bash", str(ROOT / "hack" / "go-tools.sh"), "kube-router").stdout.strip().splitlines()[-1]
    result = _run(built, "--version")
    out = result.stdout + result.stderr  # "Running /path/kube-router version v2.1.0, built on ..., go1.x" (stderr)
    words = out.split()
    version = words[words.index("version") + 1].rstrip(",") if "version" in words else out.strip()
    return built, version


def start_kube_router(kubectl: Any, nodes: Sequence[Node], workdir: Path, binary: str,
                      timeout: float = 120) -> list[subprocess.Popen[bytes]]:
    """kube-router in firewall mode once per node, as its DaemonSet would run it (host network, the node's
    iptables and ipset), here as a process of this host inside the node container's network namespace (like
    :func:`start_enforcers`), with its own ServiceAccount (read-only RBAC: :data:`KUBE_ROUTER_RBAC`) and the
    API server at the control plane's node address. Returns the processes once every one answers its health
    check (``/healthz`` on the node's address, port 20244: its controllers have synced and heartbeat)."""
    import urllib.request

    from longshot_testing import controlplane as cpl

    if shutil.which("ipset") is None:
        raise RuntimeError("kube-router needs ipset on this host (apt-get install ipset; hack/kind.sh docker-up "
                           "installs it)")
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": KUBE_ROUTER_RBAC}))
    token = kubectl("-n", "kube-system", "create", "token", "kube-router", "--duration=24h").stdout.strip()
    cp = next(n for n in nodes if n.control_plane)
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config["clusters"][0]["cluster"]["server"] = f"https://{cp.ip}:6443"
    config["users"] = [{"name": "kube-router", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "kube-router"
    kubeconfig = workdir / "kube-router.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    kubeconfig.chmod(0o600)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen[bytes], Path, Node]] = []
    for n in nodes:
        pid = _run("docker", "inspect", "-f", "{{.State.Pid}}", n.name).stdout.strip()
        log_path = logs / f"kube-router-{n.name}.log"
        with log_path.open("ab") as out:
            procs.append((subprocess.Popen(
                ["nsenter", f"--net=/proc/{pid}/ns/net", "--", binary, f"--kubeconfig={kubeconfig}",
                 "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
                 f"--hostname-override={n.name}", f"--service-cluster-ip-range={SERVICE_SUBNET}",
                 f"--health-port={KUBE_ROUTER_HEALTH_PORT}", "--metrics-port=0", "--v=1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True),
                log_path, n))

    def healthy(node: Node) -> bool:
        try:
            with urllib.request.urlopen(f"http://{node.ip}:{KUBE_ROUTER_HEALTH_PORT}/healthz", timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def running() -> bool:
        for proc, log_path, _ in procs:
            if proc.poll() is not None:
                stop_enforcers([p for p, _, _ in procs])
                raise RuntimeError(f"kube-router ({log_path.name}) exited ({proc.returncode}): "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
        return all(healthy(n) for _, _, n in procs)

    cpl.wait_until(running, timeout, "kube-router's health check on every node", interval=0.5)
    return [p for p, _, _ in procs]


def stop_enforcers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (each removes its chains), then SIGKILL after 10 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
