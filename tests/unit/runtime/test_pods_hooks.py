"""The agent Pod's task input carries the workspace hooks: the build's ``spec.agent.hooks``, each key of the task's
``spec.agent.hooks`` over it; never anywhere else in the Pod."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longshot.api import handoff
from longshot.config import Settings
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="test", gateway_url="http://longshot-gateway.longshot-system.svc:8080")
BUILD_HOOKS = {"afterClone": "npm ci", "beforeGate": "npm run build", "timeoutSeconds": 900}


def agent_task(**agent: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app-t1", "namespace": "ns", "uid": "task-uid"},
            "spec": {"buildRef": {"name": "app"}, "description": "add an endpoint", "role": "worker",
                     **({"agent": agent} if agent else {})}}


def build_request(hooks: dict[str, Any] | None = None) -> dict[str, Any]:
    agent: dict[str, Any] = {"backend": "scripted"}
    if hooks is not None:
        agent["hooks"] = hooks
    return {"metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
            "spec": {"request": "build a REST API", "agent": agent,
                     "repository": {"url": "https://git.example.com/org/app.git"}}}


def pod_task_input(task: dict[str, Any], build: dict[str, Any]) -> handoff.TaskInput:
    pod = pods.build_agent_pod(task, build, SETTINGS, 1)
    return handoff.TaskInput.model_validate_json(pod["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION])


def test_the_pods_task_input_carries_the_builds_hooks():
    hooks = pod_task_input(agent_task(), build_request(BUILD_HOOKS)).hooks
    assert (hooks.after_clone, hooks.before_run, hooks.after_run, hooks.before_gate, hooks.timeout_seconds) == (
        "npm ci", None, None, "npm run build", 900)


def test_each_hook_the_task_sets_wins_over_the_builds():
    task = agent_task(hooks={"afterClone": "pnpm install", "afterRun": "make fmt"})
    hooks = pod_task_input(task, build_request(BUILD_HOOKS)).hooks
    assert (hooks.after_clone, hooks.after_run, hooks.before_gate, hooks.timeout_seconds) == (
        "pnpm install", "make fmt", "npm run build", 900)
    task = agent_task(hooks={"timeoutSeconds": 60})
    assert pod_task_input(task, build_request(BUILD_HOOKS)).hooks.timeout_seconds == 60


def test_a_task_override_alone_sets_hooks_with_the_default_timeout():
    hooks = pod_task_input(agent_task(hooks={"beforeRun": "make db"}), build_request()).hooks
    assert (hooks.before_run, hooks.timeout_seconds) == ("make db", 300)


def test_no_hooks_anywhere_means_none_run():
    hooks = pod_task_input(agent_task(), build_request()).hooks
    assert [hooks.after_clone, hooks.before_run, hooks.after_run, hooks.before_gate] == [None] * 4


def test_hooks_reach_the_pod_only_through_the_task_input():
    pod = pods.build_agent_pod(agent_task(), build_request(BUILD_HOOKS), SETTINGS, 1)
    rest = {**pod, "metadata": {**pod["metadata"], "annotations": {}}}
    assert "npm run build" not in json.dumps(rest)
    assert "npm run build" in pod["metadata"]["annotations"][handoff.TASK_INPUT_ANNOTATION]
