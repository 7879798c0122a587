"""The executor against an in-memory API: Events rate-limited per object and reason, a plan's creations run
concurrently (bounded) with each new task's first status written at once, and what happens when a create finds the
object there already or its first status loses to a newer version."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from fake_kube import FakeKube
from longshot.controllers import cache as cachemod
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.controllers import workqueue

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def executor(fake: FakeKube, clock: Clock) -> ex.Executor:
    return ex.Executor(fake, cachemod.Cache(), workqueue.WorkQueue(clock), clock)


def ref(name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"}}


def task(name: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "description": f"do {name}"}}


async def test_events_are_rate_limited_per_object_and_reason():
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    a, b = ref("a", "uid-a"), ref("b", "uid-b")
    await e.run([ex.RecordEvent(a, "Warning", "AttemptFailed", f"attempt {i} failed") for i in range(20)])
    assert len(fake.events) == ex.EVENT_BURST  # a burst, then nothing more for now
    await e.run([ex.RecordEvent(a, "Normal", "Admitted", "started"), ex.RecordEvent(b, "Warning", "AttemptFailed",
                                                                                      "attempt 1 failed")])
    assert fake.events[-2:] == [("a", "Normal", "Admitted", "started"), ("b", "Warning", "AttemptFailed",
                                                                         "attempt 1 failed")]
    await e.run([ex.RecordEvent(a, "Normal", "Admitted", "started")])  # the same Event again at once: dropped
    assert len(fake.events) == ex.EVENT_BURST + 2
    assert e.events_dropped == 16
    clock.now += ex.EVENT_INTERVAL
    await e.run([ex.RecordEvent(a, "Warning", "AttemptFailed", f"late {i}") for i in range(3)])
    assert [m for (_, _, _, m) in fake.events[ex.EVENT_BURST + 2:]] == ["late 0"]  # one token per interval


async def test_routine_events_spend_their_build_s_budget_and_other_events_do_not():
    """A thousand agents wrote an AttemptStarted, a Succeeded and a MergeSucceeded per task: a quarter of the
    operator's writes (``make bench-fleet``). Routine Events spend a per-build budget; Warnings and a build's
    other Events, and another build's routine ones, are not held back by it."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    before = ex.metrics.EVENTS_DROPPED.labels(reason="routine")._value.get()
    started = [ex.RecordEvent(ref(f"t{i}", f"uid-{i}"), "Normal", "AttemptStarted", "started", budget="ns/b")
               for i in range(ex.ROUTINE_EVENT_BURST + 50)]
    await e.run(started)
    assert len(fake.events) == ex.ROUTINE_EVENT_BURST  # each task's first, but only the build's budget of them
    assert ex.metrics.EVENTS_DROPPED.labels(reason="routine")._value.get() - before == 50
    await e.run([ex.RecordEvent(ref("t0", "uid-0"), "Warning", "AttemptFailed", "attempt 1 failed"),
                 ex.RecordEvent(ref("x", "uid-x"), "Normal", "AttemptStarted", "started", budget="ns/other")])
    assert [(n, r) for n, _, r, _ in fake.events[-2:]] == [("t0", "AttemptFailed"), ("x", "AttemptStarted")]
    await e.run([ex.RecordEvent(ref("late", "uid-late"), "Normal", "Succeeded", "ok", budget="ns/b")])
    assert fake.events[-1][0] == "x"  # the budget is spent
    clock.now += ex.ROUTINE_EVENT_INTERVAL  # one more a ROUTINE_EVENT_INTERVAL
    await e.run([ex.RecordEvent(ref(f"late{i}", f"uid-late{i}"), "Normal", "Succeeded", "ok", budget="ns/b")
                 for i in range(3)])
    assert [n for n, *_ in fake.events[-1:]] == ["late0"] and fake.events[-2][0] == "x"


