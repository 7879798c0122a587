"""The operator as the chart runs it: in-cluster, probed, serving its metrics."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from .conftest import host_reaches_pods, kget, operator_pods, wait_for

# the first test also waits for the session cluster (cold: image builds, several minutes)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_operator_runs_in_cluster_ready_and_serves_metrics(operator, cluster, kubectl) -> None:  # type: ignore[no-untyped-def]
    host_reaches_pods(cluster, "connects to the operator Pod's IP from the host")
    # the one operator Pod not being deleted (an earlier test's replicas may still be terminating), once Ready
    def ready_pod() -> dict[str, Any] | None:
        pods = operator_pods(kubectl)
        statuses = (pods[0].get("status") or {}).get("containerStatuses") or [] if len(pods) == 1 else []
        return pods[0] if statuses and all(c["ready"] for c in statuses) else None

    pod = wait_for(ready_pod, 180, "one operator Pod, not being deleted, to pass its readiness probe")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0, status
    # the restricted namespace admitted it: non-root, read-only root filesystem
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]

    ip = pod["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "longshot_active_workers" in text and "longshot_tasks" in text
    # the metrics Service selects it
    endpoints = kget(kubectl, "-n", operator, "endpointslices", "-l", "kubernetes.io/service-name=longshot-metrics")
    addresses = [a for s in (endpoints or {}).get("items", []) for e in s.get("endpoints") or []
                 for a in e.get("addresses", [])]
    assert ip in addresses
