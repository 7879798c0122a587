from __future__ import annotations

import json
from typing import Any

import pytest

from longshot.api.handoff import TaskInput
from longshot.config import Settings
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="test", gateway_url="http://longshot-gateway.longshot-system.svc:8080")


def agent_task(name: str = "app-t1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "ns", "uid": "task-uid"},
            "spec": {"buildRef": {"name": "app"}, "description": "add an endpoint", "role": "worker", **spec}}


def build_request(**agent: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
            "spec": {"request": "build a REST API",
                     "repository": {"url": "https://git.example.com/org/app.git", "baseBranch": "main",
                                    "credentialsSecret": "git-token"},
                     "agent": {"backend": "openai", "model": "m", "credentialsSecret": "llm-key",
                               "timeoutSeconds": 900, **agent}}}


def pod(task=None, build=None, attempt: int = 1) -> dict[str, Any]:
    return pods.build_agent_pod(task or agent_task(), build or build_request(), SETTINGS, attempt)


def container(p: dict[str, Any]) -> dict[str, Any]:
    (c,) = p["spec"]["containers"]
    return c


def test_restricted_security_context():
    p = pod()
    spec = p["spec"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                       "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    sc = container(p)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert "hostNetwork" not in spec and "hostPath" not in json.dumps(spec)


def test_container_basics():
    c = container(pod())
    assert c["name"] == "agent" and c["command"] == ["python", "-m", "longshot", "agent"]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["image"] == SETTINGS.agent_image
    assert container(pod(build=build_request(image="my/agent:1")))["image"] == "my/agent:1"


def test_deadline_from_task_then_build():
    assert pod()["spec"]["activeDeadlineSeconds"] == 900
    assert pod(agent_task(timeoutSeconds=60))["spec"]["activeDeadlineSeconds"] == 60


def test_resources_task_over_build_over_defaults():
    build = build_request(resources={"limits": {"memory": "2Gi"}, "requests": {"cpu": "500m"}})
    task = agent_task(resources={"limits": {"memory": "4Gi"}})
    r = container(pod(task, build))["resources"]
    assert r == {"requests": {"cpu": "500m", "memory": SETTINGS.default_memory_request},
                 "limits": {"cpu": SETTINGS.default_cpu_limit, "memory": "4Gi"}}
    r = container(pod(build=build))["resources"]
    assert r["limits"]["memory"] == "2Gi"
    r = container(pod())["resources"]
    assert r["limits"] == {"cpu": SETTINGS.default_cpu_limit, "memory": SETTINGS.default_memory_limit}


def test_volumes_and_mounts():
    p = pod(build=build_request(script={"name": "demo-script"}, prompts={"name": "my-prompts"}))
    volumes = {v["name"]: v for v in p["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(p)["volumeMounts"]}
    assert volumes["workspace"]["emptyDir"] == {"sizeLimit": SETTINGS.scratch_size}
    assert "sizeLimit" in volumes["tmp"]["emptyDir"]
    assert not mounts["/workspace"].get("readOnly") and not mounts["/tmp"].get("readOnly")
    for path, vol in [("/etc/longshot/script", "script"), ("/etc/longshot/prompts", "prompts"),
                      ("/etc/longshot/task", "task-input"), ("/var/run/secrets/longshot.dev/gateway", "gateway-token")]:
        assert mounts[path]["readOnly"] is True and mounts[path]["name"] == vol
    assert volumes["script"]["configMap"] == {"name": "demo-script", "defaultMode": 0o440}
    assert volumes["prompts"]["configMap"]["name"] == "my-prompts"


def test_an_unanswered_dns_lookup_is_sent_again_after_one_second_not_five():
    """Seen in the local cluster: an agent Pod's first lookup of the gateway, sent before the network policy
    enforcer knew the Pod, went unanswered, and glibc's 5 s default cost every lone Pod (planners, sweeps) 5.4 s
    to clone a tiny repository; with these options 1.4 s."""
    options = {o["name"]: o["value"] for o in pod()["spec"]["dnsConfig"]["options"]}
    assert options == {"timeout": "1", "attempts": "5"}
    assert "dnsPolicy" not in pod()["spec"]  # ClusterFirst: the cluster's DNS, these options added


def test_no_credential_secret_is_mounted_the_pod_gets_a_gateway_token_instead():
    p = pod()
    assert not [v for v in p["spec"]["volumes"] if "secret" in v]
    assert "git-token" not in json.dumps(p) and "llm-key" not in json.dumps(p)
    (token,) = [v for v in p["spec"]["volumes"] if v["name"] == "gateway-token"]
    assert token["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "longshot-gateway", "path": "token", "expirationSeconds": 900 + 600}}]
    assert p["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e["value"] for e in container(p)["env"]}
    assert env["LONGSHOT_GATEWAY_URL"] == SETTINGS.gateway_url
    assert env["LONGSHOT_GATEWAY_TOKEN_FILE"] == "/var/run/secrets/longshot.dev/gateway/token"
    short = pod(agent_task(timeoutSeconds=30))
    (token,) = [v for v in short["spec"]["volumes"] if v["name"] == "gateway-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 630


def test_a_build_cannot_point_the_agent_at_another_gateway():
    env = container(pod(build=build_request(env=[{"name": "LONGSHOT_GATEWAY_URL", "value": "http://evil"}])))["env"]
    assert [e["value"] for e in env if e["name"] == "LONGSHOT_GATEWAY_URL"] == [SETTINGS.gateway_url]


def test_optional_mounts_only_when_configured():
    build = build_request(credentialsSecret=None)
    build["spec"]["repository"].pop("credentialsSecret")
    names = {v["name"] for v in pod(build=build)["spec"]["volumes"]}
    assert names == {"workspace", "tmp", "task-input", "gateway-token"}
    without = pods.build_agent_pod(agent_task(), build, Settings(identity="t"), 1)
    assert {v["name"] for v in without["spec"]["volumes"]} == {"workspace", "tmp", "task-input"}
    assert "LONGSHOT_GATEWAY_URL" not in json.dumps(without)


def test_task_input_via_downward_api():
    p = pod(attempt=2)
    (item,) = next(v for v in p["spec"]["volumes"] if v["name"] == "task-input")["downwardAPI"]["items"]
    assert item == {"path": "task.json",
                    "fieldRef": {"fieldPath": "metadata.annotations['longshot.dev/task-input']"}}
    ti = TaskInput.model_validate(json.loads(p["metadata"]["annotations"]["longshot.dev/task-input"]))
    assert ti.task == "app-t1" and ti.build == "app" and ti.attempt == 2 and ti.role == "worker"
    assert ti.branch == "longshot/ns/app/app-t1" and ti.repository_url.endswith("app.git")
    assert ti.backend.name == "openai" and ti.backend.model == "m"
    assert ti.backend.max_turns == 50
    small = TaskInput.model_validate(json.loads(
        pod(build=build_request(maxTurns=8))["metadata"]["annotations"]["longshot.dev/task-input"]))
    assert small.backend.max_turns == 8  # spec.agent.maxTurns reaches the runner


def test_env_is_plain_and_home_is_fixed():
    env = container(pod(build=build_request(env=[{"name": "FOO", "value": "bar"},
                                                   {"name": "HOME", "value": "/root"}])))["env"]
    assert env[:2] == [{"name": "HOME", "value": "/workspace/home"}, {"name": "FOO", "value": "bar"}]
    assert all(set(e) == {"name", "value"} for e in env)


def test_no_secret_values_in_the_pod():
    text = json.dumps(pod())
    assert "secretKeyRef" not in text and "envFrom" not in text
    assert "api-key" not in text


def test_labels_name_and_owner():
    p = pod(attempt=3)
    meta = p["metadata"]
    assert meta["name"] == "app-t1-a3" == pods.pod_name("app-t1", 3)
    assert meta["labels"] == {
        "app.kubernetes.io/name": "longshot", "app.kubernetes.io/instance": "app",
        "app.kubernetes.io/component": "agent", "app.kubernetes.io/managed-by": "longshot-operator",
        "longshot.dev/build": "app", "longshot.dev/task": "app-t1", "longshot.dev/attempt": "3",
        "longshot.dev/role": "worker"}
    assert meta["ownerReferences"] == [{"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                        "name": "app-t1", "uid": "task-uid", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert pod(attempt=3) == p  # deterministic
    gate = agent_task(role="tester")
    gate["metadata"]["labels"] = {"longshot.dev/purpose": "gate"}
    assert pod(task=gate)["metadata"]["labels"]["longshot.dev/purpose"] == "gate"  # the runbooks' selector


def test_long_names_stay_valid():
    name = "t" * 63
    p = pod(agent_task(name))
    assert len(p["metadata"]["name"]) <= 63 and p["metadata"]["name"].endswith("-a1")
    assert all(len(v) <= 63 for v in p["metadata"]["labels"].values())


def test_task_input_carries_the_operators_extra_fields_and_a_candidates_model():
    task = agent_task("app-api-c2")
    task["metadata"]["annotations"] = {"longshot.dev/model": "m-b"}
    extra = {"previousFailure": {"class": "AgentError", "message": "2 failed"},
             "question": "Which port?", "answer": "8080",
             "dependencies": [{"task": "models", "summary": "User", "filesChanged": ["m.py"], "mergedCommit": "c1"}]}
    p = pods.build_agent_pod(task, build_request(), SETTINGS, 2, extra)
    given = TaskInput.model_validate_json(p["metadata"]["annotations"]["longshot.dev/task-input"])
    assert given.backend.model == "m-b" and given.attempt == 2
    assert (given.question, given.answer) == ("Which port?", "8080")
    assert given.previous_failure is not None and given.previous_failure.failure_class == "AgentError"
    assert given.dependencies[0].merged_commit == "c1"


def test_the_builds_planner_gets_its_iteration_and_a_subplanner_does_not():
    build = build_request()
    build["spec"]["planner"] = {"maxIterations": 4}
    planner = agent_task("app-planner-i2", role="planner")
    planner["metadata"]["labels"] = {"longshot.dev/iteration": "2"}
    given = pods.task_input(planner, build, 1)
    assert (given.iteration, given.max_iterations) == (2, 4)
    sub = agent_task("app-big", role="planner")
    sub["metadata"]["labels"] = {"longshot.dev/iteration": "2"}
    sub["metadata"]["annotations"] = {"longshot.dev/plan-name": "big"}
    given = pods.task_input(sub, build, 1)
    assert (given.iteration, given.max_iterations) == (1, 1)


# --- issue 31: the per-task agent override and the attempt's model --------------------------------------


def task_input_of(p: dict[str, Any]) -> TaskInput:
    return TaskInput.model_validate(json.loads(p["metadata"]["annotations"]["longshot.dev/task-input"]))


def test_the_tasks_agent_override_wins_over_the_build_for_backend_model_prompt_timeout_and_resources():
    task = agent_task(timeoutSeconds=600, resources={"limits": {"memory": "4Gi"}},
                      agent={"backend": "anthropic", "model": "claude-x", "promptAddendum": "Use httpx.",
                             "timeoutSeconds": 120, "resources": {"limits": {"memory": "8Gi"}}})
    p = pod(task, build_request(resources={"limits": {"memory": "2Gi"}}))
    ti = task_input_of(p)
    assert (ti.backend.name, ti.backend.model, ti.instructions) == ("anthropic", "claude-x", "Use httpx.")
    assert p["spec"]["activeDeadlineSeconds"] == 120
    assert container(p)["resources"]["limits"]["memory"] == "8Gi"
    # without an override: the build's (and the task's older spec.timeoutSeconds / spec.resources)
    plain = pod(agent_task(timeoutSeconds=600))
    assert task_input_of(plain).instructions is None and task_input_of(plain).backend.model == "m"
    assert plain["spec"]["activeDeadlineSeconds"] == 600


def test_the_model_the_operator_chose_for_the_attempt_is_the_one_the_agent_gets():
    p = pods.build_agent_pod(agent_task(agent={"model": "primary"}), build_request(), SETTINGS, 2, model="fallback")
    assert task_input_of(p).backend.model == "fallback"


@pytest.mark.parametrize(("annotation", "override", "expected"), [
    ("command", None, "command"),        # a best-of-N candidate's backend (fanout.backends)
    ("command", "anthropic", "command"),  # wins over the task's spec.agent
    (None, "anthropic", "anthropic"),
    ("evil", None, "openai"),            # an unknown value is ignored, whoever wrote it: the build's
    (None, None, "openai"),
])
def test_the_backend_of_a_candidate_comes_from_its_annotation_then_the_task_then_the_build(annotation, override,
                                                                                          expected):
    t = agent_task(**({"agent": {"backend": override, "model": "m2"}} if override else {}))
    if annotation:
        t["metadata"]["annotations"] = {"longshot.dev/backend": annotation}
    ti = TaskInput.model_validate(json.loads(pod(task=t)["metadata"]["annotations"]["longshot.dev/task-input"]))
    assert ti.backend.name == expected


@pytest.mark.parametrize(("allow", "expected"), [(None, True), (True, True), (False, False)])
def test_spec_agent_allow_questions_reaches_the_task_input(allow, expected):
    build = build_request(**({} if allow is None else {"allowQuestions": allow}))
    assert task_input_of(pod(build=build)).ask is expected
