"""Retry feedback on the real API server: a failed attempt's failure reaches the next attempt's task input (the Pod's
``longshot.dev/task-input`` annotation, mounted into the Pod by the downward API) and the prompt the agent runner
builds from it. The operator runs in-process; the process kubelet runs the real agent runner (scripted backend)."""

from __future__ import annotations

import json

import sample_repo
from k8s_builders import create, dump, get
from test_delivery import delivery_build, finalized, script_configmap

from longshot.agent import prompts, runner
from longshot_testing import wait_for

KNOWN = "the linker ran out of patience at step 7 (feedback-4f2a)"


def test_a_failed_attempt_failure_is_in_the_next_attempt_input_and_prompt(operator, kubelet, core_v1, custom,
                                                                          namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [
            {"name": "w", "description": "Write notes.txt", "scope": ["notes.txt"]}]}}]},
        "tasks": {"w": {"attempt": {
            1: [{"fail": {"class": "AgentError", "message": KNOWN}}],
            2: [{"write": {"path": "notes.txt", "content": "notes\n"}}, {"finish": "notes"}]}}}})
    create(custom, namespace, delivery_build(url, retry={"maxAttempts": 3, "backoffSeconds": 1}))

    def second_pod():
        pods = core_v1.list_namespaced_pod(namespace, label_selector="longshot.dev/task=demo-w").items
        return next((p for p in pods if p.metadata.name == "demo-w-a2"), None)

    pod = wait_for(second_pod, timeout=90, what="the second attempt's Pod demo-w-a2")
    first = get(custom, namespace, "agenttasks", "demo-w")["status"]["attempts"][0]
    assert first["failureClass"] == "AgentError" and KNOWN in first["exitReason"], dump(custom, namespace)

    # the task input of attempt 2, as the API server holds it and the Pod reads it
    raw = pod.metadata.annotations["longshot.dev/task-input"]
    data = json.loads(raw)
    assert data["attempt"] == 2
    assert data["previousFailure"]["class"] == "AgentError" and KNOWN in data["previousFailure"]["message"]
    first_pod = core_v1.read_namespaced_pod("demo-w-a1", namespace)
    assert "previousFailure" not in json.loads(first_pod.metadata.annotations["longshot.dev/task-input"])

    # the prompt the runner builds from exactly that input (its loader and its templates)
    path = tmp_path / "task-input.json"
    path.write_text(raw)
    task = runner.load_task_input(path)
    _system, prompt = prompts.role_prompts(task.role, None, task=task)
    assert "The previous attempt of this task failed (AgentError):" in prompt and KNOWN in prompt

    # and the retried attempt did the work
    b = finalized(custom, namespace, timeout=150)
    assert sample_repo.show(url, "notes.txt") == "notes\n", dump(custom, namespace)
    assert b["status"]["phase"] == "Succeeded"