async def test_builds_whose_routine_budget_is_spent_share_one_routine_event_per_interval():
    """Four builds of a thousand agents wrote four times the routine Events of one (``make bench-fleet``: 0.66 Events
    a merge): beyond their own budgets, the builds together write one per ``ROUTINE_EVENT_INTERVAL``; a build's own
    budget grows back by one per ``ROUTINE_BUILD_INTERVAL``, and a new build still has all of its."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    for b in ("b1", "b2"):
        await e.run([ex.RecordEvent(ref(f"{b}-t{i}", f"uid-{b}-{i}"), "Normal", "AttemptStarted", "started",
                                    budget=f"ns/{b}") for i in range(ex.ROUTINE_EVENT_BURST)])
    assert len(fake.events) == 2 * ex.ROUTINE_EVENT_BURST
    written = len(fake.events)
    for step in range(10):  # both builds' budgets spent: one Event per interval between them, not one each
        clock.now += ex.ROUTINE_EVENT_INTERVAL
        await e.run([ex.RecordEvent(ref(f"{b}-late{step}", f"uid-{b}-late{step}"), "Normal", "Succeeded", "ok",
                                    budget=f"ns/{b}") for b in ("b1", "b2")])
    assert len(fake.events) - written == 10
    await e.run([ex.RecordEvent(ref("new-t0", "uid-new-0"), "Normal", "AttemptStarted", "started", budget="ns/new")])
    assert fake.events[-1][0] == "new-t0"  # a new build's budget is its own
    clock.now += ex.ROUTINE_BUILD_INTERVAL * 3
    written = len(fake.events)
    await e.run([ex.RecordEvent(ref(f"b1-back{i}", f"uid-b1-back{i}"), "Normal", "Succeeded", "ok", budget="ns/b1")
                 for i in range(10)])
    assert len(fake.events) - written == 3 + 1  # three grown back, and the shared one


def test_an_attempt_s_start_is_a_routine_event_and_its_failure_is_not() -> None:
    """Which Events spend the budget is the deciders' word (``EmitEvent.routine``), not a list in the shell."""
    from longshot.core import tasks as tk
    from longshot.core.effects import EmitEvent
    now = datetime(2025, 1, 1, tzinfo=UTC)
    running, effects = tk.decide(tk.TaskState(name="t"), tk.Admitted(), now=now, rand=lambda: 0.5)
    assert [(e.reason, e.routine) for e in effects if isinstance(e, EmitEvent)] == [("AttemptStarted", True)]
    _, effects = tk.decide(running, tk.PodVanished(attempt=1), now=now, rand=lambda: 0.5)
    events = [e for e in effects if isinstance(e, EmitEvent)]
    assert events and not any(e.routine for e in events)


class GatedKube(FakeKube):
    """Creates wait until ``parties`` of them are in flight at once (a serial executor never gets there)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=20)
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def gated(self, call: Callable[[], Any]) -> Any:
        """``call`` once ``parties`` calls are at the barrier, counting how many were in flight at once."""
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            self.barrier.wait()
            with self.lock:
                return call()
        finally:
            with self.lock:
                self.in_flight -= 1

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.gated(lambda: FakeKube.create(self, obj))  # type: ignore[no-any-return]


class GatedCreates(GatedKube):
    """A ConfigMap's put meets the object creates at the barrier too."""

    def put_configmap(self, manifest: Mapping[str, Any]) -> None:
        self.gated(lambda: FakeKube.put_configmap(self, manifest))


async def test_an_ended_worker_s_merge_job_and_ledger_entry_are_written_together_before_its_status():
    """An ended worker's reconcile was three round trips in a row (MergeJob, ledger entry, status) on a loaded API
    server, and its worker slot stayed taken meanwhile (``make bench-fleet``): the first two run together."""
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(8))
    fake, clock = GatedCreates(2), Clock()
    FakeKube.create(fake, task("t"))  # (not through the barrier)
    e = executor(fake, clock)
    job = {"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob", "metadata": {"name": "t", "namespace": "ns"},
           "spec": {"branch": "b", "target": "main"}}
    entry = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t-a1-ledger", "namespace": "ns"},
             "data": {"result.json": "{}"}}
    await e.run([ex.CreateObject(job), ex.PutConfigMap(entry),
                 ex.WriteStatus("AgentTask", "ns", "t", "", {"phase": "Succeeded"})])  # one at a time: times out
    assert fake.most == 2 and ("MergeJob", "ns", "t") in fake.objects and ("ns", "t-a1-ledger") in fake.configmaps
    assert e.writes == 1


