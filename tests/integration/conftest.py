"""The integration tier: a real etcd + kube-apiserver + kube-controller-manager for the whole session.

The binaries come from ``hack/k8s-binaries.sh`` (built or downloaded once, then cached). The session's
kubeconfig is the only one these tests use; a guard refuses anything that is not this loopback cluster.
When a test fails the components' logs are copied to ``_artifacts/control-plane/``. Under pytest-xdist (make
test-integration) each worker's session has its own control plane, and its logs go to a folder of the worker's
name (``_artifacts/control-plane/gw0/``, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from longshot_testing import controlplane, durations

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "_artifacts"
# each pytest-xdist worker (make test-integration) has its own control plane, and keeps its logs apart
CP_LOGS = ARTIFACTS / "control-plane" / os.environ.get("PYTEST_XDIST_WORKER", "")
CRD_NAMES = ("buildrequests.longshot.dev", "agenttasks.longshot.dev", "mergejobs.longshot.dev",
             "buildschedules.longshot.dev")


def _bin_dir() -> Path:
    result = subprocess.run(["bash", str(ROOT / "hack" / "k8s-binaries.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"hack/k8s-binaries.sh failed; integration tests need its binaries:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


UNCLOSED_TLS = "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
"""A TLS connection to a test control plane's API server closed by the garbage collector, reported as unraisable in
whichever test's setup the collector happened to run (CI of 2026-11-29: in a test that makes no Python connection at
all, with ``filterwarnings = error``). Leaked by some test's or in-process operator's API client, it says nothing of
the test it lands in; every other warning stays an error."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", UNCLOSED_TLS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        item.session.config.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[controlplane.ControlPlane]:
    # a short path: unix socket paths and the logs are easier to find
    workdir = tmp_path_factory.mktemp("cp")
    # the kubelets a test serves (log_kubelet.py: a Pod log that grows) present the API server's own certificate,
    # signed by the tier's CA; no other kubelet runs in this tier
    cp = controlplane.ControlPlane(workdir=workdir, bin_dir=_bin_dir(), extra_apiserver_flags=(
        f"--kubelet-certificate-authority={workdir / 'pki' / 'ca.crt'}",))
    try:
        cp.start()
    except controlplane.ControlPlaneError:
        cp.keep_logs(CP_LOGS)
        raise
    old_kubeconfig = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   *[f"crd/{n}" for n in CRD_NAMES])
        cp.kubectl("api-resources", "--api-group=longshot.dev")  # refreshes kubectl's discovery cache
        yield cp
    finally:
        if request.session.config.stash.get(_FAILED, False):
            dest = cp.keep_logs(CP_LOGS)
            print(f"\ncontrol-plane logs kept in {dest}")
        cp.stop()
        if old_kubeconfig is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old_kubeconfig


def _guard(cp: controlplane.ControlPlane, client: kubernetes.client.ApiClient) -> None:
    host = client.configuration.host
    if host != cp.server or not re.match(r"^https://127\.0\.0\.1:\d+$", host):
        raise RuntimeError(f"refusing to run integration tests against {host}: not the test control plane")


