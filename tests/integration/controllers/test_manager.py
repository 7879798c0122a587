"""The shell against an in-memory API (the same KubeAPI interface as the real adapter): a failed status write
is retried and lands, a plan becomes tasks and Pods, the periodic resync and the health check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import driving
from fake_kube import Clock, FakeKube, build
from longshot import config, metrics
from longshot.api import agenttask, objects
from longshot.api import handoff as ho
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import controller as ctlmod
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.controllers import queue as mqc
from longshot.controllers import workqueue
from longshot.controllers.queue import checks as qchecks
from longshot.controllers.queue import jobs as mjc
from longshot.core import mergejobs as mj
from longshot.runtime import kube

pytestmark = pytest.mark.integration


async def one_running_one_held(fake: FakeKube, sync: Any) -> tuple[str, str]:
    """A build with one worker slot whose planner planned two tasks: ``(the Pod that runs, the Pod held back)``."""
    fake.create(build(workers={"max": 1}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(2)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    first = next(n for n in ("b-p0-a1", "b-p1-a1") if ("ns", n) in fake.pods)
    second = "b-p1-a1" if first == "b-p0-a1" else "b-p0-a1"
    assert ("ns", second) not in fake.pods  # held back: one worker slot
    return first, second


@pytest.fixture
def world():
    fake = FakeKube()
    clock = Clock()
    mono = [0.0]
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: mono[0])
    m.ctx.preflight = lambda k, b: None

    async def sync() -> None:
        """Deliver every object and Pod as a watch would, then run steps until nothing is due."""
        for _ in range(30):
            for (kind, _, _), obj in list(fake.objects.items()):
                m.observe(kind, "MODIFIED", obj)
            for pod in list(fake.pods.values()):
                m.observe("Pod", "MODIFIED", pod)
            await driving.step(m)
            await driving.settle(m)  # the merge queues' detached reconciles
            if not m.queue.pending():
                break

    return fake, m, clock, mono, sync


def status(fake: FakeKube, kind: str, name: str) -> dict[str, Any]:
    return fake.objects[(kind, "ns", name)].get("status") or {}


def cond(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions", []) if c["type"] == type_), {})


async def test_a_failed_status_write_is_retried_with_backoff_without_any_new_event(world):
    """Issue 9: one failed patch after spec.suspend: true was never retried over the following steps."""
    fake, m, clock, _mono, sync = world
    fake.create(build())
    await sync()
    obj = fake.patch("BuildRequest", "ns", "b", {"spec": {"suspend": True}})
    m.observe("BuildRequest", "MODIFIED", obj)  # the one and only event
    fake.fail_status[("BuildRequest", "b")] = [kube.Conflict("BuildRequest", "ns", "b", "injected"),
                                               RuntimeError("a webhook refused once")]

    def reconciles(result: str) -> float:
        return metrics.REGISTRY.get_sample_value("longshot_reconciles_total",
                                                 {"kind": "BuildRequest", "result": result}) or 0.0

    counted = {r: reconciles(r) for r in metrics.RECONCILE_RESULTS}
    await driving.step(m)
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 1
    await driving.step(m)  # not due yet: nothing happens
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 1
    clock.now += timedelta(seconds=1)
    await driving.step(m)
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 2
    assert cond(status(fake, "BuildRequest", "b"), "Suspended").get("status") != "True"
    clock.now += timedelta(seconds=5)
    await driving.step(m)
    st = status(fake, "BuildRequest", "b")
    assert cond(st, "Suspended")["status"] == "True" and st["phase"] == "Suspended"
    assert cond(st, "Reconciling")["reason"] == "Suspended"
    # each reconcile is counted by its result (longshot_reconciles_total)
    assert reconciles("Conflict") == counted["Conflict"] + 1 and reconciles("Error") == counted["Error"] + 1
    assert reconciles("Success") > counted["Success"]
    assert all(c["observedGeneration"] == 2 for c in st["conditions"])
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 0


async def test_a_plan_becomes_tasks_and_dependency_order_is_kept(world):
    fake, _m, _clock, _mono, sync = world
    fake.create(build())
    await sync()
    assert ("ns", "b-planner-a1") in fake.pods
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="a", description="A"),
                             ho.PlannedTask(name="c", description="C", depends_on=["a"])])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    assert {("AgentTask", "ns", "b-a"), ("AgentTask", "ns", "b-c")} <= set(fake.objects)
    assert ("ns", "b-a-a1") in fake.pods and ("ns", "b-c-a1") not in fake.pods
    c = status(fake, "AgentTask", "b-c")
    assert cond(c, "Reconciling")["reason"] == "WaitingForDependencies"
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Working" and cond(st, "Ready")["reason"] == "Working"


async def test_resync_marks_everything_and_health_follows_the_loop(world):
    fake, m, _clock, mono, sync = world
    fake.create(build())
    await sync()
    assert m.healthy()
    before = m.reconciles
    await driving.step(m)
    assert m.reconciles == before  # nothing is marked: nothing is reconciled
    mono[0] += managermod.STALL_SECONDS + 1
    assert not m.healthy()  # the loop has not turned
    await driving.step(m)  # the resync is due: everything is marked again and reconciled
    assert m.healthy()
    assert m.reconciles >= before + 2


async def test_a_plan_s_tasks_have_their_first_status_before_any_watch_event(world):
    """Issue 13: each new task got its initial conditions in a reconcile of its own, after its watch event, then
    in a second write after its create; now from the create itself."""
    fake, m, _clock, _mono, sync = world
    fake.create(build(suspend=True))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(40)])
    m.observe("BuildRequest", "MODIFIED", fake.patch("BuildRequest", "ns", "b", {"spec": {"suspend": False}}))
    await sync()
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire())))
    writes: list[str] = []
    patch_status = fake.patch_status
    fake.patch_status = lambda kind, ns, name, st, **kw: (  # type: ignore[method-assign]
        writes.append(name), patch_status(kind, ns, name, st, **kw))[1]
    created: list[str] = []
    for _ in range(5):  # no watch event is delivered: only what the shell wrote itself
        await driving.step(m)
        created = [k[2] for k in fake.objects if k[0] == "AgentTask" and k[2] != "b-planner"]
        if created:
            break  # the step that created them
    assert len(created) == 40
    for name in created:
        st = status(fake, "AgentTask", name)
        assert st["phase"] in ("Pending", "Running") and cond(st, "Ready")["status"] == "False"
        assert cond(st, "Succeeded")["reason"] == ("Pending" if st["phase"] == "Pending" else "InProgress")
    for name in created:  # pending from the create (the CRD's default status); one write for those admitted
        assert writes.count(name) == (0 if status(fake, "AgentTask", name)["phase"] == "Pending" else 1)
    assert any(writes.count(n) == 0 for n in created)


def task_by_hand(fake: FakeKube, name: str, **metadata: Any) -> dict[str, Any] | None:
    """An AgentTask of build ``b`` created directly (not planned by the operator)."""
    b = fake.objects[("BuildRequest", "ns", "b")]
    owner = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest", "name": "b",
             "uid": b["metadata"]["uid"], "controller": True}
    return fake.create({"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                        "metadata": {"name": name, "namespace": "ns", "ownerReferences": [owner], **metadata},
                        "spec": {"buildRef": {"name": "b"}, "description": "d"}})


async def test_a_task_made_by_hand_is_pending_from_its_creation_and_its_first_write_dates_what_held_since(world):
    """The CRD's default status carries no time: the first status the operator writes gives every condition that
    kept its status since the creation the creation time, and the ones that changed the time they did."""
    fake, m, clock, _mono, sync = world
    fake.create(build(suspend=True))
    await sync()
    assert task_by_hand(fake, "by-hand", creationTimestamp="2024-12-31T23:00:00Z") is not None
    await sync()
    assert status(fake, "AgentTask", "by-hand") == agenttask.initial_status()  # nothing to write yet
    clock.now += timedelta(minutes=5)
    m.observe("BuildRequest", "MODIFIED", fake.patch("BuildRequest", "ns", "b", {"spec": {"suspend": False}}))
    await sync()
    st = status(fake, "AgentTask", "by-hand")
    assert st["phase"] == "Running" and st["observedGeneration"] == 1
    running, stalled = cond(st, "Running"), cond(st, "Stalled")
    assert running["status"] == "True" and running["lastTransitionTime"] == "2025-01-01T00:05:00Z"
    assert stalled["status"] == "False" and stalled["lastTransitionTime"] == "2024-12-31T23:00:00Z"
    assert cond(st, "AwaitingInput")["lastTransitionTime"] == "2024-12-31T23:00:00Z"
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])


async def test_a_task_without_any_status_gets_its_initial_status_from_its_first_reconcile(world):
    """A CRD installed before it had a default status (the chart does not upgrade CRDs): a new task has no status,
    and its first reconcile writes the initial one, timed, instead of leaving it blank until it is dispatched."""
    fake, _m, clock, _mono, sync = world
    fake.create(build(suspend=True))
    await sync()
    task_by_hand(fake, "old-crd")
    del fake.objects[("AgentTask", "ns", "old-crd")]["status"]  # what an API server without the default stores
    clock.now += timedelta(minutes=5)
    await sync()
    st = status(fake, "AgentTask", "old-crd")
    assert st["phase"] == "Pending" and st["observedGeneration"] == 1
    assert {c["type"]: c["reason"] for c in st["conditions"]} == {
        t: r for t, _s, r, _m in agenttask.INITIAL_CONDITIONS}
    assert {c["lastTransitionTime"] for c in st["conditions"]} == {"2025-01-01T00:05:00Z"}  # when written


async def planned_with_retention(fake: FakeKube, sync: Any, keep: int) -> None:
    """A build keeping ``keep`` finished Pods whose planner planned five workers (``b-p0`` to ``b-p4``), running."""
    fake.create(build(retention={"finishedPods": keep}, workers={"max": 10}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(5)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()


async def test_finished_pods_beyond_the_retention_are_deleted_once_recorded(world):
    """Issue 13: a 10,000-task build left every finished Pod behind."""
    fake, _m, clock, _mono, sync = world
    await planned_with_retention(fake, sync, 2)
    assert {f"b-p{i}-a1" for i in range(5)} <= {n for _, n in fake.pods}
    for i in range(5):
        clock.now += timedelta(seconds=10)
        done = ho.Handoff(task=f"b-p{i}", attempt=1, role="worker", outcome="succeeded", summary="nothing to change")
        fake.finish_pod("ns", f"b-p{i}-a1", 0, json.dumps(done.to_wire()))
        await sync()
        assert status(fake, "AgentTask", f"b-p{i}")["attempts"][0]["endTime"]  # recorded before its Pod goes
    finished = sorted(n for (_, n), p in fake.pods.items() if p.get("status", {}).get("phase") == "Succeeded")
    assert finished == ["b-p3-a1", "b-p4-a1"]  # the planner's went too: its plan was taken in
    assert ("ns", "b-planner-i2-a1") in fake.pods  # a running Pod (the next iteration's planner) is not finished
    assert all(a["pod"] for i in range(5) for a in status(fake, "AgentTask", f"b-p{i}")["attempts"])


async def test_finished_pods_of_one_attempt_number_go_in_one_collection_delete(world):
    """A thousand agents ended ~30 Pods a second, each deleted by its own request (``make bench-fleet``): the Pods
    a build's reconcile lets go are deleted by label, one request per attempt number, and only those."""
    fake, _m, clock, _mono, sync = world
    await planned_with_retention(fake, sync, 1)
    fake.pod_collection_deletes.clear()
    clock.now += timedelta(seconds=10)
    for i in range(4):  # four end together; the fifth still runs
        done = ho.Handoff(task=f"b-p{i}", attempt=1, role="worker", outcome="succeeded", summary="nothing to change")
        fake.finish_pod("ns", f"b-p{i}-a1", 0, json.dumps(done.to_wire()))
    await sync()
    finished = sorted(n for (_, n), p in fake.pods.items() if p.get("status", {}).get("phase") == "Succeeded")
    assert len(finished) == 1 and ("ns", "b-p4-a1") in fake.pods  # one kept; the running one untouched
    assert len(fake.pod_collection_deletes) == 1
    ns, selector = fake.pod_collection_deletes[0]
    assert ns == "ns" and "longshot.dev/attempt=1" in selector and "longshot.dev/build=b" in selector
    assert all(f"b-p{i}" in selector for i in range(4) if f"b-p{i}-a1" not in finished)
    assert all(status(fake, "AgentTask", f"b-p{i}")["attempts"][0]["endTime"] for i in range(4))