async def test_a_plan_s_tasks_are_created_concurrently_bounded_each_pending_from_its_creation():
    """Issue 13: each new task took two writes, its create and its initial status; now the create alone (the
    CRD's default status)."""
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(managermod.THREADS))
    n = 2 * ex.CREATE_CONCURRENCY
    fake, clock = GatedKube(ex.CREATE_CONCURRENCY), Clock()
    e = executor(fake, clock)
    await e.run([ex.CreateObject(task(f"t{i:02d}")) for i in range(n)]
                + [ex.Requeue(("Queue", "", "after"), clock.now)])
    assert fake.most == ex.CREATE_CONCURRENCY
    assert len([k for k in fake.objects if k[0] == "AgentTask"]) == n
    for i in range(n):
        cached = e.cache.tasks[("ns", f"t{i:02d}")]  # the answer to the create, with the default status
        assert cached.status.phase == "Pending"
        assert {c.type: c.status for c in cached.status.conditions} == {
            "Succeeded": "Unknown", "Running": "False", "Ready": "False", "Reconciling": "True", "Stalled": "False",
            "AwaitingInput": "False"}
    assert e.writes == 0 and "patch_status" not in fake.calls
    assert ("Queue", "", "after") in e.queue.take()  # the action after the creations ran after all of them


async def test_every_creation_is_tried_before_the_first_failure_is_raised():
    fake, clock = FakeKube(), Clock()
    fake.fail_next["create"] = [RuntimeError("the API server refused one")]
    e = executor(fake, clock)
    with pytest.raises(RuntimeError, match="refused one"):
        await e.run([ex.CreateObject(task(f"t{i}")) for i in range(5)]
                    + [ex.Requeue(("Queue", "", "after"), clock.now)])
    assert len([k for k in fake.objects if k[0] == "AgentTask"]) == 4
    assert ("Queue", "", "after") in e.queue.take()  # a requeue is never dropped (it reads, and may decide nothing)


async def test_a_created_pod_is_in_the_cache_at_once_and_its_own_watch_event_is_not_news():
    """The next dispatch must count the task as running before any watch event arrives; the Pod's ADDED event
    (the version the create returned) then changes nothing. What is kept is the slim view, not the Pod's spec."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    owner = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "name": "t", "uid": "uid-t",
             "controller": True}
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "t-a1", "namespace": "ns", "ownerReferences": [owner],
                             "managedFields": [{"manager": "longshot", "operation": "Update"}]},
                "spec": {"containers": [{"name": "agent", "image": "agent", "env": [{"name": "X", "value": "1"}]}]}}
    await e.run([ex.CreatePod(manifest), ex.DeletePod("ns", "gone")])
    pod = e.cache.pods[("ns", "t-a1")]
    assert pod.task == "t" and pod.phase == "Pending" and not pod.deleting
    assert e.cache.pods_by_task[("ns", "t")] == {"t-a1"}
    assert not hasattr(pod, "spec") and not hasattr(pod, "metadata")  # no spec, no managedFields kept
    assert e.cache.observe("Pod", "ADDED", fake.pods[("ns", "t-a1")]) == []  # its own event: nothing new
    await e.run([ex.CreatePod(manifest)])  # exists already: adopted, the cached view unchanged
    assert e.cache.pods[("ns", "t-a1")] is pod


def test_pod_creations_lead_and_everything_after_them_keeps_its_order():
    pod = ex.CreatePod({"metadata": {"name": "p", "namespace": "ns"}})
    status = ex.WriteStatus("AgentTask", "ns", "t", "1", {})
    event = ex.RecordEvent(ref("t", "uid-t"), "Normal", "AttemptStarted", "started")
    assert ex.split_pod_creates([pod, event, status]) == ([pod], [event, status])
    assert ex.split_pod_creates([event, pod, status]) == ([], [event, pod, status])  # not leading: not split
    assert ex.split_pod_creates([]) == ([], [])


async def test_an_admission_whose_pod_name_was_taken_reconciles_its_task_once_more_after_the_status_write():
    """CI found a planner stuck Running: its first attempt's name was taken by a foreign Pod that had ended before
    the build existed, so no watch event was still to come, and the admitting status write is the executor's own
    echo. The task is enqueued after that write (and only then), so its reconcile refuses or adopts the Pod."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    fake.objects[("AgentTask", "ns", "t")] = {**task("t"), "metadata": {**task("t")["metadata"], "uid": "uid-t",
                                                                        "resourceVersion": "1"}}
    e.cache.observe("AgentTask", "ADDED", fake.objects[("AgentTask", "ns", "t")])
    e.queue.take()
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t-a1", "namespace": "ns"}, "spec": {}}
    fake.pods[("ns", "t-a1")] = {**manifest, "metadata": {**manifest["metadata"], "uid": "foreign"}}
    await e.run([ex.CreatePod(manifest)])
    assert ("AgentTask", "ns", "t") not in e.queue.take()  # not before the write: it would still see Pending
    admitted = {"phase": "Running", "attempts": [{"number": 1, "pod": "t-a1"}]}
    await e.run([ex.WriteStatus("AgentTask", "ns", "t", "1", admitted)])
    assert ("AgentTask", "ns", "t") in e.queue.take()
    await e.run([ex.WriteStatus("AgentTask", "ns", "t", fake.objects[("AgentTask", "ns", "t")]["metadata"][
        "resourceVersion"], admitted)])
    assert ("AgentTask", "ns", "t") not in e.queue.take()  # once: an ordinary write of its own is an echo again