@pytest.fixture(scope="session", autouse=True)
def sample_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real git repository (file://, branch main) that builds without a repository of their own point at."""
    import sample_repo

    url = sample_repo.make(tmp_path_factory.mktemp("repo"))
    old = os.environ.get("LONGSHOT_TEST_REPOSITORY")
    os.environ["LONGSHOT_TEST_REPOSITORY"] = url
    yield url
    if old is None:
        os.environ.pop("LONGSHOT_TEST_REPOSITORY", None)
    else:
        os.environ["LONGSHOT_TEST_REPOSITORY"] = old


@pytest.fixture(scope="session")
def api_client(control_plane: controlplane.ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    _guard(control_plane, client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def core_v1(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


def _release_builds(client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Drop the clean-up finalizer of the namespace's BuildRequests: the test's operator is stopped by now, and
    nothing would remove it, so the namespace would stay Terminating for the rest of the session."""
    custom = kubernetes.client.CustomObjectsApi(client)
    try:
        builds = custom.list_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests")["items"]
    except kubernetes.client.ApiException:
        return  # no CRDs in this test
    for b in builds:
        if b["metadata"].get("finalizers"):
            try:
                custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests",
                                                      b["metadata"]["name"], {"metadata": {"finalizers": None}})
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise


def _create_namespace(core_v1: kubernetes.client.CoreV1Api, name: str) -> None:
    core_v1.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "longshot.dev/test": "true",
    }}})


def _delete_namespace(core_v1: kubernetes.client.CoreV1Api, name: str) -> None:
    _release_builds(core_v1.api_client, name)
    try:
        core_v1.delete_namespace(name)
    except kubernetes.client.ApiException as e:  # already gone
        if e.status != 404:
            raise


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core_v1: kubernetes.client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, enforcing Pod Security ``restricted``; deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    _create_namespace(core_v1, name)
    yield name
    _delete_namespace(core_v1, name)


@pytest.fixture
def another_namespace(request: pytest.FixtureRequest, core_v1: kubernetes.client.CoreV1Api
                      ) -> Iterator[Callable[[str], str]]:
    """``another_namespace(prefix)``: one more namespace for this test (another tenant), ``<prefix>-<hash>``, as the
    ``namespace`` fixture's (Pod Security ``restricted``); deleted afterwards."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
        _create_namespace(core_v1, name)
        made.append(name)
        return name

    yield make
    for name in made:
        _delete_namespace(core_v1, name)


@pytest.fixture
def operator_watching(control_plane: controlplane.ControlPlane, operator_env: dict[str, str]
                      ) -> Iterator[Callable[..., object]]:
    """``operator_watching(*namespaces)``: the operator in-process with kopf's runner, as the ``operator`` fixture's,
    watching those namespaces (a test sets ``operator_env`` first); stopped afterwards. A fixture that uses it asks
    for the namespaces first, so that the operator stops before they are deleted."""
    from kopf.testing import KopfRunner

    import longshot.controllers  # noqa: F401  (registers the handlers)

    runners: list[KopfRunner] = []

    def start(*namespaces: str) -> object:
        args = ["run", "--standalone", *(a for ns in namespaces for a in ("--namespace", ns)),
                "-m", "longshot.controllers"]
        runner = KopfRunner(args, timeout=60)
        runner.__enter__()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.__exit__(None, None, None)
        assert runner.exception is None, runner.output


@pytest.fixture
def kubectl(control_plane: controlplane.ControlPlane):  # type: ignore[no-untyped-def]
    """``kubectl(*args, input=None, check=True)`` against the test control plane."""
    return control_plane.kubectl


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.stash.get(_FAILED, False) and ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)


LOOPBACK = "127.0.0.0/8,::1/128"
"""The egress policy's allowed ranges of the tier's operators and gateways (``core.egress``)."""


@pytest.fixture
def gateway_settings(namespace: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings of the test's gateway (its namespace holds the price table); tests may replace fields."""
    from gateway_server import settings_for

    return settings_for(namespace, tmp_path)


@pytest.fixture
def gateway(control_plane: controlplane.ControlPlane, gateway_settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The real longshot-gateway for this test, in-process (see gateway_server.py); ``.url`` is its address.
    Agent Pods of the operator fixtures reach git and the model through it."""
    from gateway_server import GatewayThread

    with GatewayThread(control_plane.kubeconfig, gateway_settings) as g:
        yield g


@pytest.fixture
def operator_env(namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gateway) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """LONGSHOT_* settings of the operator under test; tests may change them before it starts."""
    env = {"LONGSHOT_NAMESPACE": namespace, "LONGSHOT_MAX_WORKERS": "50", "LONGSHOT_GATEWAY_URL": gateway.url,
           "LONGSHOT_WORKSPACE_DIR": str(tmp_path / "operator-workspaces"),
           "LONGSHOT_METRICS_PORT": str(controlplane.free_port()),
           "LONGSHOT_WEBHOOK_PORT": str(controlplane.free_port()),
           "LONGSHOT_LEASE_DURATION_SECONDS": "4", "LONGSHOT_LEASE_RENEW_SECONDS": "1",
           # the tier's git and tracker servers listen on loopback: listed, as an installation lists its own
           "LONGSHOT_EGRESS_ALLOWED_CIDRS": LOOPBACK}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def operator(control_plane: controlplane.ControlPlane, namespace: str, operator_env: dict[str, str]
             ) -> Iterator[object]:
    """The operator, in-process with kopf's runner, watching only this test's namespace."""
    from kopf.testing import KopfRunner

    import longshot.controllers  # noqa: F401  (registers the handlers)

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "longshot.controllers"],
                    timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output


@pytest.fixture
def kubelet(api_client: kubernetes.client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[object]:
    """Runs every agent Pod of the namespace as a local process (see process_kubelet.py)."""
    from process_kubelet import ProcessKubelet

    with ProcessKubelet(api_client, namespace, tmp_path / "kubelet") as k:
        yield k


@pytest.fixture
def operator_process(control_plane, namespace, tmp_path, gateway):
    procs = []

    def start(identity: str = "replica-0"):
        """Start ``python -m longshot operator`` as a real process (so that it can be SIGKILLed)."""
        log = open(tmp_path / f"operator-{len(procs)}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "LONGSHOT_NAMESPACE": namespace,
               "POD_NAME": identity, "LONGSHOT_GIT_AUTHOR_NAME": identity, "LONGSHOT_GATEWAY_URL": gateway.url,
               "LONGSHOT_METRICS_PORT": "0", "LONGSHOT_LEASE_DURATION_SECONDS": "4",
               "LONGSHOT_LEASE_RENEW_SECONDS": "1", "LONGSHOT_WORKSPACE_DIR": str(tmp_path / f"ws-{identity}"),
               "LONGSHOT_EGRESS_ALLOWED_CIDRS": LOOPBACK}
        p = subprocess.Popen([sys.executable, "-m", "longshot", "operator", "--namespace", namespace],
                             stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append((p, log))
        return p

    yield start
    for p, log in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
    for f in sorted(Path(tmp_path).glob("operator-*.log")):
        print(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])


# Files go to the xdist workers longest first, by the seconds they last took (tests/integration/durations.json,
# longshot_testing.durations); the Makefile passes --no-loadscope-reorder, since xdist's own order (by number of
# tests) puts a one-test file of minutes last, where it alone decides when the tier ends.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = ROOT / "tests"
    key = {id(item): Path(str(item.fspath)).resolve().relative_to(tests_dir).as_posix() for item in items}
    order = durations.longest_first((key[id(i)] for i in items), durations.load(DURATIONS))
    rank = {p: n for n, p in enumerate(order)}
    items.sort(key=lambda item: rank[key[id(item)]])  # stable: a file's own tests keep their order


DURATIONS = Path(__file__).with_name("durations.json")