async def test_dispatch_latency_counts_from_a_free_slot_not_from_the_wait_for_one(world):
    """A task that waited 10 minutes for a worker slot was dispatched at once when one came free."""
    from longshot import metrics

    def observed() -> tuple[float, float]:
        count = metrics.REGISTRY.get_sample_value("longshot_dispatch_latency_seconds_count") or 0.0
        total = metrics.REGISTRY.get_sample_value("longshot_dispatch_latency_seconds_sum") or 0.0
        return count, total

    fake, _m, clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)
    count, total = observed()
    clock.now += timedelta(minutes=10)
    await sync()  # nothing changes: still held
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    fake.finish_pod("ns", first, 0, json.dumps(done.to_wire()))
    await sync()
    assert ("ns", second) in fake.pods
    count2, total2 = observed()
    assert count2 == count + 1 and total2 - total < 1.0  # not 600 s


async def test_dispatch_latency_of_a_held_task_counts_from_the_pod_end_seen_during_the_step(world):
    """A slot that came free in the middle of a step (its Pod's end seen while the step's reconciles ran): the held
    task could start from then, not from the start of the step (bench-e2e's log showed 1-4 s "latencies" that were
    the step's reconciles before the slot was free)."""
    from longshot import metrics

    fake, m, clock, _mono, _sync = world
    first, second = await one_running_one_held(fake, _sync)
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    fake.finish_pod("ns", first, 0, json.dumps(done.to_wire()))
    real = m.reconcilers["AgentTask"]
    seen = []

    async def busy(ns: str, name: str) -> Any:
        if not seen:  # the step's reconciles take 3 s; the Pod's end arrives meanwhile, then 0.5 s more
            seen.append(name)
            clock.now += timedelta(seconds=3)
            m.observe("Pod", "MODIFIED", fake.pods[("ns", first)])
            clock.now += timedelta(seconds=0.5)
        return await real(ns, name)

    m.reconcilers["AgentTask"] = busy
    m.queue.add(("AgentTask", "ns", second[:-3]))
    before = metrics.REGISTRY.get_sample_value("longshot_dispatch_latency_seconds_sum") or 0.0
    await driving.step(m)
    assert ("ns", second) in fake.pods
    after = metrics.REGISTRY.get_sample_value("longshot_dispatch_latency_seconds_sum") or 0.0
    assert after - before == pytest.approx(0.5)  # not 3.5


async def test_a_merge_queue_busy_with_git_does_not_hold_up_dispatch_and_a_wedged_one_fails_health(world):
    """Issue 13: dispatch waited for the step's slowest reconcile, a merge queue's git work (p95 8.66 s)."""
    import asyncio

    fake, m, _clock, mono, sync = world
    fake.create(build(workers={"max": 5}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="a", description="A")])
    release = asyncio.Event()
    started = asyncio.Event()

    async def git_work(ns: str, name: str) -> list[Any]:
        started.set()
        await release.wait()
        return []

    m.reconcilers = {**m.reconcilers, "Queue": git_work}
    m.queue.add(("Queue", "", "shard|main"))
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire())))
    for _ in range(5):  # the plan's task is created and started while the queue still works
        await driving.step(m)
        if ("ns", "b-a-a1") in fake.pods:
            break
    assert started.is_set() and not release.is_set()
    assert ("ns", "b-a-a1") in fake.pods
    # the queue's reference is not handed out twice while it runs
    m.queue.add(("Queue", "", "shard|main"))
    await driving.step(m)
    assert len(m.controllers["Queue"].in_flight) == 1
    assert m.healthy()
    mono[0] += managermod.DETACHED_STALL_SECONDS + 1
    m.heartbeat = mono[0]
    assert not m.healthy()  # the loop turns, but the merge queue is wedged
    release.set()
    await driving.settle(m)
    assert m.healthy() and not m.controllers["Queue"].in_flight


async def test_a_dispatch_burst_creates_every_pod_before_any_status_write(world):
    """Issue 13: each admission made three round trips (Pod, Event, status) before the next Pod's turn came, so
    1,000 ready tasks became Pods at a third of the rate of plain concurrent creates."""
    fake, m, _clock, _mono, sync = world
    fake.create(build(workers={"max": 50}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(40)])
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire())))
    calls: list[tuple[str, str]] = []
    create_pod, patch_status = fake.create_pod, fake.patch_status
    fake.create_pod = lambda pod: (  # type: ignore[method-assign]
        calls.append(("pod", pod["metadata"]["name"])), create_pod(pod))[1]
    fake.patch_status = lambda kind, ns, name, st, **kw: (  # type: ignore[method-assign]
        calls.append(("status", name)), patch_status(kind, ns, name, st, **kw))[1]
    await sync()
    workers = {f"b-p{i}" for i in range(40)}
    creates = [i for i, (what, name) in enumerate(calls) if what == "pod" and name[:-3] in workers]
    assert len(creates) == 40
    # the admissions' status writes: those after the plan's tasks were created with their first status
    writes = [i for i, (what, name) in enumerate(calls) if what == "status" and name in workers and i > creates[0]]
    assert len(writes) >= 40
    assert max(creates) < min(writes)  # every Pod first
    for i in range(40):
        st = status(fake, "AgentTask", f"b-p{i}")
        assert st["phase"] == "Running" and st["attempts"][0]["pod"] == f"b-p{i}-a1"


async def test_a_task_whose_pod_exists_before_its_admission_is_written_holds_its_slot(world):
    """A replica that created a Pod and died before the task's status write: the next one counts that task as
    running (the worker limit holds) and adopts the Pod; it does not start another task in its slot."""
    fake, m, _clock, _mono, sync = world
    fake.create(build(workers={"max": 1}))
    await sync()
    task_owner = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "name": "b-p1", "uid": "uid-b-p1",
                  "controller": True}
    fake.create_pod({"metadata": {"name": "b-p1-a1", "namespace": "ns", "ownerReferences": [task_owner]},
                     "spec": {"containers": [{"name": "agent", "image": "agent"}]}})
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="p0", description="first", priority=9),
                             ho.PlannedTask(name="p1", description="second", priority=1)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    assert ("ns", "b-p0-a1") not in fake.pods  # p0 goes first by priority, but p1's Pod holds the one slot
    p1 = status(fake, "AgentTask", "b-p1")
    assert p1["phase"] == "Running" and [a["pod"] for a in p1["attempts"]] == ["b-p1-a1"]
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Pending"
    assert m.ctx.cache.pods[("ns", "b-p1-a1")].task == "b-p1"


async def test_a_slow_admission_is_logged_with_where_the_dispatch_ran(world, caplog):
    """The tail of longshot_dispatch_latency_seconds is explained in the log: which dispatch of the step, how many
    Pods, how late, and how long the creates themselves took."""
    fake, _m, clock, _mono, sync = world
    real = fake.create_pod

    def slow_create(pod: Any) -> Any:
        clock.now += timedelta(seconds=2)  # an API server that takes 2 s to answer
        return real(pod)

    fake.create_pod = slow_create  # type: ignore[method-assign]
    fake.create(build())
    with caplog.at_level("INFO", logger="longshot.dispatch"):
        await sync()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dispatch (")]
    assert lines and "1 of 1 Pods created 2.0-2.0s after their task could start" in lines[0], lines


async def p0_ended_unrecorded(fake: FakeKube, m: Any, sync: Any, **spec: Any) -> None:
    """A build of one worker slot whose planner planned p0 (first) and p1: p0 runs; then its Pod ends, and the next
    status write of p0 (recording that) is made to fail."""
    fake.create(build(workers={"max": 1}, **spec))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="p0", description="first", priority=9),
                             ho.PlannedTask(name="p1", description="second", priority=1)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Running" and ("ns", "b-p1-a1") not in fake.pods
    work = ho.Handoff(task="b-p0", attempt=1, role="worker", outcome="succeeded", summary="done")
    fake.finish_pod("ns", "b-p0-a1", 0, json.dumps(work.to_wire()))
    fake.fail_status[("AgentTask", "b-p0")] = [RuntimeError("the API server is busy")]
    m.observe("Pod", "MODIFIED", fake.pods[("ns", "b-p0-a1")])


async def test_with_a_budget_an_ended_task_holds_its_slot_until_its_usage_is_recorded(world):
    """The handoff may carry usage that spends the budget: nothing starts in the slot before it is recorded."""
    fake, m, _clock, _mono, sync = world
    await p0_ended_unrecorded(fake, m, sync, budget={"maxTokens": 100})
    await driving.step(m)
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Running"
    assert ("ns", "b-p1-a1") not in fake.pods


async def test_a_task_whose_pod_ended_frees_its_slot_before_its_reconcile_records_it(world):
    """Issue 13 (dispatch latency): a slot is free once its Pod has ended. The next task's Pod is created first in
    the step that sees the end, before the ended task's own reconcile writes its status; and a task whose end could
    not be recorded yet (its status write failed, retried later) does not hold the slot meanwhile."""
    fake, m, clock, _mono, sync = world
    await p0_ended_unrecorded(fake, m, sync)
    before = len(fake.calls)
    await driving.step(m)
    calls = fake.calls[before:]
    assert ("ns", "b-p1-a1") in fake.pods  # started in the slot p0's ended Pod freed
    assert calls.index("create_pod") < calls.index("patch_status"), calls  # before p0's status write
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Running"  # its write failed: retried later
    clock.now += timedelta(seconds=1)
    await sync()
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Succeeded"


async def test_bounded_runs_every_item_at_most_limit_at_once_in_order_and_raises_after_trying_all():
    import asyncio

    in_flight, most, seen = 0, 0, []

    async def work(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)  # yield: the other workers run meanwhile
        seen.append(i)
        in_flight -= 1
        if i == 3:
            raise ValueError("item 3")
        return i * 10

    assert await ctlmod.bounded(list(range(3)), work, 8) == [0, 10, 20]
    seen.clear()
    most = 0
    with pytest.raises(ValueError, match="item 3"):
        await ctlmod.bounded(list(range(100)), work, 8)
    assert sorted(seen) == list(range(100))  # the failure did not stop the rest
    assert most == 8  # bounded, and concurrent
    assert await ctlmod.bounded([], work, 8) == []


