"""Per-task control on the real API server (issue 31): the per-task ``spec.agent`` refused when invalid, naming the
field; ``spec.suspend`` stopping a running attempt and resuming; a Succeeded task relaunched (through
``kubectl longshot relaunch``) producing a new attempt and a new merge onto main."""

from __future__ import annotations

import io
import json

import kubernetes
import pytest
import sample_repo
import yaml
from k8s_builders import build, condition, create, dump, get, list_of, merge_job, task
from kubelet_double import finish_pod, handoff, plan_handoff, run_pod
from test_delivery import delivery_build, finalized, script_configmap
from test_orchestration import PLANNER, agent_pods, demo_build, phase_is, wait_pod, wait_task

from longshot.api import handoff as ho
from longshot.cli import main as cli
from longshot_testing import wait_for


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


@pytest.mark.timeout(900)  # two whole deliveries and finalizations (planner, worker, gate, sweep) on a busy machine
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
    b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
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
    # the finished build was reopened by the relaunch ("Resumed") and is finished again, counting the current
    # MergeJob only (the replaced one is history). It does not run a new final sweep: status.lastSweep still names
    # the commit before the relaunch (the new MergeJob's gate tested the target as it landed)
    def finished_again():
        b = get(custom, namespace, "buildrequests", "demo")
        reasons = [x.reason for x in core_v1.list_namespaced_event(
            namespace, field_selector="involvedObject.name=demo").items]
        return b if "Resumed" in reasons and b["status"].get("phase") == "Succeeded" else None
    b = wait_for(finished_again, timeout=120, what="the build reopened and finished again")
    assert condition(b, "Finalized")["reason"] == "Passed" and b["status"]["merges"]["merged"] == 1
    assert condition(b, "Merged")["status"] == "True"
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


def test_after_the_model_api_failed_the_next_attempt_uses_the_fallback_model_and_records_it(
        operator, control_plane, core_v1, custom, namespace):
    create(custom, namespace, demo_build(agent={"backend": "scripted", "model": "primary",
                                                "fallbackModels": ["secondary"]}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "work", "description": "Do the work"}]))
    pod = wait_pod(core_v1, namespace, "demo-work-a1")
    assert json.loads(pod.metadata.annotations["longshot.dev/task-input"])["backend"]["model"] == "primary"
    failed = handoff("demo-work", outcome="failed", failure=ho.Failure.model_validate({
        "class": "Infrastructure", "message": "gave up after 5 attempts: the OpenAI-compatible API answered 503"}))
    finish_pod(core_v1, namespace, "demo-work-a1", exit_code=5, reason="Error", message=failed)
    wait_task(custom, namespace, "demo-work", phase_is("Backoff"), "Backoff")
    # the plugin's retry skips the backoff (Infrastructure waits at least 30 s)
    err = io.StringIO()
    assert cli.main(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "retry", "demo-work"],
                    out=io.StringIO(), err=err) == 0, err.getvalue()
    pod = wait_pod(core_v1, namespace, "demo-work-a2")
    assert json.loads(pod.metadata.annotations["longshot.dev/task-input"])["backend"]["model"] == "secondary"
    t = wait_task(custom, namespace, "demo-work", lambda t: len(t["status"].get("attempts") or []) == 2, "attempt 2")
    assert [(a["model"], a.get("failureClass")) for a in t["status"]["attempts"]] == [
        ("primary", "Infrastructure"), ("secondary", None)]


# --- the plugin against the API server (no operator: what it reads and the patches it makes) -------------


