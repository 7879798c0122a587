"""Orchestration on the real API server: plans, dispatch, sandboxed Pods, retries, user controls.

No kubelet runs here: the tests play the kubelet's and the agent's part by writing the Pod's status and
the handoff (the termination message) through the API, exactly what a kubelet would write.
"""

from __future__ import annotations

import kubernetes
import pytest
import sample_repo
from k8s_builders import build, condition, create, get, list_of
from kubelet_double import finish_pod, handoff, plan_handoff

from longshot.api import handoff as ho
from longshot_testing import wait_for

PLANNER = "demo-planner"


def agent_pods(core, namespace):
    pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=longshot-operator")
    return {p.metadata.name: p for p in pods.items}


def wait_pod(core, namespace, name, timeout=30):
    return wait_for(lambda: agent_pods(core, namespace).get(name), timeout=timeout, what=f"Pod {name}")


def wait_task(custom, namespace, name, predicate, what, timeout=30):
    def check():
        try:
            t = get(custom, namespace, "agenttasks", name)
        except kubernetes.client.ApiException:
            return None
        return t if predicate(t) else None

    return wait_for(check, timeout=timeout, what=f"AgentTask {name}: {what}")


def phase_is(phase):
    return lambda obj: (obj.get("status") or {}).get("phase") == phase


def demo_build(**patch):
    b = build("demo", **patch)
    b["spec"].setdefault("workers", {"max": 10})
    return b


def plan_three():
    return [
        {"name": "models", "description": "Add the data models", "scope": ["app/models.py"], "priority": 8},
        {"name": "api", "description": "Add the REST handlers", "scope": ["app/api.py"], "dependsOn": ["models"]},
        {"name": "docs", "description": "Document the API", "scope": ["README.md"], "priority": 2},
    ]


def start_and_plan(core, custom, namespace, tasks):
    create(custom, namespace, demo_build())
    wait_pod(core, namespace, f"{PLANNER}-a1")
    finish_pod(core, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, tasks))