async def test_a_freed_slot_is_filled_before_the_steps_build_reconciles_run(world):
    """Issue 13: dispatch waited for every reconcile of its step, the builds' status writes included (seconds on
    a busy node): a task that ended freed its slot, and the next task's Pod waited for all of them."""
    import asyncio

    fake, m, _clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)

    release, entered = asyncio.Event(), asyncio.Event()
    builds_reconciled = m.reconcilers["BuildRequest"]

    async def slow_build(ns: str, name: str) -> list[Any]:
        entered.set()
        await release.wait()
        return await builds_reconciled(ns, name)

    m.reconcilers = {**m.reconcilers, "BuildRequest": slow_build}
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", first, 0, json.dumps(done.to_wire())))
    m.queue.add(("BuildRequest", "ns", "b"))
    step = asyncio.create_task(driving.step(m))
    await asyncio.wait_for(entered.wait(), timeout=30)  # the step has run up to the (blocked) build reconcile
    assert ("ns", second) in fake.pods and not release.is_set()
    release.set()
    await step


async def test_a_slot_freed_while_a_step_is_busy_is_filled_before_the_step_ends(world):
    """Issue 13 (dispatch p95): a Pod that ended while a step's reconciles ran waited for the rest of the step (the
    builds' status writes: 1.5-2.5 s on a busy node, bench-e2e's log). The dispatcher fills the slot beside it."""
    import asyncio

    fake, m, _clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)
    release, entered, created = asyncio.Event(), asyncio.Event(), asyncio.Event()
    builds_reconciled = m.reconcilers["BuildRequest"]

    async def slow_build(ns: str, name: str) -> list[Any]:
        entered.set()
        await release.wait()
        return await builds_reconciled(ns, name)

    real_create, real_status = fake.create_pod, fake.patch_status
    written = asyncio.Event()

    def create_pod(pod: Any) -> Any:
        made = real_create(pod)
        if pod["metadata"]["name"] == second:
            created.set()
        return made

    def patch_status(kind: str, ns: str, name: str, st: Any, **kw: Any) -> Any:
        out = real_status(kind, ns, name, st, **kw)
        if name == second[:-3] and st.get("phase") == "Running":
            written.set()
        return out

    fake.create_pod = create_pod  # type: ignore[method-assign]
    fake.patch_status = patch_status  # type: ignore[method-assign]
    m.reconcilers = {**m.reconcilers, "BuildRequest": slow_build}
    runner = asyncio.create_task(m.run())
    m.queue.add(("BuildRequest", "ns", "b"))
    await asyncio.wait_for(entered.wait(), timeout=30)  # the loop's step is in the (blocked) build reconcile
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", first, 0, json.dumps(done.to_wire())))
    await asyncio.wait_for(created.wait(), timeout=30)
    assert not release.is_set()  # the step is still in its build reconcile
    await asyncio.wait_for(written.wait(), timeout=30)  # the admission's status write, beside the step too
    release.set()
    m.stop()
    await asyncio.wait_for(runner, timeout=30)
    assert [a["pod"] for a in status(fake, "AgentTask", second[:-3])["attempts"]] == [second]


async def test_a_task_being_reconciled_is_admitted_after_its_reconcile_not_beside_it(world):
    """The dispatcher runs beside the step, but a task is never reconciled and admitted at once (the work queue's
    promise): chosen while its reconcile is in flight, it is admitted by the step's dispatch after that reconcile."""
    import asyncio

    fake, m, _clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)
    release, entered, dispatched = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks_reconciled = m.reconcilers["AgentTask"]

    async def slow_task(ns: str, name: str) -> list[Any]:
        if name == second[:-3]:
            entered.set()
            await release.wait()
        return await tasks_reconciled(ns, name)

    real_dispatch = m.dispatcher.dispatch

    async def spy(why: str = "") -> None:
        await real_dispatch(why)
        if "a Pod ended" in why:
            dispatched.set()

    creates: list[str] = []
    real_create = fake.create_pod
    created = asyncio.Event()

    def create_pod(pod: Any) -> Any:
        creates.append(pod["metadata"]["name"])
        made = real_create(pod)
        if pod["metadata"]["name"] == second:
            created.set()
        return made

    fake.create_pod = create_pod  # type: ignore[method-assign]
    m.reconcilers = {**m.reconcilers, "AgentTask": slow_task}
    m.dispatcher.dispatch = spy  # type: ignore[method-assign]
    runner = asyncio.create_task(m.run())
    m.queue.add(("AgentTask", "ns", second[:-3]))
    await asyncio.wait_for(entered.wait(), timeout=30)
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", first, 0, json.dumps(done.to_wire())))
    await asyncio.wait_for(dispatched.wait(), timeout=30)
    assert ("ns", second) not in fake.pods  # chosen, but its reconcile is in flight
    release.set()
    await asyncio.wait_for(created.wait(), timeout=30)  # the dispatch after the task's reconcile admitted it
    m.stop()
    await asyncio.wait_for(runner, timeout=30)
    await sync()
    assert creates.count(second) == 1
    assert [a["pod"] for a in status(fake, "AgentTask", second[:-3])["attempts"]] == [second]


async def test_a_dispatch_that_reads_what_the_last_plan_read_makes_no_plan_and_a_failed_admission_plans_again(
        world, monkeypatch):
    """Every step dispatched twice, each a plan over every task, whether or not anything the plan reads had changed
    (13% of the operator's CPU in bench-e2e's profile). Nothing changed: no plan. An admission that failed is planned
    again at the next dispatch, though nothing changed."""
    from longshot.controllers import dispatch

    fake, m, _clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)
    plans = []
    real_plan = dispatch.plan
    monkeypatch.setattr(dispatch, "plan", lambda ctx, *rest: (plans.append(1), real_plan(ctx, *rest))[1])
    await m.dispatcher.dispatch("again")
    await driving.step(m)
    assert plans == []  # nothing changed since the last plan
    fake.fail_next["create_pod"] = [RuntimeError("the API server is busy")]
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    m.observe("Pod", "MODIFIED", fake.finish_pod("ns", first, 0, json.dumps(done.to_wire())))
    await m.dispatcher.dispatch("a Pod ended")
    assert len(plans) == 1 and ("ns", second) not in fake.pods  # its admission failed
    await m.dispatcher.dispatch("again")  # nothing has changed since, but the task is still to start
    assert len(plans) == 2 and ("ns", second) in fake.pods
    m.ctx.killswitch = True
    await m.dispatcher.dispatch("killswitch")
    assert len(plans) == 3


async def test_a_slow_reconcile_is_logged_with_its_kind_and_object(world, caplog):
    """A reconcile that took seconds says which kind and object took them (the first thing to know about a slow
    operator at 3 a.m.); a quick one says nothing."""
    from longshot.controllers import controller

    fake, m, _clock, mono, sync = world
    fake.create(build())
    await sync()
    builds_reconciled = m.reconcilers["BuildRequest"]

    async def slow_build(ns: str, name: str) -> list[Any]:
        mono[0] += controller.SLOW_RECONCILE_SECONDS + 2
        return await builds_reconciled(ns, name)

    m.reconcilers = {**m.reconcilers, "BuildRequest": slow_build}
    m.queue.add(("AgentTask", "ns", "b-planner"))
    with caplog.at_level("WARNING", logger="longshot.controller"):
        await driving.step(m)
    assert not any("took" in r.getMessage() for r in caplog.records)  # no build reconciled: quick
    m.queue.add(("BuildRequest", "ns", "b"))
    with caplog.at_level("WARNING", logger="longshot.controller"):
        await driving.step(m)
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == [f"a reconcile of BuildRequest ns/b took {controller.SLOW_RECONCILE_SECONDS + 2:.1f}s"], slow


def merged_job(name: str, task: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob",
            "metadata": {"name": name, "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "taskRef": {"name": task}, "branch": f"longshot/ns/b/{task}",
                     "commit": "a" * 40, "target": "main", "strategy": "rebase"}}


