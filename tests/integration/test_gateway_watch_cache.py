"""The gateway's watch cache on a real API server: callers are served from it without a read, a Pod deleted or an
attempt ended loses access as soon as the watch says so, and a refusal the cache would make is confirmed first."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from gateway_attempts import make_attempt
from gateway_server import settings_for
from kubelet_double import run_pod

from longshot_testing import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_settings(namespace, tmp_path):
    # no identity cache: every request looks its caller up, so that the reads it makes are the watch cache's; a bare
    # heartbeat is written once (its status write reads the task again after a conflict, which is not a lookup)
    return settings_for(namespace, tmp_path, identity_cache_seconds=0.0, token_cache_seconds=600.0,
                        heartbeat_write_seconds=120.0)


@pytest.fixture
def attempt(core_v1, custom, namespace, gateway):
    return lambda **kw: make_attempt(core_v1, custom, namespace, gateway.url, **kw)


def progress(gateway: Any, a: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/progress", json={"heartbeat": True}, headers=a.headers, timeout=30)


def reads_of(gateway: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The gateway's reads of Pods, AgentTasks and BuildRequests from the API server, from now on (its own adapter,
    spied on: the calls still go to the API server)."""
    kube, seen = gateway.gateway.cluster.kube, []
    get_pod, get = kube.get_pod, kube.get

    def spy_pod(ns: str, name: str) -> Any:
        seen.append(f"Pod {name}")
        return get_pod(ns, name)

    def spy(kind: str, ns: str, name: str) -> Any:
        seen.append(f"{kind} {name}")
        return get(kind, ns, name)

    monkeypatch.setattr(kube, "get_pod", spy_pod)
    monkeypatch.setattr(kube, "get", spy)
    return seen


def cached(gateway: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    cache = gateway.gateway.cluster.cache
    assert cache is not None, "the gateway runs without its watch cache"
    held, obj = cache.get(kind, namespace, name)
    return obj if held else None


def test_a_running_attempt_is_served_from_the_watch_cache_without_an_api_read(gateway, attempt, core_v1, namespace,
                                                                              monkeypatch):
    a = attempt()
    pod = a.pod["metadata"]["name"]
    run_pod(core_v1, namespace, pod)
    wait_for(lambda: (cached(gateway, "Pod", namespace, pod) or {}).get("status", {}).get("phase") == "Running"
             and cached(gateway, "AgentTask", namespace, a.name) and cached(gateway, "BuildRequest", namespace, "b1"),
             30, "the watch cache to hold the running Pod, its live task and its build")
    assert progress(gateway, a).status_code == 202  # its token reviewed (and cached for the test's 600 s)
    seen = reads_of(gateway, monkeypatch)

    for _ in range(5):
        r = progress(gateway, a)
        assert r.status_code == 202, r.text

    assert seen == [], f"the gateway read {seen} from the API server"


def test_a_deleted_pod_and_an_ended_attempt_lose_access_when_the_watch_says_so(gateway, attempt, core_v1, custom,
                                                                              namespace):
    a, b = attempt(), attempt(task="b1-t2")
    for x in (a, b):
        run_pod(core_v1, namespace, x.pod["metadata"]["name"])
        wait_for(lambda x=x: cached(gateway, "AgentTask", namespace, x.name), 30, "the live tasks in the cache")
        assert progress(gateway, x).status_code == 202

    core_v1.delete_namespaced_pod(a.pod["metadata"]["name"], namespace, grace_period_seconds=0)
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", b.name, {
        "status": {"attempts": [{"number": 1, "pod": b.pod["metadata"]["name"], "podUID": b.pod["metadata"]["uid"],
                                 "endTime": "2026-11-28T00:00:00Z"}]}})

    def refused(x: Any) -> httpx.Response | None:
        r = progress(gateway, x)
        return r if r.status_code != 202 else None

    r = wait_for(lambda: refused(a), 30, "the deleted Pod's requests to be refused")
    assert r.status_code == 403 and "no longer exists" in r.json()["error"], r.text
    r = wait_for(lambda: refused(b), 30, "the ended attempt's requests to be refused")
    assert r.status_code == 403 and "has ended" in r.json()["error"], r.text
    assert cached(gateway, "AgentTask", namespace, b.name) is None  # an ended task is not kept


def test_a_refusal_from_a_stale_cache_is_confirmed_with_the_api_server_first(gateway, attempt, core_v1, namespace,
                                                                             monkeypatch):
    a = attempt()
    run_pod(core_v1, namespace, a.pod["metadata"]["name"])
    task = wait_for(lambda: cached(gateway, "AgentTask", namespace, a.name), 30, "the live task in the cache")
    # the cache says the attempt ended (as a watch would that had seen a write the API server has not got: here,
    # written into the cache), the API server says it runs: the caller is served, after reading it afresh
    stale = copy.deepcopy(task)
    stale["status"]["attempts"][-1]["endTime"] = "2026-11-28T00:00:00Z"
    stale["status"]["attempts"].append({"number": 2, "pod": "other"})
    gateway.gateway.cluster.cache.stores["AgentTask"].apply("MODIFIED", stale)
    seen = reads_of(gateway, monkeypatch)

    r = progress(gateway, a)

    assert r.status_code == 202, r.text
    assert f"AgentTask {a.name}" in seen, seen
