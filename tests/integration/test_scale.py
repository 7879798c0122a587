"""Scale hygiene on the real API server: finished Pods deleted beyond ``spec.retention`` once their attempt is
recorded, everything of a build listed by its label, and a plan taken in whole with each task's first status.

No kubelet runs here: the tests play the kubelet's and the agent's part through the API (``kubelet_double``).
"""

from __future__ import annotations

import pytest
from k8s_builders import GROUP, VERSION, build, condition, create, list_of
from kubelet_double import finish_pod, handoff, plan_handoff

from longshot.api import agenttask
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PLANNER = "demo-planner"
AGENT_PODS = "app.kubernetes.io/managed-by=longshot-operator"


def pods(core, namespace, selector=AGENT_PODS):
    return {p.metadata.name: p for p in core.list_namespaced_pod(namespace, label_selector=selector).items}


def finished(core, namespace):
    return sorted(n for n, p in pods(core, namespace).items()
                  if p.status.phase in ("Succeeded", "Failed") and p.metadata.deletion_timestamp is None)


def task_status(custom, namespace, name):
    t = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "agenttasks", name)
    return t.get("status") or {}


def test_finished_pods_beyond_the_retention_are_deleted_once_their_attempt_is_recorded(
        operator, core_v1, custom, namespace):
    b = build("demo", workers={"max": 10}, retention={"finishedPods": 1})
    b["spec"]["finalization"] = {"enabled": False}
    b["spec"].setdefault("planner", {})["maxIterations"] = 1  # no second planner Pod in the count
    create(custom, namespace, b)
    wait_for(lambda: pods(core_v1, namespace).get(f"{PLANNER}-a1"), timeout=30, what="the planner's Pod")
    names = [f"part-{i}" for i in range(4)]
    finish_pod(core_v1, namespace, f"{PLANNER}-a1",
               message=plan_handoff(PLANNER, [{"name": n, "description": f"Write {n}"} for n in names]))
    workers = [f"demo-{n}" for n in names]
    wait_for(lambda: all(f"{w}-a1" in pods(core_v1, namespace) for w in workers), timeout=60,
             what="a Pod for each of the 4 tasks")
    # kept: the only finished Pod, and the planner's plan has been taken in anyway
    assert finished(core_v1, namespace) == [f"{PLANNER}-a1"]
    for i, w in enumerate(workers):
        finish_pod(core_v1, namespace, f"{w}-a1", message=handoff(w, summary="nothing to change"))
        wait_for(lambda w=w: task_status(custom, namespace, w).get("phase") == "Succeeded", timeout=60,
                 what=f"{w} recorded")
        # the most recently finished one stays (times are whole seconds: on a tie, the later started)
        wait_for(lambda: len(finished(core_v1, namespace)) == 1, timeout=60,
                 what=f"one Pod left of the {i + 2} finished ones")
    assert finished(core_v1, namespace) == [f"{workers[-1]}-a1"]
    for w in workers:  # what the deleted Pods said is kept in the tasks' status
        st = task_status(custom, namespace, w)
        assert st["phase"] == "Succeeded"
        assert st["attempts"][0]["pod"] == f"{w}-a1" and st["attempts"][0]["endTime"]
        assert st["attempts"][0]["exitReason"] == "Completed"
        assert st["handoff"]["summary"] == "nothing to change"
    # everything of the build lists by its label, without reading anything else
    by_build = "longshot.dev/build=demo"
    assert set(pods(core_v1, namespace, by_build)) == {f"{workers[-1]}-a1"}
    tasks = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "agenttasks", label_selector=by_build)
    assert {t["metadata"]["name"] for t in tasks["items"]} == {PLANNER, *workers}


def test_a_large_plan_is_taken_in_whole_each_task_pending_from_its_create(operator, core_v1, custom, namespace):
    """Issue 13: each new task took a second write for its initial status. It is Pending, with its conditions, from
    its create (the CRD's default status); the operator writes a task's status when something happens to it."""
    n = 150
    b = build("demo", workers={"max": 5})
    b["spec"]["planner"] = {"maxTasks": n}
    create(custom, namespace, b)
    wait_for(lambda: pods(core_v1, namespace).get(f"{PLANNER}-a1"), timeout=30, what="the planner's Pod")
    plan = [{"name": f"t{i:03d}", "description": f"task {i}", **({"dependsOn": [f"t{i - 1:03d}"]} if i % 3 else {})}
            for i in range(n)]
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, plan))

    def taken_in():
        items = [t for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "worker"]
        return items if len(items) == n and all((t.get("status") or {}).get("conditions") for t in items) else None

    items = wait_for(taken_in, timeout=120, what=f"{n} tasks, each with its status")
    untouched = 0
    for t in items:
        st = t["status"]
        assert st["phase"] in ("Pending", "Running"), t["metadata"]["name"]
        if "observedGeneration" not in st:  # never written: the default status, exactly
            assert st == agenttask.initial_status(), t["metadata"]["name"]
            untouched += 1
            continue
        assert st["observedGeneration"] == t["metadata"]["generation"]
        assert all(c["observedGeneration"] == t["metadata"]["generation"] and c["lastTransitionTime"]
                   for c in st["conditions"])
    assert untouched >= n // 3 - 5 - 1  # the independent tasks not started: no write of their own at all
    waiting = [t for t in items if t["spec"].get("dependsOn")]
    assert len(waiting) == 100
    wait_for(lambda: all(condition(t, "Reconciling")["reason"] == "WaitingForDependencies"
                         for t in list_of(custom, namespace, "agenttasks") if t["spec"].get("dependsOn")),
             timeout=60, what="every dependent task waiting for its dependency")
    running = [t for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "worker"
               and (t.get("status") or {}).get("phase") == "Running"]
    assert len(running) == 5  # workers.max
    built = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "demo")
    assert built["status"]["tasks"]["total"] == n + 1  # and the planner
