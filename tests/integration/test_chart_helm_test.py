"""The chart's ``helm test`` Pod runs ``charts/longshot/files/helm-test.py`` with the operator image. Here the same file
runs against the real API server (as a ServiceAccount with no RoleBinding at all, as the Pod's is) and a real
operator health endpoint (``longshot.metrics``): it passes when the operator is healthy and the CRDs are served, and
says why when the operator is not healthy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from longshot import metrics

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts" / "longshot" / "files" / "helm-test.py"

pytestmark = pytest.mark.integration


@pytest.fixture
def account_kubeconfig(control_plane, kubectl, namespace: str, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A kubeconfig of a new ServiceAccount that no Role or ClusterRole is bound to (the test Pod's)."""
    kubectl("create", "serviceaccount", "helm-test", "-n", namespace)
    token = kubectl("create", "token", "helm-test", "-n", namespace, "--duration=10m").stdout.strip()
    admin = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    config = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
              "users": [{"name": "helm-test", "user": {"token": token}}],
              "contexts": [{"name": "helm-test", "context": {"cluster": admin["clusters"][0]["name"],
                                                             "user": "helm-test"}}],
              "current-context": "helm-test"}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Health:
    url: str = ""
    healthy: bool = True


@pytest.fixture
def health() -> Iterator[Health]:
    """The operator's health endpoint, served by ``longshot.metrics`` as the operator serves it."""
    h = Health()
    server = metrics.start_http_server(0, addr="127.0.0.1", healthy=lambda: h.healthy)
    h.url = f"http://127.0.0.1:{server.port}/healthz"
    yield h
    server.close()


def run(kubeconfig: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "KUBECONFIG": str(kubeconfig),
                               "LONGSHOT_TEST_HEALTH_URL": url})


def test_the_helm_test_passes_with_a_healthy_operator_and_the_crds(account_kubeconfig: Path, health: Health) -> None:
    result = run(account_kubeconfig, health.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"ok   the operator is healthy ({health.url}: ok)",
        "ok   the CRDs are served: agenttasks, buildrequests, mergejobs"]


def test_the_helm_test_fails_when_the_operator_is_not_healthy(account_kubeconfig: Path, health: Health) -> None:
    health.healthy = False
    result = run(account_kubeconfig, health.url)
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAIL {health.url} answered 503"), result.stdout


def test_the_helm_test_fails_when_the_operator_does_not_answer(account_kubeconfig: Path) -> None:
    result = run(account_kubeconfig, "http://127.0.0.1:9/healthz")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL http://127.0.0.1:9/healthz did not answer"), result.stdout