async def three_planned(fake: FakeKube, sync: Any) -> None:
    """A build with four worker slots whose planner planned three tasks."""
    fake.create(build(workers={"max": 4}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(3)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()


def merged(fake: FakeKube, task: str) -> None:
    """The task's branch merged (its MergeJob, as the merge queue leaves it)."""
    fake.create(merged_job(task, task))
    fake.patch_status("MergeJob", "ns", task, {"phase": "Merged"})


async def test_periodic_sweeps_follow_merges_and_a_failed_one_gets_a_fixer(world):
    """The shell gathers the facts for core.sweeps.next_sweep and creates what it decides."""
    fake, _m, clock, _mono, sync = world
    await three_planned(fake, sync)
    assert ("AgentTask", "ns", "b-sweep-1") not in fake.objects  # nothing merged yet
    merged(fake, "b-p0")
    await sync()
    sweep = fake.objects[("AgentTask", "ns", "b-sweep-1")]
    assert sweep["metadata"]["annotations"]["longshot.dev/merged-count"] == "1"
    failed = ho.Handoff(task="b-sweep-1", attempt=1, role="tester", outcome="succeeded", verdict="failed",
                        summary="make test fails", reasons=["test_api.py::test_get FAILED"])
    fake.finish_pod("ns", "b-sweep-1-a1", 0, json.dumps(failed.to_wire()))
    await sync()
    assert status(fake, "AgentTask", "b-sweep-1")["phase"] == "Succeeded"
    assert ("AgentTask", "ns", "b-sweep-2") not in fake.objects  # nothing merged since it began
    merged(fake, "b-p1")
    clock.now += timedelta(seconds=80)  # a quarter of the 300 s interval after a failed sweep
    await sync()
    assert fake.objects[("AgentTask", "ns", "b-sweep-2")]["metadata"]["annotations"][
        "longshot.dev/merged-count"] == "2"
    fixer = fake.objects[("AgentTask", "ns", "b-sweep-1-fix")]
    assert fixer["spec"]["role"] == "fixer" and "test_api.py::test_get FAILED" in fixer["spec"]["description"]


async def test_a_sweep_s_merged_count_edited_to_a_non_number_reads_as_none_merged_and_fails_nothing(world):
    """A person's edit of a sweep task's annotation must not make every reconcile of its build fail: the count
    reads as 0, so the next sweep is due by time alone."""
    fake, _m, clock, _mono, sync = world
    await three_planned(fake, sync)
    merged(fake, "b-p0")
    await sync()
    fake.patch("AgentTask", "ns", "b-sweep-1", {"metadata": {"annotations": {"longshot.dev/merged-count": "lots"}}})
    passed = ho.Handoff(task="b-sweep-1", attempt=1, role="tester", outcome="succeeded", verdict="passed",
                        summary="make test passes")
    fake.finish_pod("ns", "b-sweep-1-a1", 0, json.dumps(passed.to_wire()))
    await sync()
    assert status(fake, "AgentTask", "b-sweep-1")["phase"] == "Succeeded"
    clock.now += timedelta(seconds=301)  # the interval after a passed sweep; one branch merged since "0"
    await sync()
    assert fake.objects[("AgentTask", "ns", "b-sweep-2")]["metadata"]["annotations"][
        "longshot.dev/merged-count"] == "1"


async def iteration_two_with_its_early_sweep(fake: FakeKube, sync: Any) -> None:
    """A build whose one planned task changed nothing: the iteration ends, and the next iteration's planner and the
    early final sweep start side by side."""
    fake.create(build(planner={"maxIterations": 2}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="p0", description="part 0")])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    done = ho.Handoff(task="b-p0", attempt=1, role="worker", outcome="succeeded", summary="nothing to change")
    fake.finish_pod("ns", "b-p0-a1", 0, json.dumps(done.to_wire()))
    await sync()
    early = fake.objects[("AgentTask", "ns", "b-final-i2")]
    assert early["metadata"]["labels"]["longshot.dev/purpose"] == "final"
    assert early["metadata"]["annotations"]["longshot.dev/sweep-iteration"] == "2"
    assert {("ns", "b-planner-i2-a1"), ("ns", "b-final-i2-a1")} <= set(fake.pods)  # both running at once
    assert status(fake, "BuildRequest", "b")["phase"] == "Planning"


async def test_the_final_sweep_runs_beside_the_last_planner_and_is_adopted_when_it_answers_done(world):
    """Issue 13: the build's tail was the last re-plan, then the final sweep; now they overlap."""
    fake, _m, _clock, _mono, sync = world
    await iteration_two_with_its_early_sweep(fake, sync)
    passed = ho.Handoff(task="b-final-i2", attempt=1, role="tester", outcome="succeeded", verdict="passed",
                        summary="make test passes")
    fake.finish_pod("ns", "b-final-i2-a1", 0, json.dumps(passed.to_wire()))
    await sync()
    assert status(fake, "BuildRequest", "b")["phase"] == "Planning"  # a passed sweep alone finishes nothing
    answer = ho.Handoff(task="b-planner-i2", attempt=1, role="planner", outcome="succeeded", done=True,
                        summary="the request is met")
    fake.finish_pod("ns", "b-planner-i2-a1", 0, json.dumps(answer.to_wire()))
    await sync()
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Succeeded" and cond(st, "Finalized")["status"] == "True", st
    assert st["finalizationAttempts"] == 1 and st["lastSweep"]["result"] == "Passed"
    assert ("AgentTask", "ns", "b-final-1") not in fake.objects  # the early sweep was attempt 1's: no second run
    assert fake.objects[("AgentTask", "ns", "b-final-i2")]["metadata"]["annotations"][
        "longshot.dev/final-attempt"] == "1"


async def test_an_adopted_early_sweep_that_fails_is_attempt_one_s_failure(world):
    fake, _m, _clock, _mono, sync = world
    await iteration_two_with_its_early_sweep(fake, sync)
    answer = ho.Handoff(task="b-planner-i2", attempt=1, role="planner", outcome="succeeded", done=True,
                        summary="the request is met")
    fake.finish_pod("ns", "b-planner-i2-a1", 0, json.dumps(answer.to_wire()))
    await sync()
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Finalizing" and st["finalizationAttempts"] == 1  # waits for the adopted sweep
    failed = ho.Handoff(task="b-final-i2", attempt=1, role="tester", outcome="succeeded", verdict="failed",
                        summary="make test fails", reasons=["test_x FAILED"])
    fake.finish_pod("ns", "b-final-i2-a1", 0, json.dumps(failed.to_wire()))
    await sync()
    st = status(fake, "BuildRequest", "b")
    assert st["finalizationAttempts"] == 2 and st["lastSweep"]["result"] == "Failed"
    fixer = fake.objects[("AgentTask", "ns", "b-final-i2-fix")]  # the failing sweep gets its fixer
    assert "test_x FAILED" in fixer["spec"]["description"]


async def test_an_early_sweep_is_cancelled_when_the_planner_plans_more_and_the_last_one_runs_after(world):
    fake, _m, _clock, _mono, sync = world
    await iteration_two_with_its_early_sweep(fake, sync)
    more = ho.Handoff(task="b-planner-i2", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="p1", description="part 1")])
    fake.finish_pod("ns", "b-planner-i2-a1", 0, json.dumps(more.to_wire()))
    await sync()
    assert fake.objects[("AgentTask", "ns", "b-final-i2")]["spec"]["cancel"] is True
    assert status(fake, "AgentTask", "b-final-i2")["phase"] == "Cancelled"
    assert ("ns", "b-final-i2-a1") not in fake.pods or \
        fake.pods[("ns", "b-final-i2-a1")].get("metadata", {}).get("deletionTimestamp")
    done = ho.Handoff(task="b-p1", attempt=1, role="worker", outcome="succeeded", summary="nothing to change")
    fake.finish_pod("ns", "b-p1-a1", 0, json.dumps(done.to_wire()))
    await sync()  # the last iteration (maxIterations 2) ended: finalization runs its own sweep
    assert ("AgentTask", "ns", "b-final-i3") not in fake.objects
    assert ("AgentTask", "ns", "b-final-1") in fake.objects
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Finalizing" and "lastSweep" not in st  # the cancelled sweep is no result


async def test_an_early_sweep_whose_iteration_annotation_was_edited_is_an_ordinary_final_sweep(world):
    """A person's edit of ``longshot.dev/sweep-iteration`` to a non-number: the sweep is neither adopted nor
    cancelled, and finalization runs its own sweep; nothing fails."""
    fake, _m, _clock, _mono, sync = world
    await iteration_two_with_its_early_sweep(fake, sync)
    fake.patch("AgentTask", "ns", "b-final-i2", {"metadata": {"annotations": {"longshot.dev/sweep-iteration": "x2"}}})
    answer = ho.Handoff(task="b-planner-i2", attempt=1, role="planner", outcome="succeeded", done=True,
                        summary="the request is met")
    fake.finish_pod("ns", "b-planner-i2-a1", 0, json.dumps(answer.to_wire()))
    await sync()
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Finalizing" and st["finalizationAttempts"] == 1
    assert ("AgentTask", "ns", "b-final-1") in fake.objects
    early = fake.objects[("AgentTask", "ns", "b-final-i2")]
    assert not early["spec"].get("cancel") and "longshot.dev/final-attempt" not in early["metadata"]["annotations"]


def repository_with_branches(root: Path, tasks: list[str]) -> tuple[str, dict[str, str]]:
    """A bare repository with ``main`` and a branch per task adding its own file: (file URL, task -> commit)."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(root), "PATH": "/usr/bin:/bin"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root / "work"), *args], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "r.git")], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root / "work")], check=True)
    (root / "work" / "README.md").write_text("r\n")
    git("add", "-A")
    git("commit", "-q", "-m", "init")
    git("push", "-q", str(root / "r.git"), "main")
    commits = {}
    for t in tasks:
        git("checkout", "-q", "-b", f"longshot/ns/b/{t}", "main")
        (root / "work" / f"{t}.txt").write_text(f"{t}\n")
        git("add", "-A")
        git("commit", "-q", "-m", t)
        git("push", "-q", str(root / "r.git"), f"longshot/ns/b/{t}")
        commits[t] = git("rev-parse", "HEAD")
    return f"file://{root / 'r.git'}", commits


def held_checks(m: Any) -> set[str]:
    """The jobs whose checks passed and are held for their next status write (``QueueReconciler.passed``)."""
    return {name for (_ns, name), _h in m.queues.passed.items()}


def queue_with_jobs(world: Any, tmp_path: Path, tasks: list[str], *, passed: tuple[str, ...],
                    pending: tuple[str, ...]) -> str:
    """A build (window 4, a real repository) with a MergeJob per task on its own branch: those in ``passed`` through
    their checks, those in ``pending`` seen by the MergeJob reconciler and waiting for theirs, the rest without
    conditions yet; all observed. The queue's name."""
    fake, m, _clock, _mono, _sync = world
    url, commits = repository_with_branches(tmp_path / "git", tasks)
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"},
                      merge={"strategy": "rebase", "window": 4}))
    for task in tasks:
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
    checked = {"type": "ChecksPassed", "status": "True", "reason": "Completed", "message": "the secret scan passed",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}
    waiting = {**checked, "status": "Unknown", "reason": "Pending", "message": "the secret scan runs"}
    for task in passed:
        fake.patch_status("MergeJob", "ns", task, {"phase": "Queued", "checks": "passed", "conditions": [checked]})
    for task in pending:
        fake.patch_status("MergeJob", "ns", task, {"phase": "Queued", "checks": "pending", "conditions": [waiting]})
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    return cachemod.queue_name(m.cache.builds[("ns", "b")], "main")


