"""``hack/bench_e2e.py``'s floor: its Pods are bound like the operator's own. The status the bench writes after
creating a floor Pod makes it its AgentTask's current attempt for the gateway (``gateway.identity.bound_attempt``),
and for that Pod only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import hack_modules
from longshot.api.agenttask import AgentTaskStatus
from longshot.gateway import identity

pytestmark = pytest.mark.unit

STARTED = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)


def created_pod(name: str = "floor-t000-a1", uid: str = "0b7c1b7e-1d6c-4a5e-9d43-2f1a3c4d5e6f") -> dict:
    """A Pod as the API server returns it from the create (the bench's builder output plus a UID)."""
    return {"metadata": {"name": name, "namespace": "bench-e2e", "uid": uid,
                         "labels": {"longshot.dev/attempt": "1", "app.kubernetes.io/component": "agent",
                                    "app.kubernetes.io/managed-by": "longshot-operator", "bench": "floor"}}}


def task_with(status: dict) -> dict:
    return {"metadata": {"name": "floor-t000", "namespace": "bench-e2e", "uid": "t-uid"},
            "spec": {"buildRef": {"name": "floor"}, "role": "worker"}, **status}


def test_the_recorded_attempt_binds_the_created_pod_at_the_gateway():
    bench = hack_modules.load("bench_e2e")
    pod = created_pod()
    status = bench.attempt_status(pod, STARTED)
    assert status == {"status": {"phase": "Running", "attempts": [
        {"number": 1, "pod": "floor-t000-a1", "startTime": "2026-11-25T03:00:00Z",
         "podUID": "0b7c1b7e-1d6c-4a5e-9d43-2f1a3c4d5e6f"}]}}
    AgentTaskStatus.model_validate(status["status"])  # what the CRD's schema is generated from
    assert identity.bound_attempt(task_with(status), "floor-t000-a1", pod["metadata"]["uid"]) == 1


def test_another_pod_of_the_same_name_is_refused():
    bench = hack_modules.load("bench_e2e")
    status = bench.attempt_status(created_pod(), STARTED)
    with pytest.raises(identity.Denied) as denied:
        identity.bound_attempt(task_with(status), "floor-t000-a1", "another-uid")
    assert denied.value.status == 403

