"""Workspace hooks (``spec.agent.hooks``) on a real API server: accepted and defaulted, refused out of bounds naming
the field, and carried by the task input of the Pods the operator builds (the build's hooks, a task's over them)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import kubernetes
import pytest
from k8s_builders import build, condition, create, get, task
from kubelet_double import finish_pod
from test_orchestration import PLANNER, demo_build, phase_is, wait_pod, wait_task

from longshot.agent import runner
from longshot_testing import wait_for

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


def test_kubectl_explain_describes_each_hook(kubectl):
    def explain(field):
        result = kubectl("explain", field, check=False)
        return " ".join(result.stdout.split()) if result.returncode == 0 else None

    out = wait_for(lambda: explain("br.spec.agent.hooks.afterRun"), timeout=30, what="kubectl explain")
    assert "before the runner commits and pushes" in out
    assert "whole process group is killed" in explain("br.spec.agent.hooks.timeoutSeconds")
    assert "wins over the build's" in explain("at.spec.agent.hooks")


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


def run_runner(pod, tmp_path: Path) -> tuple[int, str]:
    """The agent runner on the Pod's own task input, as the Pod would run it (without a gateway: the build's
    repository is a local file:// one); its exit code and termination message."""
    (tmp_path / "task.json").write_text(pod.metadata.annotations["longshot.dev/task-input"])
    none = str(tmp_path / "none")
    env = {**os.environ, "LONGSHOT_TASK_INPUT": str(tmp_path / "task.json"),
           "LONGSHOT_GIT_CREDENTIALS_DIR": none, "LONGSHOT_LLM_CREDENTIALS_DIR": none,
           "LONGSHOT_SCRIPT_DIR": none, "LONGSHOT_PROMPTS_DIR": none,
           "LONGSHOT_WORKSPACE_DIR": str(tmp_path / "workspace"),
           "LONGSHOT_TERMINATION_LOG": str(tmp_path / "termination-log"), "LONGSHOT_HEARTBEAT_SECONDS": "0"}
    env.pop("LONGSHOT_GATEWAY_URL", None)
    code = runner.run(env, sleep=lambda s: None, rand=lambda: 0.5, stdout=io.StringIO())
    return code, (tmp_path / "termination-log").read_text()


def test_a_failing_hook_run_from_the_pods_task_input_stops_the_task_naming_the_hook(
        operator, core_v1, custom, namespace, tmp_path):
    create(custom, namespace, demo_build(workers={"max": 2}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    create(custom, namespace, task("demo-setup", buildRef={"name": "demo"}, description="Needs set-up",
                                   agent={"hooks": {"afterClone": "echo 'npm ERR! missing script: ci' >&2; exit 2"}}))
    pod = wait_pod(core_v1, namespace, "demo-setup-a1")

    code, message = run_runner(pod, tmp_path)
    assert code == 2
    finish_pod(core_v1, namespace, "demo-setup-a1", exit_code=code, reason="Error", message=message)
    t = wait_task(custom, namespace, "demo-setup", phase_is("Failed"), "Failed")
    (attempt,) = t["status"]["attempts"]  # not retried: a person fixes the hook
    assert attempt["failureClass"] == "Configuration"
    stalled = condition(t, "Stalled")
    assert stalled["reason"] == "Configuration"
    assert "spec.agent.hooks.afterClone exited 2: npm ERR! missing script: ci" in stalled["message"]