async def test_the_queue_gates_ready_jobs_without_waiting_for_the_checks_of_new_ones(world, tmp_path):
    """While workers keep finishing, nearly every queue reconcile has new MergeJobs to check: the batch step gates
    what is ready and leaves the checks to the queue's checks step, its own reconcile beside it (issue 34: the scans
    of the jobs that came in held every gate's verdict for 2.5 s a reconcile). The checks step holds the verdicts that
    passed and wakes the batch step; each job is written once, when it joins a batch: its first conditions
    (Observed), its checks and its batch."""
    _fake, m, _clock, _mono, _sync = world
    # b-p1 and b-p3 observed already; b-p2 new (no conditions yet)
    queue = queue_with_jobs(world, tmp_path, ["b-p0", "b-p1", "b-p2", "b-p3"], passed=("b-p0",),
                            pending=("b-p1", "b-p3"))
    actions = await m.reconcilers["Queue"]("", queue)
    gates = [a.manifest for a in actions if isinstance(a, ex.CreateObject)
             and a.manifest["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    assert gates, actions  # b-p0's batch, gated now
    writes = {a.name: a for a in actions if isinstance(a, ex.WriteStatus)}
    assert set(writes) == {"b-p0"}, actions  # no scan in the batch step
    assert writes["b-p0"].status["phase"] == "Testing" and writes["b-p0"].status["batch"]["position"] == 1
    assert ("Queue", "", mqc.CHECKS + queue) in [a.ref for a in actions if isinstance(a, ex.Requeue)]
    checks = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    assert not [a for a in checks if isinstance(a, ex.CreateObject)], checks  # no batch in the checks step
    assert not [a for a in checks if isinstance(a, ex.WriteStatus)], checks  # passed: held for their batch's write
    assert held_checks(m) == {"b-p1", "b-p2", "b-p3"}
    assert ("Queue", "", queue) in [a.ref for a in checks if isinstance(a, ex.Requeue)]  # the batch step woken
    actions = await m.reconcilers["Queue"]("", queue)  # (b-p0's write not applied: it joins a batch again)
    writes = {a.name: a for a in actions if isinstance(a, ex.WriteStatus)}
    assert {"b-p1", "b-p2", "b-p3"} <= set(writes), actions
    for task in ("b-p1", "b-p2", "b-p3"):  # one write each: its checks and its batch
        write = writes[task]
        assert write.status["phase"] == "Testing" and write.status["checks"] == "passed", write
        assert {c["type"]: c for c in write.status["conditions"]}["ChecksPassed"]["status"] == "True"
    new = writes["b-p2"]
    assert {"Merged", "Conflicted", "AwaitingApproval"} <= {c["type"] for c in new.status["conditions"]}  # Observed's
    assert new.status["observedGeneration"] is not None


async def test_the_merge_job_controller_writes_nothing_and_routes_a_job_to_its_queue(world, tmp_path):
    """The queue is the only writer of MergeJob status: the MergeJob controller sends a job's change to its queue's
    batch step (its forge poll while it waits on its pull request). A new job waiting for its checks keeps the
    CRD's default status until its checks are written; no timer writes it first."""
    fake, m, clock, _mono, _sync = world
    queue = queue_with_jobs(world, tmp_path, ["b-p0"], passed=(), pending=())
    assert await m.reconcilers["MergeJob"]("ns", "b-p0") == [ex.Requeue(("Queue", "", queue), clock.now)]
    clock.now += timedelta(hours=1)
    actions = await m.reconcilers["Queue"]("", queue)
    assert not [a for a in actions if isinstance(a, ex.WriteStatus)], actions  # the checks step's to write first
    fake.patch_status("MergeJob", "ns", "b-p0", {"phase": "AwaitingForge", "checks": "passed"})
    m.observe("MergeJob", "MODIFIED", fake.objects[("MergeJob", "ns", "b-p0")])
    assert await m.reconcilers["MergeJob"]("ns", "b-p0") == [ex.Requeue(mqc.forge_key("ns", "b-p0"), clock.now)]


async def test_the_batch_step_writes_the_first_status_of_a_job_no_step_checks(world, tmp_path):
    """A job without conditions that is not waiting for its checks (a conflicted one after a restore) gets its first
    status (``Observed``) from the batch step, the one writer; it used to be the MergeJob reconciler's."""
    fake, m, _clock, _mono, _sync = world
    queue = queue_with_jobs(world, tmp_path, ["b-p0", "b-p1"], passed=("b-p0",), pending=())
    obj = fake.objects[("MergeJob", "ns", "b-p1")]
    m.cache.observe("MergeJob", "MODIFIED", {**obj, "status": {"phase": "Conflicted", "checks": "passed",
                                                                "conflictBase": "0" * 40},
                                             "metadata": {**obj["metadata"], "resourceVersion": "998"}})
    actions = await m.reconcilers["Queue"]("", queue)
    writes = {a.name: a.status for a in actions if isinstance(a, ex.WriteStatus)}
    assert writes["b-p1"]["phase"] == "Conflicted", actions
    assert "Merged" in {c["type"] for c in writes["b-p1"]["conditions"]}  # Observed's conditions


async def test_finalization_asks_the_queue_to_try_a_job_again_and_the_queue_answers(world):
    """Finalization does not write MergeJobs: it annotates the job (``finalization.RETRY_ASKED``), and counts it as
    not finished while the annotation is there. The queue tries the failed job again (its one status write), then
    takes the annotation away. No git: the queue has no job in it to batch."""
    from longshot.core import finalization

    fake, m, _clock, _mono, _sync = world
    fake.create(build(repository={"url": "file:///nowhere.git"}))
    fake.create(merged_job("b-p0", "b-p0"))
    fake.patch_status("MergeJob", "ns", "b-p0", {"phase": "Failed", "checks": "passed"})
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    b = m.cache.builds[("ns", "b")]
    asked = m.builds.final.ask_retry(b, ["b-p0", "gone"], 2)
    assert asked == [ex.PatchObject("MergeJob", "ns", "b-p0",
                                    {"metadata": {"annotations": {finalization.RETRY_ASKED: "2"}}})]
    await m.executor.run(asked)
    (view,) = m.builds.final.job_views(b, [])
    assert not view.finished and not view.retryable  # the queue has it: finalization waits
    queue = cachemod.queue_name(b, "main")
    actions = await m.reconcilers["Queue"]("", queue)
    (write,) = [a for a in actions if isinstance(a, ex.WriteStatus)]
    assert write.name == "b-p0" and write.status["phase"] == "Queued", actions
    assert not [a for a in actions if isinstance(a, ex.PatchObject)]  # the ask stays until the retry is written
    await m.executor.run(actions)
    assert status(fake, "MergeJob", "b-p0")["phase"] == "Queued"
    fake.patch_status("MergeJob", "ns", "b-p0", {"phase": "Merged"})  # tried again, and merged (no git here)
    m.observe("MergeJob", "MODIFIED", fake.objects[("MergeJob", "ns", "b-p0")])
    actions = await m.reconcilers["Queue"]("", queue)
    assert ex.PatchObject("MergeJob", "ns", "b-p0",
                          {"metadata": {"annotations": {finalization.RETRY_ASKED: None}}}) in actions, actions
    assert not [a for a in actions if isinstance(a, ex.WriteStatus)]


async def test_a_queue_reconcile_checks_a_slice_of_the_new_jobs_and_comes_back_for_the_rest(world, tmp_path,
                                                                                             monkeypatch):
    """A thousand workers finishing at once: a reconcile that checked (and wrote) every new job held the step for
    20 to 30 s (``make bench-fleet``). The checks step checks a slice and is requeued now for the rest."""
    monkeypatch.setattr(qchecks, "CHECKS_PER_RECONCILE", 2)
    _fake, m, _clock, _mono, _sync = world
    new = ("b-p1", "b-p2", "b-p3", "b-p4")
    queue = queue_with_jobs(world, tmp_path, ["b-p0", *new], passed=("b-p0",), pending=new)
    actions = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    assert held_checks(m) == {"b-p1", "b-p2"}, actions  # the first two new in queue order; b-p3 and b-p4 next time
    assert not [a for a in actions if getattr(a, "name", None) in ("b-p0", "b-p3", "b-p4")]
    assert ("Queue", "", mqc.CHECKS + queue) in [a.ref for a in actions if isinstance(a, ex.Requeue)]


def test_the_checks_budget_counts_the_time_the_scans_hold_the_workspace_not_a_wait_for_it(tmp_path):
    """Half of the checks reconciles of a thousand-agent run checked one job: each scan first waited for the batch
    step's git work (a prepare holds the workspace 3 to 4 s), and that wait spent the 2 s budget. The budget now
    counts the time the scans hold the workspace's lock."""
    import threading

    from longshot.vcs import workspace as vws
    tasks = [f"b-p{i}" for i in range(4)]
    url, commits = repository_with_branches(tmp_path / "git", tasks)
    w = vws.Workspace(url, tmp_path / "ws")
    mqc.speculate.head_of(w, "main")
    items = [mqc.ScanItem(t, "main", f"longshot/ns/b/{t}", commits[t]) for t in tasks]
    held = threading.Event()
    release = threading.Event()

    def batch_step() -> None:  # another user of the workspace holds it first
        with w.locked():
            held.set()
            release.wait(20)

    other = threading.Thread(target=batch_step)
    other.start()
    held.wait(20)
    now = [0.0]
    answers: dict[str, mqc.ScanResult] = {}
    scanning = threading.Thread(target=lambda: answers.update(mqc.scan_slice(
        w, items, budget=2.0, timeout=None, clock=lambda: now[0])))
    scanning.start()
    now[0] += 60.0  # a minute passes while the batch step holds the workspace
    release.set()
    other.join(20)
    scanning.join(60)
    assert sorted(answers) == tasks and all(a == [] for a in answers.values())  # every one scanned, none found

    def slow() -> float:  # each reading of the clock is a second later: each scan holds the lock for a second
        now[0] += 1.0
        return now[0]

    answers = mqc.scan_slice(w, items, budget=2.0, timeout=None, clock=slow)
    assert list(answers) == tasks[:2]


async def test_the_checks_step_scans_in_its_own_workspace_while_the_batch_step_holds_the_queue_s(world, tmp_path):
    """With a thousand agents the batch step (fetch, prepare, push) held the queue's workspace 60 % of the time, the
    scans waited for the rest, and the checks became the queue's wall (1,400 jobs waiting for them). The checks step
    now works in a workspace of its own: it checks while the batch step's is held."""
    import threading

    _fake, m, _clock, _mono, _sync = world
    new = ("b-p1", "b-p2")
    queue = queue_with_jobs(world, tmp_path, ["b-p0", *new], passed=("b-p0",), pending=new)
    batch_workspace = await m.queues.workspaces.get(m.cache.builds[("ns", "b")])
    held, release = threading.Event(), threading.Event()

    def batch_step() -> None:  # a prepare holds the batch step's workspace throughout the checks
        with batch_workspace.locked():
            held.set()
            release.wait(60)

    other = threading.Thread(target=batch_step)
    other.start()
    try:
        assert held.wait(20)
        actions = await asyncio.wait_for(m.reconcilers["Queue"]("", mqc.CHECKS + queue), 30)
    finally:
        release.set()
        other.join(20)
    assert held_checks(m) == set(new), actions
    checks_workspace = await m.queues.workspaces.get(m.cache.builds[("ns", "b")], mqc.CHECKS_WORKSPACE)
    assert checks_workspace.path != batch_workspace.path and checks_workspace.path.parent == batch_workspace.path.parent


async def test_the_checks_step_waits_while_enough_checked_candidates_wait_for_a_batch(world, tmp_path):
    """With a thousand agents 2,500 jobs waited for their checks while every batch was full: the scans of jobs
    minutes from the head held the workspace's lock and a core while the batches waited. The checks step checks
    while fewer than window x (depth + 1) checked candidates of the build wait (window 4, depth 2: 12)."""
    _fake, m, _clock, _mono, _sync = world
    passed = tuple(f"b-p{i:02d}" for i in range(12))
    new = ("b-n1", "b-n2")
    queue = queue_with_jobs(world, tmp_path, [*passed, *new], passed=passed, pending=new)
    assert await m.reconcilers["Queue"]("", mqc.CHECKS + queue) == []  # twelve are ready: nothing to check yet
    job = m.cache.jobs[("ns", "b-p00")]  # one of them joins a batch: eleven wait
    m.cache.observe("MergeJob", "MODIFIED", {
        **_fake.objects[("MergeJob", "ns", "b-p00")],
        "status": {**_fake.objects[("MergeJob", "ns", "b-p00")]["status"], "phase": "Testing",
                   "batch": {"id": "x", "position": 1, "base": "0" * 40, "commit": "1" * 40}},
        "metadata": {**_fake.objects[("MergeJob", "ns", "b-p00")]["metadata"],
                     "resourceVersion": str(int(job.metadata.resource_version or 0) + 100)}})
    actions = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    assert held_checks(m) == set(new), actions


async def test_checks_held_for_their_batch_are_written_with_the_batch_that_takes_them(world, tmp_path):
    """A job whose checks passed is written with its batch (one write, not two: with a thousand agents the writes of
    the checks were a third of the MergeJobs' status writes). One that waits while a batch of its build is under
    test is written with the batch that takes it next, by the batch step (not the checks step, whose write raced the
    batch's: one of them was refused); no timer writes it. A held verdict that no longer applies (another commit, a
    replica that lost it) is not used: checked again."""
    fake, m, clock, _mono, _sync = world
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0", "b-p1", "b-p2"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"},
                      merge={"strategy": "rebase", "window": 2, "depth": 1}))  # one batch of two at a time
    for task in ("b-p0", "b-p1", "b-p2"):
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    queue = cachemod.queue_name(m.cache.builds[("ns", "b")], "main")
    writes: list[str] = []
    patch_status = fake.patch_status
    fake.patch_status = lambda kind, ns, name, st, **kw: (  # type: ignore[method-assign]
        writes.append(name) if kind == "MergeJob" else None, patch_status(kind, ns, name, st, **kw))[1]
    actions = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    await m.executor.run(actions)
    assert writes == [] and held_checks(m) == {"b-p0", "b-p1", "b-p2"}, actions
    assert ("Queue", "", queue) in [a.ref for a in actions if isinstance(a, ex.Requeue)]  # the batch step woken
    assert await m.reconcilers["Queue"]("", mqc.CHECKS + queue) == []  # held: not checked again
    actions = await reconcile_queue(fake, m)  # b-p0 and b-p1 join a batch, written once each
    assert sorted(writes) == ["b-p0", "b-p1"]
    for task in ("b-p0", "b-p1"):
        st = status(fake, "MergeJob", task)
        assert st["phase"] == "Testing" and st["checks"] == "passed", st
        assert {c["type"]: c["status"] for c in st["conditions"]}["ChecksPassed"] == "True"
        assert "Merged" in {c["type"] for c in st["conditions"]}  # its first status: Observed's conditions too
    assert "phase" not in status(fake, "MergeJob", "b-p2")  # b-p2 waits while its build's batch is tested
    clock.now += timedelta(hours=1)
    await reconcile_queue(fake, m)
    assert sorted(writes) == ["b-p0", "b-p1"] and held_checks(m) == {"b-p2"}  # no timer writes it
    for task in ("b-p0", "b-p1"):  # the batch ends: the next takes b-p2, written once with it
        fake.patch_status("MergeJob", "ns", task, {"phase": "Merged", "mergedCommit": commits[task], "batch": None})
        m.observe("MergeJob", "MODIFIED", fake.objects[("MergeJob", "ns", task)])
    writes.clear()
    await reconcile_queue(fake, m)
    assert writes == ["b-p2"]
    st = status(fake, "MergeJob", "b-p2")
    assert st["phase"] == "Testing" and st["checks"] == "passed"
    fake.patch_status("MergeJob", "ns", "b-p2", {"phase": "Queued", "batch": None})
    # a verdict held for another commit does not count, and a replica that did not check a job checks it again
    for task in ("b-p2",):
        fake.patch_status("MergeJob", "ns", task, {"checks": "pending"})
    m.queues.passed[("ns", "b-p2")] = mqc.Held("other-uid", commits["b-p2"], mj.ChecksPassed(), clock.now)
    await reconcile_queue(fake, m)
    assert held_checks(m) == set()
    actions = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    assert held_checks(m) == {"b-p2"}, actions