class WatchingKube(FakeKube):
    """Records, at each create, which builds the cache says are ingesting."""

    def __init__(self, cache: cachemod.Cache) -> None:
        super().__init__()
        self.cache = cache
        self.seen: list[dict[tuple[str, str], int]] = []

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        self.seen.append(dict(self.cache.ingesting))
        return super().create(obj)


async def test_a_plan_s_build_is_ingesting_while_its_tasks_are_created_even_when_one_fails():
    clock = Clock()
    cache = cachemod.Cache()
    fake = WatchingKube(cache)
    e = ex.Executor(fake, cache, workqueue.WorkQueue(clock), clock)
    await e.run([ex.CreateObject(task(f"t{i}")) for i in range(5)])
    assert fake.seen == [{("ns", "b"): 5}] * 5 and not cache.ingesting  # one count a task of the batch
    bad = WatchingKube(cache)

    def refuse(obj: Mapping[str, Any]) -> dict[str, Any] | None:
        bad.seen.append(dict(cache.ingesting))
        raise RuntimeError("refused")

    bad.create = refuse  # type: ignore[method-assign]
    e = ex.Executor(bad, cache, workqueue.WorkQueue(clock), clock)
    with pytest.raises(RuntimeError):
        await e.run([ex.CreateObject(task(f"u{i}")) for i in range(3)])
    assert bad.seen == [{("ns", "b"): 3}] * 3 and not cache.ingesting  # a failed batch does not hold the build