def test_planner_handoff_becomes_worker_tasks_with_dependencies(operator, core_v1, custom, namespace, tmp_path,
                                                               sample_repository):
    start_and_plan(core_v1, custom, namespace, plan_three())

    b = wait_for(lambda: (lambda o: o if (condition(o, "Planned") or {}).get("status") == "True" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="Planned=True")
    assert condition(b, "Planned")["reason"] == "PlanAccepted"
    tasks = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert set(tasks) == {PLANNER, "demo-models", "demo-api", "demo-docs"}
    assert tasks["demo-api"]["spec"]["dependsOn"] == ["demo-models"]
    assert tasks["demo-models"]["spec"]["priority"] == 8
    assert tasks["demo-models"]["spec"]["scope"] == ["app/models.py"]
    owner = tasks["demo-api"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BuildRequest", "demo", True)

    # ready tasks get Pods; the dependent one waits for its dependency
    wait_pod(core_v1, namespace, "demo-models-a1")
    wait_pod(core_v1, namespace, "demo-docs-a1")
    assert "demo-api-a1" not in agent_pods(core_v1, namespace)
    branch = f"longshot/{namespace}/demo/demo-models"  # the task's own branch: a handoff of another one is refused
    commit = sample_repo.push_branch(sample_repository, branch, {"app/models.py": "MODELS = []\n"}, tmp_path)
    finish_pod(core_v1, namespace, "demo-models-a1", message=handoff(
        "demo-models", branch=branch, commit=commit, files_changed=["app/models.py"],
        usage=ho.Usage(input_tokens=100, output_tokens=20)))
    t = wait_task(custom, namespace, "demo-models", phase_is("Succeeded"), "Succeeded")
    assert t["status"]["handoff"]["commit"] == commit
    assert condition(t, "Succeeded")["status"] == "True"
    # a successful worker gets a MergeJob for its branch
    mj = wait_for(lambda: next((m for m in list_of(custom, namespace, "mergejobs")
                                if m["metadata"]["name"] == "demo-models"), None), timeout=30, what="MergeJob")
    assert (mj["spec"]["branch"], mj["spec"]["commit"], mj["spec"]["target"]) == (branch, commit, "main")
    # the dependent waits for its dependency's branch to MERGE, not just to succeed
    api = wait_task(custom, namespace, "demo-api", lambda o: (condition(o, "Reconciling") or {}).get("message")
                    == "waiting for demo-models to merge", "waiting for the merge")
    assert condition(api, "Reconciling")["reason"] == "WaitingForDependencies"
    assert "demo-api-a1" not in agent_pods(core_v1, namespace)
    # the quality gate tests the candidate as it would land; play the tester: it passes
    gate = wait_for(lambda: next((n for n in agent_pods(core_v1, namespace) if "-gate-" in n), None), timeout=30,
                    what="the gate Pod")
    gate_task = gate.rsplit("-a", 1)[0]
    finish_pod(core_v1, namespace, gate, message=handoff(gate_task, role="tester", verdict="passed",
                                                         summary="tests passed"))
    wait_pod(core_v1, namespace, "demo-api-a1")
    assert sample_repo.show(sample_repository, "app/models.py") == "MODELS = []\n"
    b = wait_for(lambda: (lambda o: o if o["status"].get("usage", {}).get("tokens") == 120 else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="usage on the build")
    assert b["status"]["tasks"]["total"] == 4


def test_invalid_plan_is_refused_with_a_reason_and_replanned(operator, core_v1, custom, namespace):
    cyclic = [{"name": "a", "description": "A", "dependsOn": ["b"]},
              {"name": "b", "description": "B", "dependsOn": ["a"]}]
    start_and_plan(core_v1, custom, namespace, cyclic)

    b = wait_for(lambda: (lambda o: o if (condition(o, "Planned") or {}).get("reason") == "PlanRejected" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=90, what="Planned reason PlanRejected")
    assert "cycle" in condition(b, "Planned")["message"]
    # a bounded re-plan: a new planner task, whose description says why the plan was refused
    replanner = wait_task(custom, namespace, "demo-planner-1", lambda t: True, "exists")
    assert "rejected" in replanner["spec"]["description"]
    assert {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")} == {PLANNER, "demo-planner-1"}

    # the re-plan is also refused, and with planner.maxReplans=1 the build gives up
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": {"planner": {"maxReplans": 1}}})
    wait_for(lambda: (lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"])(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="the operator saw maxReplans=1")
    wait_pod(core_v1, namespace, "demo-planner-1-a1")
    finish_pod(core_v1, namespace, "demo-planner-1-a1", message=plan_handoff("demo-planner-1", []))
    b = wait_for(lambda: (lambda o: o if (condition(o, "Planned") or {}).get("status") == "False" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="Planned=False")
    assert condition(b, "Planned")["reason"] == "PlanRejected"
    # a failed build never looks healthy: Ready=False, Stalled=True, Finalized=False, and it is complete
    assert (condition(b, "Ready")["status"], condition(b, "Ready")["reason"]) == ("False", "PlanRejected")
    assert (condition(b, "Stalled")["status"], condition(b, "Stalled")["reason"]) == ("True", "PlanRejected")
    assert condition(b, "Finalized")["status"] == "False" and b["status"]["completionTime"]
    assert b["status"]["phase"] == "Failed"


def test_a_cancelled_planner_is_a_refused_plan_not_planning_forever(operator, core_v1, custom, namespace):
    """A person cancels the planner task (spec.cancel): no plan will come, so the build says so and re-plans within
    planner.maxReplans, then stops as PlanRejected, instead of showing Planning (Reconciling=True) for ever. Found
    by the real-model tier: a 270M model kept asking questions, and its planner was cancelled."""
    create(custom, namespace, demo_build(planner={"maxReplans": 1}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", PLANNER,
                                          {"spec": {"cancel": True}})
    b = wait_for(lambda: (lambda o: o if (condition(o, "Planned") or {}).get("reason") == "PlanRejected" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=90, what="Planned reason PlanRejected")
    assert f"the planner task {PLANNER} was cancelled" in condition(b, "Planned")["message"]
    wait_pod(core_v1, namespace, "demo-planner-1-a1")  # the one re-plan
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-planner-1",
                                          {"spec": {"cancel": True}})
    b = wait_for(lambda: (lambda o: o if (condition(o, "Stalled") or {}).get("status") == "True" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=90, what="Stalled=True")
    assert condition(b, "Stalled")["reason"] == "PlanRejected"
    assert "demo-planner-1 was cancelled" in condition(b, "Stalled")["message"]
    assert condition(b, "Reconciling")["status"] == "False" and b["status"]["phase"] == "Failed"


def test_agent_pods_are_sandboxed_and_admitted_under_restricted(operator, core_v1, custom, namespace):
    b = demo_build(agent={"backend": "scripted", "timeoutSeconds": 300,
                          "resources": {"limits": {"memory": "300Mi", "cpu": "500m"}}})
    create(custom, namespace, b)
    pod = wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    # the namespace enforces Pod Security "restricted": the Pod exists, so it was admitted
    labels = core_v1.read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod.spec
    c = spec.containers[0]
    assert c.resources.limits == {"memory": "300Mi", "cpu": "500m"}
    assert c.resources.requests["memory"] and c.resources.requests["cpu"]
    sc = c.security_context
    assert sc.run_as_non_root and sc.read_only_root_filesystem and not sc.allow_privilege_escalation
    assert sc.capabilities.drop == ["ALL"] and sc.seccomp_profile.type == "RuntimeDefault"
    assert spec.automount_service_account_token is False
    assert spec.active_deadline_seconds == 300
    assert spec.restart_policy == "Never"
    scratch = {v.name: v for v in spec.volumes}["workspace"]
    assert scratch.empty_dir.size_limit
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("AgentTask", PLANNER)
    assert pod.metadata.labels["longshot.dev/task"] == PLANNER
    assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "longshot-operator"


def test_oom_killed_attempt_is_retried_with_backoff_then_fails(operator, core_v1, custom, namespace):
    create(custom, namespace, demo_build(retry={"maxAttempts": 2, "backoffSeconds": 1, "maxBackoffSeconds": 2}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", exit_code=137, reason="OOMKilled")

    t = wait_task(custom, namespace, PLANNER, lambda t: len(t.get("status", {}).get("attempts", [])) >= 1
                  and t["status"]["attempts"][0].get("failureClass"), "first attempt recorded")
    first = t["status"]["attempts"][0]
    assert first["failureClass"] == "OOMKilled" and first["exitCode"] == 137
    # a second attempt, in a new Pod, after the backoff
    wait_pod(core_v1, namespace, f"{PLANNER}-a2")
    finish_pod(core_v1, namespace, f"{PLANNER}-a2", exit_code=137, reason="OOMKilled")
    t = wait_task(custom, namespace, PLANNER, phase_is("Failed"), "Failed")
    assert [a["failureClass"] for a in t["status"]["attempts"]] == ["OOMKilled", "OOMKilled"]
    succeeded = condition(t, "Succeeded")
    assert succeeded["status"] == "False" and "OOMKilled" in succeeded["message"]
    assert f"{PLANNER}-a3" not in agent_pods(core_v1, namespace)
    events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={PLANNER}").items
    assert {"RetryScheduled", "Failed"} <= {e.reason for e in events}


def test_auth_failure_stops_and_asks_instead_of_retrying(operator, core_v1, custom, namespace):
    create(custom, namespace, demo_build())
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", exit_code=3, reason="Error")
    t = wait_task(custom, namespace, PLANNER, phase_is("Failed"), "Failed")
    assert condition(t, "Authenticated")["status"] == "False"
    assert condition(t, "Authenticated")["reason"] == "AuthFailed"
    assert len(t["status"]["attempts"]) == 1
    # retrying the task after fixing the Secret starts a fresh attempt
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", PLANNER,
                                          {"spec": {"retryToken": "fixed-secret"}})
    wait_pod(core_v1, namespace, f"{PLANNER}-a2")


def test_suspend_stops_new_pods_and_resume_starts_them(operator, core_v1, custom, namespace):
    start_and_plan(core_v1, custom, namespace, plan_three()[:1])
    wait_pod(core_v1, namespace, "demo-models-a1")
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": {"suspend": True}})
    b = wait_for(lambda: (lambda o: o if (condition(o, "Suspended") or {}).get("status") == "True" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="Suspended=True")
    assert b["status"]["phase"] == "Suspended"
    # the running attempt finishes; its failure's retry does not start while suspended
    finish_pod(core_v1, namespace, "demo-models-a1", exit_code=1, reason="Error")
    wait_task(custom, namespace, "demo-models", lambda t: len(t["status"].get("attempts", [])) == 1
              and t["status"]["attempts"][0].get("failureClass"), "attempt 1 failed")
    # the retry's backoff elapses and the task is Pending, yet no Pod while suspended
    wait_task(custom, namespace, "demo-models", phase_is("Pending"), "Pending after backoff", timeout=40)
    assert "demo-models-a2" not in agent_pods(core_v1, namespace)
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": {"suspend": False}})
    wait_pod(core_v1, namespace, "demo-models-a2")
    b = wait_for(lambda: (lambda o: o if (condition(o, "Suspended") or {}).get("status") == "False" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="Suspended=False")
    assert condition(b, "Reconciling")["status"] == "True"


def test_cancel_deletes_the_pod_and_does_not_retry(operator, core_v1, custom, namespace):
    start_and_plan(core_v1, custom, namespace, plan_three()[:1])
    wait_pod(core_v1, namespace, "demo-models-a1")
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", "demo-models",
                                          {"spec": {"cancel": True}})
    try:
        t = wait_task(custom, namespace, "demo-models", phase_is("Cancelled"), "Cancelled")
    except TimeoutError as e:  # what the task looked like, for the reader of a failure
        seen = get(custom, namespace, "agenttasks", "demo-models")
        raise AssertionError(f"{e}: spec {seen['spec']}, resourceVersion {seen['metadata']['resourceVersion']}, "
                             f"status {seen.get('status')}") from None
    assert condition(t, "Ready")["reason"] == "Cancelled"

    def pod_gone_or_terminating():
        pod = agent_pods(core_v1, namespace).get("demo-models-a1")
        return pod is None or pod.metadata.deletion_timestamp is not None

    wait_for(pod_gone_or_terminating, timeout=30, what="the cancelled task's Pod deleted")
    # the planner's Succeeded and the worker's Cancelled reach the build's counts in either order; iteration 2's
    # planner may start meanwhile (2/3), and the first planner, whose plan was carried out, stays counted
    def counted(o):
        t = o["status"]["tasks"]
        return o if (t.get("cancelled"), t.get("succeeded")) == (1, 1) and t.get("progress") in ("2/2", "2/3") \
            else None

    try:
        b = wait_for(lambda: counted(get(custom, namespace, "buildrequests", "demo")), timeout=30,
                     what="cancelled 1, succeeded 1 (the planner), progress 2/2 (2/3 once iteration 2 planned)")
    except TimeoutError as e:
        tasks = custom.list_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks")["items"]
        build = get(custom, namespace, "buildrequests", "demo")
        raise AssertionError(f"{e}: build status.tasks {build['status'].get('tasks')}; tasks " + str(
            [(t["metadata"]["name"], (t.get("status") or {}).get("phase")) for t in tasks])) from None
    if b["status"]["tasks"]["progress"] == "2/2":
        assert b["status"]["tasks"]["running"] == 0


def test_killswitch_stops_every_agent_pod_and_says_so(operator, core_v1, custom, namespace):
    start_and_plan(core_v1, custom, namespace, plan_three()[:1])
    wait_pod(core_v1, namespace, "demo-models-a1")
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-killswitch"},
                                                     "data": {"engaged": "true"}})
    b = wait_for(lambda: (lambda o: o if (condition(o, "Halted") or {}).get("status") == "True" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="Halted=True")
    assert b["status"]["phase"] == "Halted"
    wait_for(lambda: all(p.metadata.deletion_timestamp for p in agent_pods(core_v1, namespace).values()
                         if p.status.phase not in ("Succeeded", "Failed")),
             timeout=30, what="every running agent Pod deleted")
    t = wait_task(custom, namespace, "demo-models", phase_is("Pending"), "back to Pending")
    assert condition(t, "Running")["reason"] == "Killswitch"
    # released: the task runs again, its killed attempt not counted against the retries
    core_v1.patch_namespaced_config_map("longshot-killswitch", namespace, {"data": {"engaged": "false"}})
    wait_pod(core_v1, namespace, "demo-models-a2")


def test_budget_exceeded_stops_dispatch_until_raised(operator, core_v1, custom, namespace, tmp_path,
                                                    sample_repository):
    plan = [{"name": "one", "description": "1", "priority": 9}, {"name": "two", "description": "2"}]
    create(custom, namespace, demo_build(budget={"maxTokens": 100}, workers={"max": 1}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, plan))
    wait_pod(core_v1, namespace, "demo-one-a1")
    commit = sample_repo.push_branch(sample_repository, f"longshot/{namespace}/demo/demo-one", {"one.txt": "1\n"},
                                     tmp_path)
    finish_pod(core_v1, namespace, "demo-one-a1", message=handoff(
        "demo-one", branch=f"longshot/{namespace}/demo/demo-one", commit=commit, usage=ho.Usage(input_tokens=150)))
    b = wait_for(lambda: (lambda o: o if (condition(o, "BudgetExceeded") or {}).get("status") == "True" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="BudgetExceeded=True")
    assert b["status"]["usage"]["tokens"] == 150
    assert (condition(b, "Stalled")["status"], condition(b, "Stalled")["reason"]) == ("True", "BudgetExceeded")
    assert "demo-two-a1" not in agent_pods(core_v1, namespace)
    # raised: dispatch goes on. With one worker slot, the merge queue's gate of demo-one's MergeJob (created
    # meanwhile, priority 9) may take it first, and no kubelet ends its Pod here: a second slot lets both start.
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": {"budget": {"maxTokens": 1000}, "workers": {"max": 2}}})
    wait_pod(core_v1, namespace, "demo-two-a1")


def test_deleting_the_build_removes_tasks_pods_and_merge_jobs(operator, core_v1, custom, namespace, tmp_path,
                                                             sample_repository):
    start_and_plan(core_v1, custom, namespace, plan_three()[:1])
    wait_pod(core_v1, namespace, "demo-models-a1")
    commit = sample_repo.push_branch(sample_repository, f"longshot/{namespace}/demo/demo-models", {"m.txt": "m\n"},
                                     tmp_path)
    finish_pod(core_v1, namespace, "demo-models-a1", message=handoff(
        "demo-models", branch=f"longshot/{namespace}/demo/demo-models", commit=commit))
    wait_for(lambda: list_of(custom, namespace, "mergejobs"), timeout=30, what="a MergeJob")
    custom.delete_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                           propagation_policy="Foreground")
    wait_for(lambda: not list_of(custom, namespace, "agenttasks") and not list_of(custom, namespace, "mergejobs")
             and not agent_pods(core_v1, namespace) and not list_of(custom, namespace, "buildrequests"),
             timeout=60, what="the build, its tasks, Pods and MergeJobs garbage-collected")


@pytest.mark.parametrize("n", [12])
def test_plan_of_many_tasks_respects_the_worker_limit(operator, core_v1, custom, namespace, n):
    tasks = [{"name": f"t{i}", "description": f"task {i}"} for i in range(n)]
    b = demo_build()
    b["spec"]["workers"] = {"max": 5}
    create(custom, namespace, b)
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, tasks))
    def running():
        tasks = [t for t in list_of(custom, namespace, "agenttasks")
                 if t["spec"]["role"] == "worker" and t.get("status", {}).get("phase") == "Running"]
        return tasks if len(tasks) >= 5 else None

    assert len(wait_for(running, timeout=30, what="5 Running worker tasks")) == 5
    # the Pods are created before their task's status says Running: by now every admitted task has its Pod
    assert len(agent_pods(core_v1, namespace)) == 6  # 5 workers + the planner's
    waiting = [t for t in list_of(custom, namespace, "agenttasks")
               if t["spec"]["role"] == "worker" and t.get("status", {}).get("phase") != "Running"]
    assert len(waiting) == n - 5


def test_malformed_handoff_fails_the_attempt_with_a_clear_reason(operator, core_v1, custom, namespace):
    create(custom, namespace, demo_build(retry={"maxAttempts": 1}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message='{"kind": "Handoff", "task": "demo-planner"')
    t = wait_task(custom, namespace, PLANNER, phase_is("Failed"), "Failed")
    attempt = t["status"]["attempts"][0]
    assert attempt["failureClass"] == "InvalidHandoff"
    assert "not JSON" in attempt["exitReason"]
    assert condition(t, "Succeeded")["reason"] == "InvalidHandoff"


def test_a_200_task_plan_arrives_through_git_without_a_size_cliff(operator, core_v1, custom, namespace, tmp_path):
    import sample_repo

    url = sample_repo.make(tmp_path)
    create(custom, namespace, build("demo", repository__url=url, planner__maxTasks=200, workers={"max": 3}))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    # the agent's side of the protocol: handoff.json committed on
    # refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>
    h = ho.Handoff(task=PLANNER, attempt=1, role="planner", outcome="succeeded",
                   tasks=[ho.PlannedTask(name=f"t{i:03d}", description=f"task {i} " + "x" * 100,
                                         depends_on=[f"t{i - 1:03d}"] if i % 10 else []) for i in range(200)])
    data = ho.encode(h)
    assert not ho.fits_termination_message(data)
    seed = tmp_path / "seed"
    (seed / ho.HANDOFF_FILE).write_bytes(data)
    sample_repo.git(seed, "checkout", "-q", "--orphan", "handoff")
    sample_repo.git(seed, "rm", "-rq", "--cached", ".")
    sample_repo.git(seed, "add", ho.HANDOFF_FILE)
    sample_repo.git(seed, "commit", "-q", "-m", "handoff")
    ref = ho.handoff_ref(namespace, "demo", PLANNER, 1)
    sample_repo.git(seed, "push", "-q", url.removeprefix("file://"), f"HEAD:{ref}")
    commit = sample_repo.git(seed, "rev-parse", "HEAD").strip()
    pointer = ho.HandoffPointer(ref=ref, commit=commit, sha256=ho.digest(data), size=len(data))
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=pointer.model_dump_json(by_alias=True))

    def planned():
        tasks = [t for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "worker"]
        return tasks if len(tasks) == 200 else None

    tasks = {t["metadata"]["name"]: t for t in wait_for(planned, timeout=90, what="200 worker tasks")}
    assert tasks["demo-t011"]["spec"]["dependsOn"] == ["demo-t010"]
    # the tasks are created before the build's status says Planned (its next write)
    wait_for(lambda: (condition(get(custom, namespace, "buildrequests", "demo"), "Planned") or {}).get("status")
             == "True", timeout=30, what="Planned=True")


def test_a_decomposed_task_goes_to_a_subplanner_and_its_dependents_wait(operator, core_v1, custom, namespace):
    start_and_plan(core_v1, custom, namespace, [
        {"name": "big", "description": "A big piece of work", "decompose": True},
        {"name": "after", "description": "Needs the big piece", "dependsOn": ["big"]},
    ])
    sub = wait_task(custom, namespace, "demo-big", lambda t: True, "exists")
    assert sub["spec"]["role"] == "planner" and sub["spec"]["depth"] == 0
    wait_pod(core_v1, namespace, "demo-big-a1")
    finish_pod(core_v1, namespace, "demo-big-a1", message=plan_handoff("demo-big", [
        {"name": "part1", "description": "first part"}, {"name": "part2", "description": "second part"}]))
    part1 = wait_task(custom, namespace, "demo-big-part1", lambda t: True, "a subtask")
    assert part1["spec"]["parentTask"] == "demo-big" and part1["spec"]["depth"] == 1
    wait_pod(core_v1, namespace, "demo-big-part1-a1")
    wait_pod(core_v1, namespace, "demo-big-part2-a1")
    # the subplanner succeeded, but its dependents wait until everything it was split into has succeeded
    assert "demo-after-a1" not in agent_pods(core_v1, namespace)
    for part in ("part1", "part2"):
        finish_pod(core_v1, namespace, f"demo-big-{part}-a1", message=handoff(f"demo-big-{part}"))
    wait_pod(core_v1, namespace, "demo-after-a1")
