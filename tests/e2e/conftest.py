"""The e2e tier: a real single-node cluster (``longshot_testing.cluster``) with the chart installed.

The session brings the cluster up (binaries, images and the cluster itself are cached or reused) and
down again, unless it was already running (``make cluster-up`` or ``make demo``): then it is left as it
was found. Tests skip only when this machine cannot run containers at all (not root, no containerd...);
anything else that fails to start is an error. On failure the components' logs go to
``_artifacts/e2e-cluster/``.

Which cluster: ``LONGSHOT_E2E_CLUSTER=local`` (the local one, above), ``kind`` (a kind cluster made with
pytest-kind's ``KindCluster``, see ``kind.py``; skipped with the reason when kind, a working Docker engine or
pytest-kind is missing), or unset/``auto``: the local cluster, else kind when it is available, else skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from longshot_testing import cluster as lc

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "_artifacts" / "e2e-cluster"
SYSTEM_NS = "longshot-system"
IMAGES = ("pause", "operator", "agent")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """The one polling helper: ``predicate()`` until truthy, else fail naming ``what``."""
    return lc.cpl.wait_until(predicate, timeout, what, interval)


def _run(*argv: str) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


_FAILED = pytest.StashKey[bool]()
_NETPOL = pytest.StashKey[str]()
"""What enforced NetworkPolicy on the session's cluster (``netpol_engine=...``), for the terminal summary."""


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """``make e2e-kind`` (and ``make e2e``) end by saying which engine enforced the NetworkPolicy tests."""
    line = config.stash.get(_NETPOL, "")
    if line:
        terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        item.session.config.stash[_FAILED] = True
    return report


def _cluster_mode() -> str:
    """``local`` or ``kind``, from ``$LONGSHOT_E2E_CLUSTER``; skips when the requested kind cannot run."""
    from . import kind

    requested = os.environ.get("LONGSHOT_E2E_CLUSTER", "auto").strip().lower() or "auto"
    if requested not in ("auto", "local", "kind"):
        raise pytest.UsageError(f"LONGSHOT_E2E_CLUSTER={requested!r}: expected local, kind or auto")
    if requested == "kind":
        reason = kind.unavailable()
        if reason:
            pytest.skip(f"LONGSHOT_E2E_CLUSTER=kind but kind cannot run here: {reason}")
        return "kind"
    try:
        lc.preflight()
    except lc.ClusterUnavailable as e:
        if requested == "local":
            pytest.skip(f"this machine cannot run the e2e cluster: {e}")
        reason = kind.unavailable()
        if reason:
            pytest.skip(f"this machine cannot run the e2e cluster: {e}; nor kind: {reason}")
        return "kind"
    return "local"


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[lc.LocalCluster]:
    mode = _cluster_mode()
    bin_dir = Path(_run("bash", str(ROOT / "hack" / "k8s-binaries.sh")))
    archives = [Path(_run("bash", str(ROOT / "hack" / "images.sh"), "path", name)) for name in IMAGES]
    if mode == "kind":
        from . import kind

        nodes = kind.nodes_wanted()
        k = kind.KindE2ECluster(bin_dir=bin_dir, images=archives,
                                agent_image=_run("bash", str(ROOT / "hack" / "images.sh"), "ref", "agent"),
                                nodes=nodes, name=kind.MULTINODE_NAME if nodes == 3 else kind.CLUSTER_NAME,
                                engine=kind.netpol_engine())
        try:
            k.up()
        except BaseException:
            k.keep_logs(ARTIFACTS)
            k.down()
            raise
        k.guard()
        request.session.config.stash[_NETPOL] = k.netpol_summary
        try:
            yield k  # type: ignore[misc]  # the same interface as LocalCluster, as far as the tests use it
        finally:
            if request.session.config.stash.get(_FAILED, False):
                print(f"\ne2e kind cluster logs kept in {k.keep_logs(ARTIFACTS)}")
            k.down()
        return
    c = lc.LocalCluster(bin_dir=bin_dir, images=archives)
    try:
        c.up()
    except (lc.ClusterError, lc.cpl.ControlPlaneError, TimeoutError):
        c.keep_logs(ARTIFACTS)
        c.down()
        raise
    guard(c)
    try:
        yield c
    finally:
        enforced = (c.state().get("networkPolicy") or {}).get("enforcer")  # once a test asked for it
        if enforced:
            request.session.config.stash[_NETPOL] = f"netpol_engine={enforced} (local cluster)"
        if request.session.config.stash.get(_FAILED, False):
            print(f"\ne2e cluster logs kept in {c.keep_logs(ARTIFACTS)}")
        if not c.reused:
            c.down()