class GatedStatus(FakeKube):
    """Status writes wait until ``parties`` of them are in flight at once, and say in which order they ended."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=20)
        self.lock = threading.Lock()
        self.order: list[tuple[str, str]] = []

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> dict[str, Any] | None:
        if name.startswith("gated"):
            self.barrier.wait()
        with self.lock:
            self.order.append((name, str(status.get("phase"))))
            return super().patch_status(kind, namespace, name, status, resource_version=resource_version)


async def test_status_writes_of_different_objects_run_together_and_one_object_s_keep_their_order():
    """A merge queue's reconcile writes every MergeJob it moved: one after the other, 60 slow writes held its worker
    for a minute (``make bench-fleet``)."""
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(8))
    fake, clock = GatedStatus(3), Clock()
    for name in ("gated-a", "gated-b", "gated-c", "same"):
        fake.create(task(name))
    e = executor(fake, clock)
    writes = [ex.WriteStatus("AgentTask", "ns", n, "", {"phase": "Running"}) for n in ("gated-a", "gated-b", "gated-c")]
    await e.run([*writes, ex.WriteStatus("AgentTask", "ns", "same", "", {"phase": "Running"}),
                 ex.WriteStatus("AgentTask", "ns", "same", "", {"phase": "Succeeded"}),
                 ex.Requeue(("Queue", "", "after"), clock.now)])
    assert e.writes == 5  # the three gated writes met at the barrier: a serial executor would have timed out there
    assert [o for o in fake.order if o[0] == "same"] == [("same", "Running"), ("same", "Succeeded")]
    assert ("Queue", "", "after") in e.queue.take()


class GatedEvents(GatedStatus):
    """Events wait at the same barrier as the gated status writes."""

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.barrier.wait()
        super().event(obj, type_, reason, message)


async def test_events_between_status_writes_do_not_make_them_run_one_at_a_time():
    """A landed batch is an Event and a status write per member, interleaved: before, each Event ended the run of
    concurrent writes, and 32 members' 64 calls went one after the other (``make bench-fleet``: the queue's worker
    held for 20 s after the gate had passed)."""
    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(8))
    fake, clock = GatedEvents(4), Clock()
    for name in ("gated-a", "gated-b"):
        fake.create(task(name))
    e = executor(fake, clock)
    actions: list[ex.Action] = []
    for name in ("gated-a", "gated-b"):
        obj = {"kind": "AgentTask", "metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}"}}
        actions += [ex.RecordEvent(obj, "Normal", "MergeSucceeded", f"{name} merged"),
                    ex.WriteStatus("AgentTask", "ns", name, "", {"phase": "Succeeded"})]
    await e.run(actions)  # two Events and two writes met at one barrier: run one at a time, it would time out
    assert e.writes == 2 and sorted(ev[0] for ev in fake.events) == ["gated-a", "gated-b"]


def test_collection_selectors_group_by_attempt_in_bounded_chunks_and_leave_the_odd_ones_to_names():
    items = [(f"t{i:03d}", 1, f"t{i:03d}-a1") for i in range(ex.DELETE_COLLECTION_MAX + 1)]
    items += [("u", 2, "u-a2"), ("v", 3, "v-a3"), ("w", 3, "w-a3"), ("", 0, "odd-pod")]
    alone, selectors = ex.collection_selectors("b=x", items)
    assert sorted(alone) == ["odd-pod", "u-a2"]  # no task, or alone with its attempt number: by name
    assert len(selectors) == 3  # attempt 1 in two chunks, attempt 3 in one
    first, second, third = selectors
    assert first.startswith("b=x,longshot.dev/attempt=1,longshot.dev/task in (t000,t001,")
    assert first.count(",") - 2 == ex.DELETE_COLLECTION_MAX - 1
    assert second.endswith(f"in (t{ex.DELETE_COLLECTION_MAX:03d})")
    assert third == "b=x,longshot.dev/attempt=3,longshot.dev/task in (v,w)"


def build_manifest(name: str = "b") -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"request": "p", "repository": {"url": "https://example.com/r.git"}}}


@pytest.mark.parametrize("fenced", ["status", "metadata"])
async def test_a_fenced_write_that_loses_reads_the_object_anew_so_the_retry_needs_no_watch_event(fenced: str):
    """CI (2026-11-29): a build's status write lost seven times in a row over 32 s, each retry deciding on the same
    version, because the watch event of a spec edit had not come. The lost write reads the object anew; a late watch
    event carrying the version held then is not taken back."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    held = fake.create(build_manifest())
    assert held is not None
    e.cache.observe("BuildRequest", "ADDED", held)
    edited = fake.patch("BuildRequest", "ns", "b", {"spec": {"request": "edited"}})  # its watch event is late
    assert edited is not None
    old_rv = held["metadata"]["resourceVersion"]
    before = ex.metrics.READS_ANEW.labels("BuildRequest")._value.get()
    write: ex.Action = (ex.WriteStatus("BuildRequest", "ns", "b", old_rv, {"phase": "Planning"}) if fenced == "status"
                        else ex.PatchObject("BuildRequest", "ns", "b", {"metadata": {"finalizers": ["x"],
                                                                                     "resourceVersion": old_rv}}))
    with pytest.raises(ex.kube.Conflict):
        await e.run([write])
    got = e.cache.builds[("ns", "b")]
    assert (got.metadata.resource_version, got.spec.request) == (edited["metadata"]["resourceVersion"], "edited")
    assert e.reads_anew == 1 and ex.metrics.READS_ANEW.labels("BuildRequest")._value.get() - before == 1
    assert e.queue.take() == [("BuildRequest", "ns", "b")]  # a spec edit concerns the build: reconciled anew
    assert e.cache.observe("BuildRequest", "MODIFIED", held) == []  # the late event of the version replaced
    assert e.cache.builds[("ns", "b")].spec.request == "edited"
    with pytest.raises(ex.kube.Conflict):  # losing again to a version the cache holds already: no read counted
        await e.run([ex.WriteStatus("BuildRequest", "ns", "b", old_rv, {"phase": "Planning"})])
    assert e.reads_anew == 1


