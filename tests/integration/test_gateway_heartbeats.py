"""A bare heartbeat costs the API server a status write at most every ``heartbeat_write_seconds``: the runner beats
every 30 s, the operator needs one per ``heartbeatTimeoutSeconds`` (300 s), and at a thousand agents one write per
beat was a third of the gateway's API writes (docs/benchmarks.md, the gateway at fleet scale)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_attempts import make_attempt
from kubelet_double import run_pod

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_settings(gateway_settings: Any) -> Any:
    return gateway_settings.replace(heartbeat_write_seconds=60.0)


def post(gateway: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{gateway.url}/progress", json=body, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_a_bare_heartbeat_is_written_once_a_minute_and_a_message_still_at_once(gateway, core_v1, custom, namespace):
    a = make_attempt(core_v1, custom, namespace, gateway.url)
    run_pod(core_v1, namespace, a.pod["metadata"]["name"])

    assert post(gateway, a.headers, {"heartbeat": True}) == {"written": True}  # the attempt's first: written
    first = a.progress(custom)["lastHeartbeat"]
    assert first
    rv = custom.get_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks",
                                             a.task["metadata"]["name"])["metadata"]["resourceVersion"]
    # the next beats within the minute are acknowledged and not written: the task does not change
    for _ in range(3):
        assert post(gateway, a.headers, {"heartbeat": True}) == {"written": False}
    again = custom.get_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks",
                                                a.task["metadata"]["name"])
    assert again["metadata"]["resourceVersion"] == rv
    # a progress message is news: written at once (with a heartbeat)
    assert post(gateway, a.headers, {"message": "running the tests"}) == {"written": True}
    p = a.progress(custom)
    assert p["message"] == "running the tests" and p["lastHeartbeat"] >= first