def guard(c: lc.LocalCluster) -> None:
    """Refuse to run against anything but the local test cluster."""
    server = json.loads(c.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    if not re.fullmatch(rf"https://{re.escape(lc.BRIDGE_IP)}:\d+", server):
        raise RuntimeError(f"refusing to run e2e tests against {server}: not the local test cluster")


def is_kind(cluster: object) -> bool:
    return not isinstance(cluster, lc.LocalCluster)


def host_address(cluster: object) -> str:
    """This host's address as Pods reach it: the local cluster's bridge, or the gateway of kind's network."""
    return str(getattr(cluster, "host_address", lc.BRIDGE_IP)) if is_kind(cluster) else lc.BRIDGE_IP


def host_reaches_pods(cluster: object, why: str) -> None:
    """Skip a test that connects from this host to Pod addresses where it cannot: on kind the host routes to the
    nodes' podCIDRs (``kind.route_pods``), unless another cluster's bridge on this host holds the prefix."""
    if is_kind(cluster) and not getattr(cluster, "pods_routed", False):
        pytest.skip(f"this host does not route to the kind Pod network ({why}): a local cluster's bridge holds it")


def node_sh(cluster: object, node: str, script: str) -> str:
    """``script``'s output, run by ``sh`` on the node ``node`` (a Pod's ``spec.nodeName``): this host for the local
    cluster, the kind node's container (``docker exec``) for kind, where the node's cgroups and its Pods'
    processes are."""
    if is_kind(cluster):
        from .kind import NodeShell

        return NodeShell(node).sh(script).stdout
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script!r} failed ({result.returncode}): {result.stderr}")
    return result.stdout