async def test_a_read_anew_that_a_watch_event_overtook_is_dropped():
    """The watch may deliver a version newer than the GET's answer while the GET is on its way: the answer must not
    replace it (nor mark it superseded, which would have the cache ignore it for good)."""
    fake, clock = FakeKube(), Clock()
    e = executor(fake, clock)
    held = fake.create(build_manifest())
    assert held is not None
    e.cache.observe("BuildRequest", "ADDED", held)
    fake.patch("BuildRequest", "ns", "b", {"spec": {"request": "first edit"}})
    real_get = fake.get
    newest: dict[str, Any] = {}

    def get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        answer = real_get(kind, namespace, name)  # the first edit ...
        newest.update(fake.patch("BuildRequest", "ns", "b", {"spec": {"request": "second edit"}}) or {})
        e.cache.observe("BuildRequest", "MODIFIED", newest)  # ... overtaken by the watch's event of the second
        return answer

    fake.get = get  # type: ignore[method-assign]
    with pytest.raises(ex.kube.Conflict):
        await e.run([ex.WriteStatus("BuildRequest", "ns", "b", held["metadata"]["resourceVersion"],
                                    {"phase": "Planning"})])
    got = e.cache.builds[("ns", "b")]
    assert (got.metadata.resource_version, got.spec.request) == (newest["metadata"]["resourceVersion"], "second edit")
    assert e.reads_anew == 0
    assert e.cache.read_anew("BuildRequest", held, "an older version") == []  # the cache's guard, directly
    assert e.cache.builds[("ns", "b")].spec.request == "second edit"


class Ordered:
    """An in-memory API and a work queue that write into one log, so a test sees what came before what."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def add_all(self, refs: Any) -> None:
        self.log += [f"queued {r[2]}" for r in refs]

    def add_at(self, ref: Any, when: datetime) -> None:
        self.log.append(f"queued {ref[2]}")


class LoggedStatus(FakeKube):
    def __init__(self, log: list[str], fail: str = "") -> None:
        super().__init__()
        self.log, self.fail = log, fail

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> dict[str, Any] | None:
        self.log.append(f"wrote {name}")
        if name == self.fail:
            raise RuntimeError("the API server went away")
        return super().patch_status(kind, namespace, name, status, resource_version=resource_version)


async def test_requeues_go_to_the_queue_after_the_writes_of_their_reconcile_even_when_one_fails():
    """A merge queue's reconcile handed a candidate to its pull request: it asked for the candidate's forge key
    first and wrote the MergeJob's AwaitingForge after. The forge key's reconcile ran in between, read the job
    before that write, decided nothing, and nothing woke it until the resync a minute later (integration tests of
    pull requests took 11 s or 67 s, at random)."""
    order, clock = Ordered(), Clock()
    fake = LoggedStatus(order.log, fail="b")
    for name in ("a", "b"):
        fake.create(task(name))
    e = ex.Executor(fake, cachemod.Cache(), order, clock)
    await e.run([ex.Requeue(("Queue", "", "forge-a"), clock.now), ex.RecordEvent(ref("a", "uid-a"), "Normal", "X", "x"),
                 ex.WriteStatus("AgentTask", "ns", "a", "", {"phase": "Running"})])
    assert [x for x in order.log if x != "queued b"] == ["wrote a", "queued forge-a"]  # (b: the task's build)
    order.log.clear()
    with pytest.raises(RuntimeError):
        await e.run([ex.Requeue(("Queue", "", "timer"), clock.now), ex.WriteStatus("AgentTask", "ns", "b", "", {})])
    assert order.log == ["wrote b", "queued timer"]  # kept: the retry may not ask again for what went through
