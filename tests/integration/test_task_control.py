"""Per-task control on the real API server (issue 31): the per-task ``spec.agent`` refused when invalid, naming the
field; ``spec.suspend`` stopping a running attempt and resuming; a Succeeded task relaunched (through
``kubectl longshot relaunch``) producing a new attempt and a new merge onto main."""

from __future__ import annotations

import io
import json

import kubernetes
import pytest
import sample_repo
from k8s_builders import build, condition, create, dump, get, list_of, task
from kubelet_double import finish_pod, handoff, plan_handoff, run_pod
from test_delivery import delivery_build, script_configmap
from test_orchestration import PLANNER, agent_pods, demo_build, phase_is, wait_pod, wait_task

from longshot.cli import main as cli
from longshot.testing import wait_for


@pytest.mark.parametrize(("agent", "field", "text"), [
    ({"backend": "openai"}, "spec.agent.model", "agent.model is required when agent.backend is openai or anthropic"),
    ({"backend": "command"}, "spec.agent.backend", "cannot be set per task"),
    ({"timeoutSeconds": 5}, "spec.agent.timeoutSeconds", "greater than or equal to 30"),
    ({"promptAddendum": ""}, "spec.agent.promptAddendum", "at least 1"),
])
def test_an_invalid_per_task_agent_is_refused_naming_the_field(custom, namespace, agent, field, text):
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, task("t1", agent=agent))
    assert err.value.status == 422, err.value.body
    assert field in err.value.body and text in err.value.body


def test_a_valid_per_task_agent_and_fallback_models_are_accepted(custom, namespace):
    create(custom, namespace, task("t1", suspend=True, agent={"backend": "anthropic", "model": "m",
                                                              "promptAddendum": "Use httpx.", "timeoutSeconds": 60,
                                                              "resources": {"limits": {"memory": "1Gi"}}}))
    assert get(custom, namespace, "agenttasks", "t1")["spec"]["agent"]["promptAddendum"] == "Use httpx."
    create(custom, namespace, build("b1", agent={"backend": "openai", "model": "a", "fallbackModels": ["b", "c"]}))
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, build("b2", agent={"backend": "openai", "model": "a", "fallbackModels": [""]}))
    assert err.value.status == 422 and "spec.agent.fallbackModels[0]" in err.value.body


def test_suspend_stops_a_running_attempt_without_a_failure_and_resume_starts_the_next(
        operator, core_v1, custom, namespace, tmp_path, sample_repository):
    # one worker slot: while "work" is suspended, the slot goes to "other" although "work" has the higher priority
    create(custom, namespace, demo_build(workers={"max": 1}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "work", "description": "Do the work", "priority": 9},
        {"name": "other", "description": "Do the rest", "priority": 1}]))
    wait_pod(core_v1, namespace, "demo-work-a1")
    run_pod(core_v1, namespace, "demo-work-a1")
    wait_task(custom, namespace, "demo-work", lambda t: (condition(t, "Running") or {}).get("status") == "True",
              "Running")

    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-work",
                                          {"spec": {"suspend": True}})
    t = wait_task(custom, namespace, "demo-work", lambda t: (condition(t, "Suspended") or {}).get("status") == "True",
                  "Suspended=True")
    assert t["status"]["phase"] == "Pending" and t["status"]["retryBase"] == 1
    (a1,) = t["status"]["attempts"]
    assert a1["exitReason"] == "suspended by spec.suspend" and "failureClass" not in a1 and a1["endTime"]
    assert condition(t, "Stalled")["status"] == "False" and condition(t, "Reconciling")["reason"] == "Suspended"
    wait_for(lambda: "demo-work-a1" not in agent_pods(core_v1, namespace), timeout=30, what="Pod a1 deleted")
    # the freed slot goes to the other task: dispatch ran, and skipped the suspended one
    wait_pod(core_v1, namespace, "demo-other-a1")
    assert "demo-work-a2" not in agent_pods(core_v1, namespace)

    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-work",
                                          {"spec": {"suspend": False}})
    t = wait_task(custom, namespace, "demo-work", lambda t: (condition(t, "Suspended") or {}).get("reason") ==
                  "Resumed", "Suspended=False/Resumed")
    assert condition(t, "Suspended")["status"] == "False"
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-other",
                                          {"spec": {"cancel": True}})  # frees the slot
    pod = wait_pod(core_v1, namespace, "demo-work-a2")
    task_input = json.loads(pod.metadata.annotations["longshot.dev/task-input"])
    assert task_input["attempt"] == 2 and task_input["branch"] == f"longshot/{namespace}/demo/demo-work"
    branch = task_input["branch"]
    commit = sample_repo.push_branch(sample_repository, branch, {"work.txt": "done\n"}, tmp_path)
    finish_pod(core_v1, namespace, "demo-work-a2", message=handoff("demo-work", 2, branch=branch, commit=commit))
    t = wait_task(custom, namespace, "demo-work", phase_is("Succeeded"), "Succeeded")
    assert [a.get("failureClass") for a in t["status"]["attempts"]] == [None, None]
    assert t["status"]["retryBase"] == 1 and t["status"]["mergeJob"] == "demo-work"