@pytest.fixture(scope="session")
def kubectl(cluster: lc.LocalCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    return cluster.kubectl


def kget(kubectl, *args: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    result = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


LISTENER_PORT = 8000


def listener_pod(image: str, name: str = "listener") -> dict[str, Any]:
    """A Pod ``name`` that listens on :data:`LISTENER_PORT` (Pod Security ``restricted``): a neighbour Pod in the
    cluster's Pod range, for the tests of what reaches what."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "listener"}},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "listener", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python", "-m", "http.server", "--bind", "0.0.0.0",
                                                 str(LISTENER_PORT)],
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def host_connects(ip: str, port: int, timeout: float = 3.0) -> bool:
    """Whether this host (the node: its traffic to Pods passes no Pod's policy) reaches ``ip:port``."""
    try:
        socket.create_connection((ip, port), timeout).close()
        return True
    except OSError:
        return False


def git_allow(cluster: Any) -> list[dict[str, Any]]:
    """The chart's ``egress.allow`` entry of the cluster's git server: git and forge, on its port only."""
    from longshot.core import egress

    target = egress.parse(cluster.git_url + "/r.git")
    return [{"cidr": f"{target.host}/32", "purposes": ["git", "forge"], "ports": [target.port]}]


LOCAL_IMAGES = ("--set", "operator.image.repository=docker.io/library/longshot-operator",
                "--set", "operator.image.tag=dev", "--set", "operator.image.pullPolicy=Never",
                "--set", "agent.image.repository=docker.io/library/longshot-agent",
                "--set", "agent.image.tag=dev", "--set", "agent.image.pullPolicy=Never")
"""The chart's image values for the images ``hack/images.sh`` built and the cluster imported (no registry)."""


def install_chart(cluster: lc.LocalCluster, *, replicas: int = 1, timeout: str = "5m",
                  extra: Sequence[str] = (), chart: str = str(ROOT / "charts" / "longshot"),
                  images: Sequence[str] = LOCAL_IMAGES, release: str = "longshot",
                  namespace: str = SYSTEM_NS) -> None:
    """``helm upgrade --install`` the chart (``chart``: this checkout's, or ``oci://...`` with ``--version`` in
    ``extra``) as ``release`` in ``namespace`` (default longshot-system) with ``images`` (default the locally built
    ones; ``()``: the chart's defaults) and ``operator.replicas=replicas``; waits for the rollout (``--wait``).
    The CRDs are applied first: Helm installs them once and never upgrades them, and a kept cluster may hold
    older ones."""
    crds = subprocess.run([str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "apply",
                           "--server-side", "--force-conflicts", "-f", str(ROOT / "charts" / "longshot" / "crds")],
                          capture_output=True, text=True)
    assert crds.returncode == 0, crds.stderr
    helm = subprocess.run(
        [str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", "upgrade", "--install", release,
         chart, "--namespace", namespace, *images,
         "--set", f"operator.replicas={replicas}", "--set", "podDisruptionBudget.enabled=false",
         "--set", "gateway.replicas=1", "--set", "gateway.podDisruptionBudget.enabled=false",
         # the operator keeps the agent NetworkPolicy in build namespaces; DNS is dnsmasq on the local cluster's
         # bridge (kind: CoreDNS, the chart's default selectors)
         "--set", f"networkPolicy.namespaces={{{namespace}}}",
         *(() if is_kind(cluster) else ("--set", f"networkPolicy.dns.peers[0].ipBlock.cidr={lc.BRIDGE_IP}/32")),
         # the local cluster's API server listens on a port of its own on the bridge (kind's: 6443)
         *(() if is_kind(cluster) else ("--set-json", "egress.networkPolicy.apiServerPorts="
                                        + json.dumps(cluster.api_server_ports()))),
         # the metrics and probe port from any Pod (the chart's default) and, on kind, from this host too: tests
         # and a Prometheus on the host connect to the operator's Pod IP from kind's network gateway, which is no
         # Pod and no node (the local cluster's host is its node, whose traffic the policy lets through)
         *(("--set-json", "metrics.allowedFrom=" + json.dumps(
             [{"namespaceSelector": {}}, {"ipBlock": {"cidr": f"{host_address(cluster)}/32"}}]))
           if is_kind(cluster) else ()),
         # the forge listens on the bridge, inside the private ranges the egress policy refuses by default:
         # listed for git and forge on its port, as an installation lists its own git server
         "--set-json", f"egress.allow={json.dumps(git_allow(cluster))}",
         # every test has its own namespace: the operator and the gateway read the git Secret in any (a test
         # cluster; the chart's default reads Secrets only in rbac.secrets.namespaces)
         "--set", "rbac.secrets.clusterWide=true",
         "--set", "prompts.enabled=false", *extra, "--wait", f"--timeout={timeout}"],
        capture_output=True, text=True, env={**os.environ, "HELM_CACHE_HOME": str(cluster.workdir / "helm")})
    assert helm.returncode == 0, helm.stderr + install_diagnosis(cluster, namespace)


def install_diagnosis(cluster: Any, namespace: str) -> str:
    """What a failed ``helm --wait`` leaves to read, for the failure's message (CI keeps only the output): the
    namespace's Pods with their conditions and container states, its last Events and the last lines of each
    container's log (the local cluster's kubelet writes them under /var/log/pods)."""
    def kubectl(*args: str) -> str:
        r = subprocess.run([str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
                           capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr)[-6000:]

    parts = ["\n--- pods", kubectl("-n", namespace, "get", "pods", "-o", "wide"),
             "--- pod states", kubectl("-n", namespace, "get", "pods", "-o",
                                       "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}"
                                       " {.status.containerStatuses}{\"\\n\"}{end}"),
             "--- events", kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp")]
    for log in sorted(Path("/var/log/pods").glob(f"{namespace}_*/*/*.log")) if not is_kind(cluster) else ():
        try:
            tail = log.read_text(errors="replace").splitlines()[-25:]
        except OSError as e:
            tail = [f"unreadable: {e}"]
        parts += [f"--- {log}", *tail]
    return "\n".join(parts)


def operator_pods(kubectl) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The operator's Pods that are not being deleted."""
    pods = kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", "app.kubernetes.io/component=operator") or {}
    return [p for p in pods.get("items", []) if not p["metadata"].get("deletionTimestamp")]


def install_operator(cluster: lc.LocalCluster, kubectl,  # type: ignore[no-untyped-def]
                     extra: Sequence[str] = ()) -> str:
    """The chart installed in longshot-system (``extra``: more ``helm`` arguments) with the locally built images;
    the operator and the gateway restarted on them and Ready."""
    for ns in (SYSTEM_NS,):
        kubectl("create", "namespace", ns, check=False)
        kubectl("label", "--overwrite", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    install_chart(cluster, replicas=1, extra=extra)
    # the image tag is reused across builds: restart so the operator and the gateway run the image just imported
    kubectl("-n", SYSTEM_NS, "rollout", "restart", "deployment/longshot", "deployment/longshot-gateway")
    kubectl("-n", SYSTEM_NS, "rollout", "status", "deployment/longshot", "--timeout=180s", timeout=200)
    kubectl("-n", SYSTEM_NS, "rollout", "status", "deployment/longshot-gateway", "--timeout=180s", timeout=200)
    return SYSTEM_NS


@pytest.fixture(scope="session")
def operator(cluster: lc.LocalCluster, kubectl) -> str:  # type: ignore[no-untyped-def]
    """The chart installed in longshot-system with the locally built images; the operator Ready."""
    return install_operator(cluster, kubectl)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace per test, enforcing Pod Security ``restricted``; deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"e2e-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest", "longshot.dev/test=true")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def git_credentials(cluster: object, namespace: str) -> tuple[str, str]:
    """The git server's account for a test namespace's ``git-token`` Secret: the local cluster's forge account, or
    on kind (whose git daemon takes none) a placeholder the merge's secret scan still treats as a credential."""
    if hasattr(cluster, "git_credentials"):
        user, password = cluster.git_credentials
        return str(user), str(password)
    return "e2e", f"kind-placeholder-{hashlib.sha256(namespace.encode()).hexdigest()[:24]}"


@pytest.fixture
def git_repo(cluster: lc.LocalCluster, namespace: str, tmp_path: Path) -> str:
    """A bare repository on the cluster's forge (which needs a credential), with one commit on main, and the
    namespace's ``git-token`` Secret with the forge's account; the repository's URL as Pods see it."""
    bare = cluster.git_root / f"{namespace}.git"
    subprocess.run(["rm", "-rf", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    work = tmp_path / "repo"
    work.mkdir()
    (work / "README.md").write_text("e2e\n")
    (work / "Makefile").write_text("test:\n\ttrue\n")
    git = ["git", "-C", str(work), "-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    subprocess.run([*git, "push", "-q", str(bare), "main"], check=True)
    # kind's git daemon takes no credential, but the Secret's password is still a known credential the merge's
    # secret scan looks for in every diff: a one-letter placeholder matched ordinary code (`for x in xs`)
    user, password = git_credentials(cluster, namespace)
    kubectl = cluster.kubectl
    kubectl("-n", namespace, "create", "secret", "generic", "git-token", f"--from-literal=username={user}",
            f"--from-literal=password={password}")
    return f"{cluster.git_url}/{namespace}.git"


def apply(kubectl, namespace: str, *objects: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                     "items": list(objects)}))


def script_configmap(name: str, script: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"script.yaml": script}}


def build_request(name: str, repo_url: str, *, script: str, memory_limit: str = "512Mi", cpu_limit: str = "1",
                  max_attempts: int = 3, finalization: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest", "metadata": {"name": name},
        "spec": {
            "request": "e2e",
            "repository": {"url": repo_url, "baseBranch": "main", "credentialsSecret": "git-token"},
            "agent": {"backend": "scripted", "script": {"name": script}, "timeoutSeconds": 300,
                      "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"cpu": cpu_limit, "memory": memory_limit}}},
            "workers": {"max": 2},
            "retry": {"maxAttempts": max_attempts, "backoffSeconds": 1, "maxBackoffSeconds": 2},
            "reconciler": {"command": "make test", "intervalSeconds": 60},
            "finalization": {"enabled": finalization, "maxAttempts": 1},
            **spec,
        },
    }


def now() -> float:
    return time.monotonic()
