"""Who may use the gateway: a running agent Pod's own token, checked by TokenReview on the real API server."""

from __future__ import annotations

import httpx
import pytest
from gateway_attempts import make_attempt, pod_token
from kubelet_double import finish_pod, run_pod

from longshot_testing import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def attempt(core_v1, custom, namespace, gateway):
    return lambda **kw: make_attempt(core_v1, custom, namespace, gateway.url, **kw)


def progress(gateway, headers, message="working"):
    return httpx.post(f"{gateway.url}/progress", json={"message": message}, headers=headers, timeout=30)


def test_a_running_attempt_reports_progress_onto_its_agent_task(gateway, attempt, custom, core_v1, namespace):
    a = attempt()
    run_pod(core_v1, namespace, a.pod["metadata"]["name"])

    r = progress(gateway, a.headers, "running the tests")

    assert r.status_code == 202 and r.json() == {"written": True}
    p = a.progress(custom)
    assert p["message"] == "running the tests" and p["attempt"] == 1 and p["lastHeartbeat"]
    assert (p["tokens"], p["calls"], p["cost"]) == (0, 0, 0)


@pytest.mark.parametrize("how", ["none", "garbage", "other-audience", "unbound"])
def test_no_token_or_a_wrong_one_is_401(gateway, attempt, core_v1, namespace, how):
    a = attempt()
    headers = {
        "none": {},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "other-audience": {"Authorization": f"Bearer {pod_token(core_v1, namespace, a.pod, audience='other')}"},
        "unbound": {"Authorization": f"Bearer {pod_token(core_v1, namespace, a.pod, bound=False)}"},
    }[how]

    for r in (progress(gateway, headers),
              httpx.post(f"{gateway.url}/model/openai/chat/completions", json={}, headers=headers, timeout=30),
              httpx.get(f"{gateway.url}/git/{namespace}/b1.git/info/refs?service=git-upload-pack", headers=headers,
                        timeout=30)):
        assert r.status_code == 401, r.text
    assert "token" in r.text


def test_a_finished_pod_is_403(gateway, attempt, core_v1, namespace):
    a = attempt()
    finish_pod(core_v1, namespace, a.pod["metadata"]["name"], exit_code=0)

    # the Pod is read from the gateway's watch cache: refused once the watch brings the Pod's new phase
    r = wait_for(lambda: (lambda r: r if r.status_code != 202 else None)(progress(gateway, a.headers)), 30,
                 "the finished Pod's requests to be refused")
    assert r.status_code == 403 and "Succeeded" in r.json()["error"]


def test_a_deleted_pod_is_403(gateway, attempt, core_v1, namespace):
    a = attempt()
    b = attempt(task="b1-t2")
    assert progress(gateway, a.headers).status_code == 202  # a's token review is now cached, b's is not
    for x in (a, b):
        core_v1.delete_namespaced_pod(x.pod["metadata"]["name"], namespace, grace_period_seconds=0)
    wait_for(lambda: not core_v1.list_namespaced_pod(namespace).items, 30, "the Pods to be gone")

    def refused(x):
        r = progress(gateway, x.headers)
        return r if r.status_code != 202 else None

    for x in (a, b):
        # a's identity is cached for identity_cache_seconds: it loses access within that window
        r = wait_for(lambda x=x: refused(x), 30, "the deleted Pod's requests to be refused")
        assert r.status_code == 403 and "no longer exists" in r.json()["error"], r.text


def test_a_pod_that_is_not_an_agent_attempt_is_403(gateway, core_v1, namespace):
    plain = core_v1.create_namespaced_pod(namespace, {"metadata": {"name": "plain"}, "spec": {
        "automountServiceAccountToken": False, "containers": [{
            "name": "c", "image": "busybox", "securityContext": {
                "runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]}})
    pod = {"metadata": {"name": plain.metadata.name, "uid": plain.metadata.uid}}
    token = pod_token(core_v1, namespace, pod)

    r = progress(gateway, {"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and "not a Longshot agent Pod" in r.json()["error"]


def test_an_attempt_may_not_reach_another_builds_repository(gateway, attempt, namespace):
    a = attempt()
    r = httpx.get(f"{gateway.url}/git/{namespace}/other.git/info/refs?service=git-upload-pack", headers=a.headers,
                  timeout=30)
    assert r.status_code == 403 and f"belongs to build {namespace}/b1" in r.text
    r = httpx.get(f"{gateway.url}/git/elsewhere/b1.git/info/refs?service=git-upload-pack", headers=a.headers,
                  timeout=30)
    assert r.status_code == 403
