"""Workspace hooks (``spec.agent.hooks``) on a real API server: accepted and defaulted, refused out of bounds naming
the field, and carried by the task input of the Pods the operator builds (the build's hooks, a task's over them)."""

from __future__ import annotations

import json

import kubernetes
import pytest
from k8s_builders import build, create, get, task
from test_orchestration import PLANNER, demo_build, wait_pod

pytestmark = pytest.mark.integration

HOOKS = {"afterClone": "npm ci", "beforeRun": "make db", "afterRun": "make fmt", "beforeGate": "npm run build"}


def test_hooks_are_accepted_and_their_timeout_defaulted(custom, namespace):
    create(custom, namespace, build("b1", agent__hooks=HOOKS))
    assert get(custom, namespace, "buildrequests", "b1")["spec"]["agent"]["hooks"] == {**HOOKS, "timeoutSeconds": 300}
    create(custom, namespace, task("t1", suspend=True, agent={"hooks": {"afterClone": ":", "timeoutSeconds": 60}}))
    assert get(custom, namespace, "agenttasks", "t1")["spec"]["agent"]["hooks"] == {"afterClone": ":",
                                                                                    "timeoutSeconds": 60}
    create(custom, namespace, task("t2", suspend=True, agent={"hooks": {"afterRun": "make fmt"}}))
    # a task's hooks have no timeout default: the build's applies
    assert get(custom, namespace, "agenttasks", "t2")["spec"]["agent"]["hooks"] == {"afterRun": "make fmt"}


@pytest.mark.parametrize(("obj", "field", "text"), [
    (build(agent__hooks={"afterClone": "x" * 4097}), "spec.agent.hooks.afterClone", "Too long"),
    (build(agent__hooks={"beforeGate": ""}), "spec.agent.hooks.beforeGate", "should be at least 1 chars long"),
    (build(agent__hooks={"timeoutSeconds": 0}), "spec.agent.hooks.timeoutSeconds",
     "should be greater than or equal to 1"),
    (build(agent__hooks={"afterRun": "make fmt", "timeoutSeconds": 3601}), "spec.agent.hooks.timeoutSeconds",
     "should be less than or equal to 3600"),
    (task(agent={"hooks": {"beforeRun": "y" * 4097}}), "spec.agent.hooks.beforeRun", "Too long"),
    (task(agent={"hooks": {"timeoutSeconds": 86400}}), "spec.agent.hooks.timeoutSeconds",
     "should be less than or equal to 3600"),
], ids=["build-hook-too-long", "build-hook-empty", "build-timeout-zero", "build-timeout-too-long",
        "task-hook-too-long", "task-timeout-too-long"])
def test_hooks_out_of_bounds_are_refused_naming_the_field(custom, namespace, obj, field, text):
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, obj)
    assert err.value.status == 422, err.value.body
    status = json.loads(err.value.body)
    causes = {c.get("field"): c.get("message", "") for c in status["details"]["causes"]}
    assert field in causes, status["message"]
    assert text in causes[field], status["message"]


def task_input(pod) -> dict:
    return json.loads(pod.metadata.annotations["longshot.dev/task-input"])


def test_the_pods_of_a_build_carry_its_hooks_and_a_tasks_own_hooks_win(operator, core_v1, custom, namespace):
    b = demo_build(workers={"max": 2})
    b["spec"].setdefault("agent", {})["hooks"] = {**HOOKS, "timeoutSeconds": 120}
    create(custom, namespace, b)
    planner = wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    assert task_input(planner)["hooks"] == {**HOOKS, "timeoutSeconds": 120}
    assert "npm ci" not in json.dumps(planner.spec.to_dict())  # only in the task input, never env or args

    # a task of the build with hooks of its own: each one it sets wins, the others are the build's
    create(custom, namespace, task("demo-own", buildRef={"name": "demo"}, description="Own hooks",
                                   agent={"hooks": {"afterClone": "pnpm install", "timeoutSeconds": 30}}))
    own = wait_pod(core_v1, namespace, "demo-own-a1")
    assert task_input(own)["hooks"] == {**HOOKS, "afterClone": "pnpm install", "timeoutSeconds": 30}
