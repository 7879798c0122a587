"""The operator as the chart runs it: in-cluster, probed, serving its metrics."""

from __future__ import annotations

import urllib.request

import pytest

from .conftest import host_reaches_pods, kget, wait_for

# the first test also waits for the session cluster (cold: image builds, several minutes)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_operator_runs_in_cluster_ready_and_serves_metrics(operator, cluster, kubectl) -> None:  # type: ignore[no-untyped-def]
    host_reaches_pods(cluster, "connects to the operator Pod's IP from the host")
    pods = kget(kubectl, "-n", operator, "pods", "-l", "app.kubernetes.io/component=operator")
    assert pods and pods["items"], "no operator Pod"
    pod = pods["items"][0]
    wait_for(lambda: all(c["ready"] for c in (kget(kubectl, "-n", operator, "pod", pod["metadata"]["name"])
                                              or {}).get("status", {}).get("containerStatuses", [])),
             120, "the operator Pod to pass its readiness probe")
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