def run_cli(control_plane, namespace, *argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_plugin_patches_the_fields_a_person_sets_and_refuses_what_cannot_work(control_plane, custom, namespace):
    create(custom, namespace, build("b1"))
    create(custom, namespace, task("b1-t1", buildRef={"name": "b1"}))
    create(custom, namespace, task("b1-t2", buildRef={"name": "b1"}))
    create(custom, namespace, merge_job("b1-t1", buildRef={"name": "b1"}, taskRef={"name": "b1-t1"}))

    def spec(plural, name):
        return get(custom, namespace, plural, name)["spec"]

    assert run_cli(control_plane, namespace, "suspend", "b1-t1")[0] == 0
    assert spec("agenttasks", "b1-t1")["suspend"] is True
    assert run_cli(control_plane, namespace, "resume", "at/b1-t1")[0] == 0
    assert spec("agenttasks", "b1-t1")["suspend"] is False
    code, out, _ = run_cli(control_plane, namespace, "suspend", "b1")
    assert code == 0 and out.startswith("buildrequest/b1 suspended") and spec("buildrequests", "b1")["suspend"]
    assert run_cli(control_plane, namespace, "resume", "br/b1")[0] == 0 and not spec("buildrequests", "b1")["suspend"]

    code, out, _ = run_cli(control_plane, namespace, "relaunch", "b1-t1", "--model", "big", "--timeout", "600")
    assert code == 0 and "model=big" in out
    s = spec("agenttasks", "b1-t1")
    assert s["agent"] == {"model": "big", "timeoutSeconds": 600} and s["retryToken"].startswith("cli-")
    first = s["retryToken"]
    assert run_cli(control_plane, namespace, "retry", "b1-t1")[0] == 0
    assert spec("agenttasks", "b1-t1")["retryToken"] != first and spec("agenttasks", "b1-t1")["agent"]["model"] == "big"

    # answer: only a task that asked (the status says so); approve: spec.approved
    code, _, err = run_cli(control_plane, namespace, "answer", "b1-t1", "8080")
    assert code == 1 and "not AwaitingInput" in err and "answer" not in spec("agenttasks", "b1-t1")
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", "b1-t1",
                                                 {"status": {"phase": "AwaitingInput", "question": "Which port?"}})
    assert run_cli(control_plane, namespace, "answer", "b1-t1", "Use 8080")[0] == 0
    assert spec("agenttasks", "b1-t1")["answer"] == "Use 8080"
    assert run_cli(control_plane, namespace, "approve", "b1-t1")[0] == 0
    assert spec("mergejobs", "b1-t1")["approved"] is True

    # cancel a build: suspended, and its unfinished tasks cancelled
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", "b1-t2",
                                                 {"status": {"phase": "Succeeded"}})
    code, out, _ = run_cli(control_plane, namespace, "cancel", "b1")
    assert code == 0 and "1 unfinished tasks cancelled: b1-t1" in out
    assert spec("buildrequests", "b1")["suspend"] is True
    assert spec("agenttasks", "b1-t1")["cancel"] is True and not spec("agenttasks", "b1-t2").get("cancel")

    # the tree, as yaml
    code, out, _ = run_cli(control_plane, namespace, "tree", "b1", "-o", "yaml")
    assert code == 0
    tree = yaml.safe_load(out)
    assert [t["name"] for t in tree["tasks"]] == ["b1-t1", "b1-t2"]
    assert tree["tasks"][0]["mergeJobs"][0]["name"] == "b1-t1" and tree["tasks"][0]["cancel"] is True


def test_the_plugin_exits_1_with_a_reason_when_there_is_nothing_to_act_on(control_plane, custom, namespace):
    create(custom, namespace, build("b1"))
    create(custom, namespace, task("b1", buildRef={"name": "b1"}))  # a task named like its build
    code, _, err = run_cli(control_plane, namespace, "suspend", "b1")
    assert code == 1 and "say at/b1 or br/b1" in err
    code, _, err = run_cli(control_plane, namespace, "tree", "nope")
    assert code == 1 and "BuildRequest 'nope' not found" in err
    # trace: tracing records status.traceId; without it the plugin says tracing is off
    code, _, err = run_cli(control_plane, namespace, "trace", "b1")
    assert code == 1 and "tracing is off" in err
    # logs: no attempt yet; then an attempt whose Pod is gone
    code, _, err = run_cli(control_plane, namespace, "logs", "b1")
    assert code == 1 and "has not started an attempt" in err
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", "b1", {
        "status": {"attempts": [{"number": 1, "pod": "b1-a1"}]}})
    code, _, err = run_cli(control_plane, namespace, "logs", "b1", "--attempt", "2")
    assert code == 1 and "has no attempt 2" in err
    code, _, err = run_cli(control_plane, namespace, "logs", "b1")
    assert code == 1 and "the Pod b1-a1 of attempt 1 is gone" in err
    # the API server's refusal is reported with the field it names, not a traceback
    code, _, err = run_cli(control_plane, namespace, "relaunch", "at/b1", "--model", "m" * 300)
    assert code == 1 and err.startswith("error: the API server refused (422): ") and "spec.agent.model" in err
    assert "Traceback" not in err