RELAUNCH_SCRIPT = {
    "roles": {
        "planner": [{"finish": {"summary": "one task", "tasks": [
            {"name": "add", "description": "Add add()", "scope": ["calc/add.py"]}]}}],
        "reviewer": [{"finish": {"summary": "fine", "verdict": "approved"}}],
    },
    "tasks": {
        "add": {"attempt": {
            1: [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                {"finish": "Add add()"}],
            2: [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    \"\"\"The sum.\"\"\"\n"
                                                            "    return a + b\n"}},
                {"finish": "Document add()"}],
        }},
    },
}


def test_a_succeeded_task_relaunched_with_the_plugin_runs_again_and_merges_a_new_merge_job(
        operator, kubelet, control_plane, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, RELAUNCH_SCRIPT)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}))

    def merged(name):
        def check():
            jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
            j = jobs.get(name)
            return j if j is not None and (j.get("status") or {}).get("phase") == "Merged" else None
        try:
            return wait_for(check, timeout=120, what=f"MergeJob {name} Merged")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None

    merged("demo-add")
    assert "return a + b" in (sample_repo.show(url, "calc/add.py") or "")
    t = wait_task(custom, namespace, "demo-add", phase_is("Succeeded"), "Succeeded")
    assert t["status"]["mergeJob"] == "demo-add"

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "relaunch", "demo-add",
                     "--prompt", "Document add()."], out=out, err=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("agenttask/demo-add relaunched (retryToken cli-")

    job = merged("demo-add-a2")
    assert job["spec"]["taskRef"]["name"] == "demo-add"
    assert "The sum." in (sample_repo.show(url, "calc/add.py") or "")
    t = wait_task(custom, namespace, "demo-add", lambda t: t["status"].get("mergeJob") == "demo-add-a2",
                  "status.mergeJob")
    assert t["status"]["phase"] == "Succeeded" and [a["number"] for a in t["status"]["attempts"]] == [1, 2]
    assert t["status"]["retryBase"] == 1
    # the old MergeJob stays, as history; the relaunched attempt got the person's addendum in its task input
    assert get(custom, namespace, "mergejobs", "demo-add")["status"]["phase"] == "Merged"
    pod = core_v1.read_namespaced_pod("demo-add-a2", namespace)
    assert json.loads(pod.metadata.annotations["longshot.dev/task-input"])["instructions"] == "Document add()."
    # the tree shows both merges, the current one marked
    out = io.StringIO()
    assert cli.main(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "tree", "demo", "-o", "json"],
                    out=out) == 0
    tree = json.loads(out.getvalue())
    (add,) = [x for x in tree["tasks"] if x["name"] == "demo-add"]
    assert [(j["name"], j["phase"], j["current"]) for j in add["mergeJobs"]] == [
        ("demo-add", "Merged", False), ("demo-add-a2", "Merged", True)]