async def test_checks_that_end_in_an_approval_wait_are_written_at_once(world, tmp_path):
    """Only checks that simply passed are held: a job that now waits for ``spec.approved`` says so at once."""
    fake, m, _clock, _mono, _sync = world
    queue = queue_with_jobs(world, tmp_path, ["b-p1"], passed=(), pending=())
    obj = fake.objects[("BuildRequest", "ns", "b")]
    m.cache.observe("BuildRequest", "MODIFIED", {
        **obj, "spec": {**obj["spec"], "merge": {**obj["spec"]["merge"], "requireApproval": True}},
        "metadata": {**obj["metadata"], "resourceVersion": "999"}})
    actions = await m.reconcilers["Queue"]("", mqc.CHECKS + queue)
    (write,) = [a.status for a in actions if isinstance(a, ex.WriteStatus)]
    assert write["phase"] == "AwaitingApproval" and held_checks(m) == set()


async def test_a_batch_member_whose_conditions_are_not_written_yet_holds_its_batch_decision(world, tmp_path):
    """A MergeJob in a batch whose conditions are missing gets them from the batch step (``Observed``) and holds
    its batch's decision until they are written: leaving it out made the rest look like a half-written batch,
    requeued."""
    fake, m, _clock, _mono, _sync = world
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0", "b-p1"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"}))
    checked = {"type": "ChecksPassed", "status": "True", "reason": "Completed", "message": "the secret scan passed",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}
    for i, task in enumerate(("b-p0", "b-p1"), start=1):
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
        batch = {"id": "B", "position": i, "base": "0" * 40, "commit": commits[task]}
        fake.patch_status("MergeJob", "ns", task, {"phase": "Testing", "checks": "passed", "batch": batch,
                                                   "conditions": [checked] if i == 1 else []})
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    actions = await m.reconcilers["Queue"]("", cachemod.queue_name(m.cache.builds[("ns", "b")], "main"))
    (write,) = [a for a in actions if isinstance(a, ex.WriteStatus)]  # its first conditions: nobody requeued
    assert write.name == "b-p1" and write.status["phase"] == "Testing" and write.status["batch"]["id"] == "B"
    assert "Merged" in {c["type"] for c in write.status["conditions"]}


