"""Warm sandboxes' manifests (runtime.pods): a build's worker template with nothing of any task in it, and the one
write that hands it to an attempt."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longshot.api import handoff as ho
from longshot.api import keys
from longshot.config import Settings
from longshot.core import warmpool
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="test", gateway_url="http://longshot-gateway.longshot-system.svc:8080",
                    tracing_endpoint="http://collector:4318")


def build_request(**agent: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
            "spec": {"request": "build a REST API",
                     "repository": {"url": "https://git.example.com/org/app.git", "credentialsSecret": "git-token"},
                     "agent": {"backend": "openai", "model": "m", "credentialsSecret": "llm-key",
                               "timeoutSeconds": 900, "env": [{"name": "FOO", "value": "bar"}], **agent}}}


def task(name: str = "app-t1", role: str = "worker", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {"buildRef": {"name": "app"}, "description": f"secret plan of {name}", "role": role, **spec}}


def warm(build: dict[str, Any] | None = None) -> dict[str, Any]:
    return pods.build_warm_pod(build or build_request(), SETTINGS, "app-warm-1", 300)


def test_a_warm_pod_holds_nothing_of_a_task_and_belongs_to_its_build():
    p = warm()
    meta = p["metadata"]
    assert "annotations" not in meta  # no task input: its downward-API file is empty until the claim
    assert not {keys.TASK, keys.ATTEMPT, keys.ROLE} & set(meta["labels"])
    assert meta["labels"][keys.BUILD] == "app" and meta["labels"]["app.kubernetes.io/component"] == "agent"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("BuildRequest", "app", "build-uid",
                                                                                  True)
    text = json.dumps(p)
    assert "secret plan" not in text and "git-token" not in text and "llm-key" not in text
    assert not any(v.get("secret") for v in p["spec"]["volumes"])
    (c,) = p["spec"]["containers"]
    assert "TRACEPARENT" not in {e["name"] for e in c["env"]}  # no attempt's trace either
    assert p["spec"]["automountServiceAccountToken"] is False


def test_a_warm_pod_shares_its_template_with_every_worker_attempt_of_the_build_and_only_those():
    p = warm()
    template = p["metadata"]["labels"][keys.WARM_TEMPLATE]
    assert template == warmpool.template_hash(pods.warm_spec(build_request(), SETTINGS))
    for t, attempt in ((task("app-t1"), 1), (task("app-t2", role="planner"), 3)):
        assert pods.attempt_template(pods.build_agent_pod(t, build_request(), SETTINGS, attempt)) == template
    # another image, or resources of its own: no claim (a miss), the attempt starts cold
    other = task("app-t3", agent={"resources": {"limits": {"memory": "4Gi"}}})
    assert pods.attempt_template(pods.build_agent_pod(other, build_request(), SETTINGS, 1)) != template
    assert warmpool.template_hash(pods.warm_spec(build_request(image="other:1"), SETTINGS)) != template
    # its deadline covers its wait: the claim lowers it
    assert p["spec"]["activeDeadlineSeconds"] == 900 + 300 + pods.WARM_MARGIN_SECONDS


def test_the_claim_is_one_fenced_patch_with_the_attempts_owner_labels_and_input():
    cold = pods.build_agent_pod(task("app-t1"), build_request(), SETTINGS, 2)
    body = pods.claim_patch(cold, "42", 1000)
    meta = body["metadata"]
    assert meta["resourceVersion"] == "42"
    assert meta["ownerReferences"] == cold["metadata"]["ownerReferences"]
    assert meta["ownerReferences"][0]["kind"] == "AgentTask" and meta["ownerReferences"][0]["controller"]
    assert meta["labels"][keys.WARM_CLAIM] == pods.pod_name("app-t1", 2) == cold["metadata"]["name"]
    assert (meta["labels"][keys.TASK], meta["labels"][keys.ATTEMPT]) == ("app-t1", "2")
    assert meta["annotations"] == {ho.TASK_INPUT_ANNOTATION: cold["metadata"]["annotations"][ho.TASK_INPUT_ANNOTATION]}
    assert json.loads(meta["annotations"][ho.TASK_INPUT_ANNOTATION])["task"] == "app-t1"
    assert body["spec"] == {"activeDeadlineSeconds": 1000}