async def one_task_gated(world: Any, tmp_path: Path, reconciler: str, gate_claims: str | None = None, *,
                         planned: int = 1) -> tuple[FakeKube, Any, str]:
    """A one-iteration build of ``planned`` tasks (a real repository): planned, its first task worked, and that
    task's MergeJob's batch gated by a tester that passes, claiming to have tested ``gate_claims`` (default: the queue
    branch's commit it was given). ``(fake, sync, the commit main ends on)``."""
    fake, m, _clock, _mono, sync = world
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, planner={"maxIterations": 1}, merge={"strategy": "rebase"},
                      qualityGate={"profile": "minimal", "testCommand": "make test"},
                      reconciler={"command": reconciler}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(planned)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    branch = "longshot/ns/b/b-p0"  # the task's default branch, which the worker pushed
    work = ho.Handoff(task="b-p0", attempt=1, role="worker", outcome="succeeded", branch=branch,
                      commit=commits["b-p0"], files_changed=["b-p0.txt"], summary="part 0")
    fake.finish_pod("ns", "b-p0-a1", 0, json.dumps(work.to_wire()))
    await sync()
    (gate,) = [o for (kind, _, _), o in fake.objects.items() if kind == "AgentTask"
               and o["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    tested = subprocess.run(["git", "--git-dir", str(tmp_path / "git" / "r.git"), "rev-parse", gate["spec"]["branch"]],
                            check=True, capture_output=True, text=True).stdout.strip()
    name = gate["metadata"]["name"]
    passed = ho.Handoff(task=name, attempt=1, role="tester", outcome="succeeded", verdict="passed",
                        branch=gate["spec"]["branch"], commit=gate_claims or tested, summary="make test passes")
    fake.finish_pod("ns", f"{name}-a1", 0, json.dumps(passed.to_wire()))
    await sync()
    head = subprocess.run(["git", "--git-dir", str(tmp_path / "git" / "r.git"), "rev-parse", "main"],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert head == tested and status(fake, "MergeJob", "b-p0")["phase"] == "Merged"  # the queue landed it
    return fake, sync, head


async def test_the_gate_run_that_tested_the_tip_with_the_reconciler_command_is_the_final_sweep(world, tmp_path):
    """Issue 13: a build's tail was its last batch's gate, then a final sweep Pod running the same command on the
    same commit; now finalization adopts the gate run (it checks the tip first)."""
    fake, _sync, head = await one_task_gated(world, tmp_path, "make test")
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Succeeded" and cond(st, "Finalized")["reason"] == "Passed", st
    assert st["finalizationAttempts"] == 1
    assert st["lastSweep"]["result"] == "Passed" and st["lastSweep"]["commit"] == head
    assert not [k for k in fake.objects if k[0] == "AgentTask" and "-final-" in k[2]]  # no sweep Pod of its own
    (gate,) = [o for (kind, _, _), o in fake.objects.items() if kind == "AgentTask"
               and o["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    assert gate["metadata"]["annotations"]["longshot.dev/final-attempt"] == "1"


@pytest.mark.parametrize(("reconciler", "claims"), [
    ("make e2e", None),  # the gate ran another command
    ("make test", "f" * 40),  # the gate says it tested another commit than the tip
])
async def test_a_final_sweep_runs_when_no_gate_run_tested_the_tip_with_its_command(world, tmp_path, reconciler,
                                                                                 claims):
    fake, sync, head = await one_task_gated(world, tmp_path, reconciler, claims)
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Finalizing" and st["finalizationAttempts"] == 1, st
    final = fake.objects[("AgentTask", "ns", "b-final-1")]
    assert final["metadata"]["annotations"]["longshot.dev/test-command"] == reconciler
    passed = ho.Handoff(task="b-final-1", attempt=1, role="tester", outcome="succeeded", verdict="passed",
                        branch="main", commit=head, summary="passes")
    fake.finish_pod("ns", "b-final-1-a1", 0, json.dumps(passed.to_wire()))
    await sync()
    assert cond(status(fake, "BuildRequest", "b"), "Finalized")["reason"] == "Passed"


@pytest.mark.parametrize(("reconciler", "claims", "swept"), [
    ("make test", None, False),  # the gate ran the reconciler's command on the commit main is now
    ("make e2e", None, True),  # the gate ran another command
    ("make test", "f" * 40, True),  # the gate says it tested another commit than the tip
])
async def test_no_periodic_sweep_of_a_tip_the_gate_tested_with_the_reconciler_command(world, tmp_path, reconciler,
                                                                                     claims, swept):
    """Issue 13: after a merge, a periodic sweep Pod ran the reconciler command on the target tip while the build's
    other tasks still ran; when the merge queue's gate ran that command on exactly that commit (the queue lands what
    its gate tested), the sweep is not started: the tip is read once and the answer kept until the next merge."""
    fake, sync, _head = await one_task_gated(world, tmp_path, reconciler, claims, planned=2)
    await sync()  # the build's reconcile after the merge
    assert status(fake, "MergeJob", "b-p0")["phase"] == "Merged"
    assert status(fake, "AgentTask", "b-p1")["phase"] == "Running"  # the build is still working
    sweeps = [k for k in fake.objects if k[0] == "AgentTask" and k[2].startswith("b-sweep-")]
    assert bool(sweeps) is swept, sweeps
    if not swept:
        assert world[1].builds.sweeps.tip_tested[("ns", "b")] == 1  # remembered until the next merge


async def reconcile_queue(fake: FakeKube, m: Any) -> list[Any]:
    """Deliver every object as a watch would, then one reconcile of build b's queue, its actions carried out."""
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    actions = await m.reconcilers["Queue"]("", cachemod.queue_name(m.cache.builds[("ns", "b")], "main"))
    await m.executor.run(actions)
    return list(actions)


def gate_manifests(actions: list[Any]) -> dict[str, dict[str, Any]]:
    """The gate tasks among ``actions``, by name."""
    return {a.manifest["metadata"]["name"]: a.manifest for a in actions if isinstance(a, ex.CreateObject)
            and a.manifest["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"}


async def test_a_stacked_batch_waits_for_the_build_s_running_worker_then_takes_what_came(world, tmp_path):
    """While a batch is gated and a worker of the build still runs, a newly checked MergeJob is not stacked on
    its own (a tester Pod for one candidate); once the worker has finished (nothing more to come), it is."""
    fake, m, _clock, _mono, _sync = world
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0", "b-p1"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"},
                      merge={"strategy": "rebase", "window": 4}))
    fake.create({"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                 "metadata": {"name": "b-p2", "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
                 "spec": {"buildRef": {"name": "b"}, "description": "part 2", "role": "worker"}})
    fake.patch_status("AgentTask", "ns", "b-p2", {"phase": "Running"})
    checked = {"type": "ChecksPassed", "status": "True", "reason": "Completed", "message": "the secret scan passed",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}

    def add_job(task: str) -> None:
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
        fake.patch_status("MergeJob", "ns", task, {"phase": "Queued", "checks": "passed", "conditions": [checked]})

    add_job("b-p0")
    assert len(gate_manifests(await reconcile_queue(fake, m))) == 1  # the head batch never waits
    head = status(fake, "MergeJob", "b-p0")["batch"]
    add_job("b-p1")
    waiting = await reconcile_queue(fake, m)
    assert not gate_manifests(waiting) and not [a for a in waiting if getattr(a, "name", None) == "b-p1"], waiting
    assert "batch" not in status(fake, "MergeJob", "b-p1")
    fake.patch_status("AgentTask", "ns", "b-p2", {"phase": "Succeeded"})  # nothing more to come
    assert len(gate_manifests(await reconcile_queue(fake, m))) == 1
    stacked = status(fake, "MergeJob", "b-p1")["batch"]
    assert stacked["base"] == head["commit"] and stacked["position"] == 1


async def test_a_step_counts_the_builds_that_wait_for_a_person(world):
    """The gauges the alerts read: longshot_builds_stalled{reason} and longshot_budget_used_ratio."""
    fake, m, _clock, _mono, sync = world
    m.ctx.preflight = lambda k, b: ("spec.repository.url: host git.example does not resolve; fix the URL"
                                    if b.name == "stuck" else None)
    fake.create(build("stuck"))
    fake.create(build("fine", budget={"maxTokens": 1000}))
    await sync()
    assert cond(status(fake, "BuildRequest", "stuck"), "Stalled")["reason"] == "Configuration"
    value = metrics.REGISTRY.get_sample_value
    assert value("longshot_builds_stalled", {"reason": "Configuration"}) == 1
    assert value("longshot_builds_stalled", {"reason": "TaskBlocked"}) == 0
    assert value("longshot_budget_used_ratio") == 0.0  # "fine" has a budget and has used none of it yet


async def test_a_task_owned_by_a_task_whose_reconcile_is_in_flight_is_not_admitted_beside_it(world):
    """A best-of-N judge's task input is read from its owner's status, which the reconcile that made the judge is
    still writing: the judge is admitted after that reconcile, not beside it."""
    fake, m, _clock, _mono, sync = world
    fake.create(build(workers={"max": 5}))
    await sync()
    judge = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
             "metadata": {"name": "b-judge", "namespace": "ns", "labels": {"longshot.dev/build": "b"},
                          "ownerReferences": [{"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                               "name": "b-planner", "uid": "u", "controller": True}]},
             "spec": {"buildRef": {"name": "b"}, "description": "judge", "role": "reviewer"}}
    fake.create(judge)
    owner = ("AgentTask", "ns", "b-planner")
    assert m.queue.claim(owner)  # the owner's reconcile is in flight
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    await driving.drain(m.controllers["AgentTask"])
    await m.dispatcher.dispatch("test")
    assert ("ns", "b-judge-a1") not in fake.pods
    m.queue.done(owner)
    await m.dispatcher.dispatch("the owner's reconcile ended")
    assert ("ns", "b-judge-a1") in fake.pods


async def test_a_plan_that_found_every_slot_full_is_not_made_again_for_new_tasks_only_when_a_slot_may_free(
        world, monkeypatch):
    """bench-dispatch: a 10,000-task plan taken in while the build's slots were full made a plan (O(tasks)) per
    new task. Now a full plan waits for what may free a slot (``Cache.freeing``): a Pod that ends, a task that
    leaves its phase, a build that changes."""
    from longshot.controllers import dispatch

    fake, m, _clock, _mono, sync = world
    first, second = await one_running_one_held(fake, sync)
    plans: list[dispatch.Plan] = []
    real = dispatch.plan

    def counted(ctx: Any, *rest: Any) -> dispatch.Plan:
        plans.append(real(ctx, *rest))
        return plans[-1]

    monkeypatch.setattr(dispatch, "plan", counted)
    m.dispatcher.replan("test")  # one plan now: it finds the one slot taken
    await sync()
    assert plans and plans[-1].full and not plans[-1].admit
    made = len(plans)
    for i in range(5):  # new tasks in the full build (a plan being taken in): no plan
        task = json.loads(json.dumps(fake.objects[("AgentTask", "ns", second[:-3])]))
        task["metadata"] = {"name": f"b-new{i}", "namespace": "ns", "labels": task["metadata"].get("labels", {}),
                            "ownerReferences": task["metadata"].get("ownerReferences", [])}
        fake.create(task)
        await sync()
    assert ("AgentTask", "ns", "b-new4") in fake.objects
    assert len(plans) == made
    # the running task's Pod ends: its slot may be free, so a plan is made, and it fills the slot
    done = ho.Handoff(task=first[:-3], attempt=1, role="worker", outcome="succeeded", summary="done")
    fake.finish_pod("ns", first, 0, json.dumps(done.to_wire()))
    await sync()
    # the scheduler's order (same priority and age: by name)
    assert [p.admit for p in plans[made:] if p.admit] == [(("ns", "b-new0"),)]


@pytest.mark.parametrize("enforce", [True, False])
def test_a_merge_jobs_state_carries_its_tasks_scope_and_whether_the_build_enforces_it(world, enforce):
    """The wiring of spec.scope.enforce into the merge job's decisions (core.mergejobs: a fixer inherits)."""

    fake, m, *_ = world
    b = build(scope={"enforce": enforce})
    b["metadata"]["uid"] = "uid-b"
    task = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "b-a", "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "description": "do a", "scope": ["src", "tests/**"]}}
    job = {"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob",
           "metadata": {"name": "b-a", "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
           "spec": {"buildRef": {"name": "b"}, "taskRef": {"name": "b-a"}, "branch": "longshot/ns/b/b-a",
                    "target": "main"}}
    for obj in (b, task, job):
        m.observe(obj["kind"], "ADDED", fake.create(obj) or {})
    cached_build, cached_job = m.ctx.cache.builds[("ns", "b")], m.ctx.cache.jobs[("ns", "b-a")]
    state = mjc.job_state(m.ctx, cached_job, cached_build)
    assert state.task_scope == ("src", "tests/**") and state.enforce_scope is enforce


async def test_the_queue_state_carries_each_build_s_merge_depth(world):
    """``spec.merge.depth`` reaches the queue's decision (``QueueState.max_depth``), per build."""
    fake, m, clock, _mono, _sync = world
    fake.create(build(merge={"strategy": "rebase", "window": 8, "depth": 3}))
    fake.create(merged_job("b-p0", "b-p0"))
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    b = m.cache.builds[("ns", "b")]
    state = m.queues.batches.queue_state([(m.cache.jobs[("ns", "b-p0")], b)], "0" * 40, clock.now)
    assert state.max_depth == {"ns/b": 3} and state.max_window == {"ns/b": 8}


async def test_a_dispatch_admits_a_bounded_slice_of_its_plan_and_the_next_comes_at_once(world, monkeypatch):
    """bench-fleet: a plan that chose 450 tasks made a gate task created meanwhile wait for all their Pods and the
    next plan (20 s a gate). A dispatch admits at most ``MAX_ADMISSIONS`` of its plan, first in the plan's order
    (priority), and dispatches again at once for the rest."""
    from longshot.controllers import dispatcher as dispatcherc
    monkeypatch.setattr(dispatcherc, "MAX_ADMISSIONS", 2)
    fake, m, _clock, _mono, sync = world
    fake.create(build(workers={"max": 10}))
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}", priority=9 if i == 4 else 5)
                             for i in range(5)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    admitted: list[list[str]] = []
    real = m.dispatcher._create_pods

    async def spy(keys: list[Any], *rest: Any) -> Any:
        admitted.append([k[1] for k in keys])
        return await real(keys, *rest)

    monkeypatch.setattr(m.dispatcher, "_create_pods", spy)
    await sync()
    assert admitted[0][0] == "b-p4" and all(len(a) <= 2 for a in admitted), admitted  # the urgent first
    assert sorted(n for a in admitted for n in a) == [f"b-p{i}" for i in range(5)]  # and the rest, without a poke
    assert all(("ns", f"b-p{i}-a1") in fake.pods for i in range(5))


async def test_the_resync_spreads_a_pass_over_the_turns_and_marks_everything_once_a_pass(world, monkeypatch):
    """``make bench-fleet`` at a thousand agents: the resync marked 20,000 objects every minute, ~100,000 reconciles
    in 10 minutes that changed nothing. Now at most ``RESYNC_PER_SECOND`` a second, each object once a pass."""
    fake, m, _clock, mono, sync = world
    fake.create(build())
    await sync()
    refs = [("AgentTask", "ns", f"t{i}") for i in range(300)]
    monkeypatch.setattr(m.cache, "all_refs", lambda: iter(refs))
    marked: list[Any] = []
    monkeypatch.setattr(m.queue, "add_low", lambda rs: marked.extend(rs))
    m._next_resync = 0.0
    mono[0] += 2.0
    m._resync_step(mono[0])  # a pass begins: two seconds' worth at most
    assert marked == refs[:50]
    turns = 1
    while len(marked) < len(refs):
        mono[0] += 2.0
        m._resync_step(mono[0])
        turns += 1
    assert marked == refs and turns == 6  # each once, in order, over 12 s
    mono[0] += 2.0
    m._resync_step(mono[0])  # done, and the next pass is due RESYNC_SECONDS after this one began
    assert len(marked) == len(refs)
    mono[0] += managermod.RESYNC_SECONDS
    m._resync_step(mono[0])  # a long turn marks no more than a pass holds
    assert len(marked) == 2 * len(refs) and marked[len(refs):] == refs


async def test_a_head_batch_whose_gate_failed_is_bisected_while_the_stacked_one_is_gated_again_on_the_target(
        world, tmp_path):
    """The shell carries out the off-line bisection in one reconcile: the failed head batch's probes start, and the
    batch stacked on it (built on a commit that holds the culprit) is requeued and prepared again on the target,
    each of its jobs with one status write that says its new batch."""
    fake, m, _clock, _mono, _sync = world
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0", "b-p1", "b-p2", "b-p3"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"},
                      merge={"strategy": "rebase", "window": 2}))
    checked = {"type": "ChecksPassed", "status": "True", "reason": "Completed", "message": "the secret scan passed",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}
    for task in ("b-p0", "b-p1", "b-p2", "b-p3"):
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
        fake.patch_status("MergeJob", "ns", task, {"phase": "Queued", "checks": "passed", "conditions": [checked]})

    await reconcile_queue(fake, m)  # the head batch (p0, p1) on the target
    await reconcile_queue(fake, m)  # the stacked one (p2, p3) on its top
    head, stacked = status(fake, "MergeJob", "b-p0")["batch"], status(fake, "MergeJob", "b-p2")["batch"]
    target = head["base"]
    assert stacked["base"] == status(fake, "MergeJob", "b-p1")["batch"]["commit"]
    full = next(n for n in fake.objects if n[0] == "AgentTask" and f"gate-{head['id']}-2" in n[2])[2]
    fake.patch_status("AgentTask", "ns", full, {"phase": "Succeeded", "handoff": {
        "task": full, "attempt": 1, "role": "tester", "outcome": "succeeded", "verdict": "failed",
        "summary": "make test failed", "reasons": ["E at b-p1"]}})
    writes: list[str] = []
    patch_status = fake.patch_status
    fake.patch_status = lambda kind, ns, name, st, **kw: (  # type: ignore[method-assign]
        writes.append(name) if kind == "MergeJob" else None, patch_status(kind, ns, name, st, **kw))[1]
    actions = await reconcile_queue(fake, m)
    assert f"b-gate-{head['id']}-1" in gate_manifests(actions)  # the bisection's probe
    again = status(fake, "MergeJob", "b-p2")["batch"]
    assert again["base"] == target and again["id"] != stacked["id"] and again["position"] == 1
    assert status(fake, "MergeJob", "b-p3")["batch"]["position"] == 2
    assert status(fake, "MergeJob", "b-p0")["batch"] == head  # still being bisected
    assert writes.count("b-p2") == 1 and writes.count("b-p3") == 1
    stacked_gate = next(n for n in fake.objects if n[0] == "AgentTask" and f"gate-{stacked['id']}-2" in n[2])
    assert fake.objects[stacked_gate]["spec"].get("cancel") is True  # its gate run was a bet that lost


def queue_of_two_checked(fake: FakeKube, m: Any, tmp_path: Path) -> None:
    """A build (window 2, a real repository) whose MergeJobs b-p0 and b-p1 passed their checks: one batch's worth."""
    url, commits = repository_with_branches(tmp_path / "git", ["b-p0", "b-p1"])
    m.queues.workspaces.root = tmp_path / "workspaces"
    fake.create(build(repository={"url": url}, qualityGate={"profile": "minimal", "testCommand": "true"},
                      merge={"strategy": "rebase", "window": 2}))
    checked = {"type": "ChecksPassed", "status": "True", "reason": "Completed", "message": "the secret scan passed",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}
    for task in ("b-p0", "b-p1"):
        job = merged_job(task, task)
        job["spec"].update({"branch": f"longshot/ns/b/{task}", "commit": commits[task]})
        fake.create(job)
        fake.patch_status("MergeJob", "ns", task, {"phase": "Queued", "checks": "passed", "conditions": [checked]})


async def test_a_probe_cancelled_while_its_batch_is_still_tested_is_deleted_and_run_again(world, tmp_path):
    """A decision that gave a batch up cancels its probes and writes its jobs; when those writes were refused (409)
    the batch was still under test, its cancelled probe was no verdict, and the queue created it again and again
    (refused: it exists), the batch waiting for good (``make bench-fleet``: no merge for the last two minutes). Now
    the cancelled probe is deleted, its deletion wakes the queue, and it is made again; a probe on its way is not
    created twice."""
    fake, m, _clock, _mono, _sync = world
    queue_of_two_checked(fake, m, tmp_path)
    await reconcile_queue(fake, m)  # the batch (p0, p1)
    actions = await reconcile_queue(fake, m)
    batch = status(fake, "MergeJob", "b-p1")["batch"]
    gate = f"b-gate-{batch['id']}-2"
    assert ("AgentTask", "ns", gate) in fake.objects
    actions = await reconcile_queue(fake, m)  # on its way: not created again
    assert gate not in gate_manifests(actions), actions
    fake.objects[("AgentTask", "ns", gate)]["spec"]["cancel"] = True
    fake.patch_status("AgentTask", "ns", gate, {"phase": "Cancelled"})
    body = json.loads(json.dumps(fake.objects[("AgentTask", "ns", gate)]))
    actions = await reconcile_queue(fake, m)
    assert gate not in gate_manifests(actions), actions
    assert [a for a in actions if isinstance(a, ex.Call) and gate in a.what], actions
    assert ("AgentTask", "ns", gate) not in fake.objects  # deleted
    queue = cachemod.queue_name(m.cache.builds[("ns", "b")], "main")
    assert ("Queue", "", queue) in m.cache.observe("AgentTask", "DELETED", body)  # its deletion wakes the queue
    actions = await reconcile_queue(fake, m)
    assert gate in gate_manifests(actions), actions  # made again
    assert status(fake, "MergeJob", "b-p1")["batch"] == batch


async def test_a_queue_reads_the_target_once_in_a_burst_of_reconciles_and_knows_the_head_its_own_land_made(
        world, tmp_path, monkeypatch):
    """``HEAD_REUSE_SECONDS``: reconciles of a queue that follow each other closely read the target's head from the
    server once; one after the window reads it again (a push by someone else is seen); after the queue's own land the
    head is the landed commit without a read."""
    fake, m, _clock, mono, _sync = world
    queue_of_two_checked(fake, m, tmp_path)
    reads: list[str] = []
    head_of = mqc.speculate.head_of
    monkeypatch.setattr(mqc.speculate, "head_of", lambda w, target: reads.append(target) or head_of(w, target))

    await reconcile_queue(fake, m)  # the batch (p0, p1) on the target: read once
    name = cachemod.queue_name(m.cache.builds[("ns", "b")], "main")
    await reconcile_queue(fake, m)
    assert reads == ["main"]
    batch = status(fake, "MergeJob", "b-p1")["batch"]
    mono[0] += mqc.HEAD_REUSE_SECONDS
    await reconcile_queue(fake, m)
    assert reads == ["main", "main"]  # the window is over: read again
    gate = next(n for n in fake.objects if n[0] == "AgentTask" and f"gate-{batch['id']}-2" in n[2])[2]
    fake.patch_status("AgentTask", "ns", gate, {"phase": "Succeeded", "handoff": {
        "task": gate, "attempt": 1, "role": "tester", "outcome": "succeeded", "verdict": "passed", "summary": "ok"}})
    mono[0] += mqc.HEAD_REUSE_SECONDS
    await reconcile_queue(fake, m)  # the gate passed: read, land
    assert status(fake, "MergeJob", "b-p1")["phase"] == "Merged" and len(reads) == 3
    on_server = subprocess.run(["git", "-C", str(tmp_path / "git" / "r.git"), "rev-parse", "main"], check=True,
                               capture_output=True, text=True).stdout.strip()
    assert m.queues.heads[name][1] == on_server == batch["commit"]  # known from the land itself
    await reconcile_queue(fake, m)
    assert len(reads) == 3


async def test_a_new_gate_task_cuts_short_the_dispatcher_s_wait_after_a_slow_plan(world):
    """``Dispatcher.hurry``: after a plan the dispatcher waits as long as the plan took, but a gate (review, sweep,
    final) task that is created meanwhile is planned for at once: the merge queue waits for its end. Any other
    change waits its turn."""
    fake, m, _clock, _mono, sync = world
    fake.create(build())
    await sync()
    planned: list[str] = []
    again = asyncio.Event()

    async def slow_plan(why: str = "") -> None:  # a plan that took 30 s: the next waits 30 s
        planned.append(why)
        m.dispatcher.plan_seconds = 30.0
        again.set()

    m.dispatcher.dispatch = slow_plan  # type: ignore[method-assign]
    runner = asyncio.create_task(m.dispatcher.run())
    try:
        m.dispatcher.poke("a Pod ended")
        await asyncio.wait_for(again.wait(), 5)
        again.clear()
        m.dispatcher.poke("a task changed")  # an ordinary change: it waits for the 30 s
        assert not m.dispatcher.hurried.is_set()
        # created with the CRD's default status (Pending, its conditions): a candidate for dispatch at once
        task_by_hand(fake, "b-gate-x-1", labels={"longshot.dev/purpose": "gate", "longshot.dev/build": "b"})
        m.observe("AgentTask", "ADDED", fake.objects[("AgentTask", "ns", "b-gate-x-1")])
        await asyncio.wait_for(again.wait(), 5)  # well before the 30 s
        assert len(planned) == 2 and "a delivery task was created" in planned[1]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_a_gate_task_whose_reconcile_held_its_admission_is_dispatched_without_the_wait_after_a_plan(world):
    """A new task's first reconcile runs beside the dispatch that chose it, and a task being reconciled is not
    admitted: the next plan admits it. For a gate task (the merge queue waits for it) that next plan does not wait
    for the rest after the last (``Dispatcher.hurried``); for a worker it does."""
    fake, m, _clock, _mono, sync = world
    fake.create(build())
    await sync()
    task_by_hand(fake, "b-gate-x-1", labels={"longshot.dev/purpose": "gate", "longshot.dev/build": "b"})
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    ref = ("AgentTask", "ns", "b-gate-x-1")
    assert m.queue.claim(ref)  # its reconcile is in flight
    m.dispatcher.hurried.clear()
    await m.dispatcher.dispatch("test")
    assert ("ns", "b-gate-x-1-a1") not in fake.pods and m.dispatcher.hurried.is_set()
    m.queue.done(ref)
    await m.dispatcher.dispatch("its reconcile ended")
    assert ("ns", "b-gate-x-1-a1") in fake.pods
    task_by_hand(fake, "b-w", labels={"longshot.dev/build": "b"})  # a worker held the same way: no hurry
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    ref = ("AgentTask", "ns", "b-w")
    assert m.queue.claim(ref)
    m.dispatcher.hurried.clear()
    await m.dispatcher.dispatch("test")
    assert ("ns", "b-w-a1") not in fake.pods and not m.dispatcher.hurried.is_set()
    m.queue.done(ref)


async def test_a_tenant_s_credentials_secret_is_read_again_only_once_it_is_seconds_old(tmp_path):
    """Every queue reconcile read the tenant's credentials Secret (six reads a second with four repositories in
    ``make bench-fleet``): it is read again once the last read is ``SECRET_TTL_SECONDS`` old, and a rotated
    credential is the workspace's from then."""
    fake, clock = FakeKube(), Clock()
    mono = [0.0]
    reads: list[tuple[str, str]] = []
    real = fake.get_secret

    def get_secret(namespace: str, name: str) -> dict[str, str] | None:
        reads.append((namespace, name))
        return real(namespace, name)

    fake.get_secret = get_secret  # type: ignore[method-assign]
    fake.secrets[("ns", "git")] = {"username": "bot", "password": "one"}
    body = build()
    body["spec"]["repository"]["credentialsSecret"] = "git"
    b = objects.parse(body, objects.BuildRequest)
    ctx = ctxmod.Context(cache=cachemod.Cache(), kube=fake, queue=workqueue.WorkQueue(clock), clock=clock,
                         settings=config.Settings(metrics_port=0, workspace_dir=str(tmp_path)))
    ws = mqc.Workspaces(ctx, monotonic=lambda: mono[0])
    first = await ws.get(b)
    mono[0] += mqc.SECRET_TTL_SECONDS / 2
    fake.secrets[("ns", "git")] = {"username": "bot", "password": "two"}  # rotated
    assert await ws.get(b) is first and await ws.get(b, mqc.CHECKS_WORKSPACE) is not first
    assert reads == [("ns", "git")] and first.credentials.password == "one"
    mono[0] += mqc.SECRET_TTL_SECONDS
    again = await ws.get(b)
    assert reads == [("ns", "git")] * 2 and again.credentials.password == "two" and again is not first
