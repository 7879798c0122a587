"""One controller per kind: its queue hands each reference to one of N workers, never to two at once; a failed
reconcile comes back with backoff; the reference is handed back whatever raised; a stop lets in-flight work finish;
a wedged reconcile fails health. And the facade that routes references to their kind's queue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import driving
from longshot.controllers import controller as ctl
from longshot.controllers import workqueue
from longshot.controllers.workqueue import Queues, ShutDown, WorkQueue

pytestmark = pytest.mark.unit


def clock() -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC)


class Executor:
    def __init__(self) -> None:
        self.ran: list[Any] = []

    async def run(self, actions: list[Any]) -> None:
        self.ran.extend(actions)


def controller(reconcile: Any, *, workers: int = 3, stall: float = 60.0, mono: list[float] | None = None,
               after: Any = None) -> ctl.Controller:
    m = mono if mono is not None else [0.0]
    return ctl.Controller("AgentTask", reconcile, Executor(), WorkQueue(clock), workers=workers,  # type: ignore[arg-type]
                          stall_seconds=stall, monotonic=lambda: m[0], after=after)


async def test_workers_share_the_queue_and_never_hold_one_reference_twice():
    running: dict[workqueue.Ref, int] = {}
    most, seen = 0, []
    gate = asyncio.Event()

    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        nonlocal most
        running[ref] = running.get(ref, 0) + 1
        most = max(most, sum(running.values()))
        assert running[ref] == 1  # never two workers on one reference
        seen.append(ref)
        await gate.wait()
        running[ref] -= 1
        return [ref[2]]

    c = controller(reconcile, workers=3)
    refs = [("AgentTask", "ns", f"t{i}") for i in range(5)]
    c.queue.add_all(refs)
    run = asyncio.create_task(c.run())
    while len(c.in_flight) < 3:
        await asyncio.sleep(0)
    c.queue.add(refs[0])  # changed while being reconciled: processed again after, not beside
    assert len(c.in_flight) == 3 and most == 3  # three workers, three at once
    gate.set()
    while c.queue.pending() or c.in_flight:
        await asyncio.sleep(0)
    c.queue.shut_down()
    await asyncio.wait_for(run, timeout=5)
    assert sorted(seen) == sorted([*refs, refs[0]])
    assert sorted(c.executor.ran) == sorted(["t0", "t0", "t1", "t2", "t3", "t4"])  # type: ignore[attr-defined]


async def test_a_failed_reconcile_is_retried_with_backoff_and_the_reference_handed_back():
    calls: list[workqueue.Ref] = []
    after: list[workqueue.Ref] = []

    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        calls.append(ref)
        raise RuntimeError("the API server is busy")

    c = controller(reconcile, after=after.append)
    ref = ("AgentTask", "ns", "t")
    c.queue.add(ref)
    assert await driving.drain(c) == 1
    assert c.queue.failures(ref) == 1 and not c.queue.busy(ref) and c.queue.next_due() is not None
    assert after == [ref] and c.failures == 1 and not c.in_flight


async def test_a_stop_lets_the_reconcile_in_flight_finish_and_hands_out_nothing_more():
    release = asyncio.Event()
    finished: list[str] = []

    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        await release.wait()
        finished.append(ref[2])
        return []

    c = controller(reconcile, workers=1)
    c.queue.add_all([("AgentTask", "ns", "a"), ("AgentTask", "ns", "b")])
    run = asyncio.create_task(c.run())
    while not c.in_flight:
        await asyncio.sleep(0)
    c.queue.shut_down()
    release.set()
    await asyncio.wait_for(run, timeout=5)
    assert finished == ["a"]  # a finished; b was not handed out
    with pytest.raises(ShutDown):
        await c.queue.get()


async def test_a_reconcile_past_its_stall_limit_fails_health():
    mono = [0.0]
    release = asyncio.Event()

    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        await release.wait()
        return []

    c = controller(reconcile, stall=300.0, mono=mono)
    c.queue.add(("AgentTask", "ns", "a"))
    started = driving.start_due(c)
    assert started == 1
    await asyncio.sleep(0)
    mono[0] += 299
    assert c.healthy() and c.longest_running() == 299
    mono[0] += 2
    assert not c.healthy()
    release.set()
    await driving.settle_controller(c)
    assert c.healthy() and c.longest_running() == 0


async def test_get_waits_for_a_reference_and_each_goes_to_one_waiter():
    q: WorkQueue[str] = WorkQueue(clock)
    waiters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    q.add_all(["a", "b"])
    done, pending = await asyncio.wait(waiters, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    while len(done) < 2:
        more, pending = await asyncio.wait(pending, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        done |= more
    assert sorted(w.result() for w in done) == ["a", "b"] and len(pending) == 1
    q.shut_down()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(pending.pop(), timeout=5)


def test_queues_route_references_to_their_kind_and_drop_unknown_kinds():
    tasks: WorkQueue[workqueue.Ref] = WorkQueue(clock)
    builds: WorkQueue[workqueue.Ref] = WorkQueue(clock)
    qs = Queues({"AgentTask": tasks, "BuildRequest": builds})
    qs.add_all([("AgentTask", "ns", "t"), ("BuildRequest", "ns", "b"), ("Pod", "ns", "p")])
    qs.add_at(("BuildRequest", "ns", "later"), datetime(2030, 1, 1, tzinfo=UTC))
    assert tasks.take() == [("AgentTask", "ns", "t")]
    assert builds.take() == [("BuildRequest", "ns", "b")]
    assert qs.pending() == 1 and qs.next_due() == datetime(2030, 1, 1, tzinfo=UTC)
    assert qs.busy(("AgentTask", "ns", "t")) and not qs.claim(("AgentTask", "ns", "t"))
    qs.done(("AgentTask", "ns", "t"))
    assert qs.claim(("AgentTask", "ns", "t"))


async def test_min_interval_hands_a_reference_to_workers_at_most_once_per_interval_and_coalesces_meanwhile():
    """A build is enqueued by every change of its tasks: with ``min_interval`` the events that land while it waits
    are one reconcile, handed out once the interval since the last one's end has passed."""
    now = [datetime(2025, 1, 1, tzinfo=UTC)]
    q = workqueue.WorkQueue[str](lambda: now[0], min_interval=0.5)
    q.add("b")
    assert await q.get() == "b"
    q.done("b")
    for _ in range(100):
        q.add("b")
    q.add("other")
    assert await q.get() == "other"  # another reference is not held back
    waiting = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not waiting.done() and len(q) == 1  # "b" waits, once
    now[0] += timedelta(seconds=0.5)
    q.wake.set()
    assert await asyncio.wait_for(waiting, 5) == "b"
    q.done("b")
    assert len(q) == 0
    # the test driver's take() hands out regardless (a frozen clock in unit tests)
    q.add("b")
    assert q.take() == ["b"]


async def test_a_reconcile_past_its_deadline_is_cancelled_and_retried_and_the_controller_stays_healthy():
    """A reconcile waiting on a tenant's server that never answers: cancelled at the deadline, retried with backoff,
    its reference handed back; the controller's health (its stall limit, longer) is never at stake."""
    never = asyncio.Event()
    cancelled = []

    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(ref)
            raise
        return []

    ref = ("AgentTask", "slow-tenant", "t0")
    c = ctl.Controller("AgentTask", reconcile, Executor(), WorkQueue(clock), workers=1,  # type: ignore[arg-type]
                       stall_seconds=60.0, deadline=0.01)
    c.queue.add(ref)
    assert c.queue.take() == [ref]
    await asyncio.wait_for(c.process(ref), timeout=30)
    assert cancelled == [ref]
    assert c.failures == 1 and c.reconciles == 0
    assert c.queue.failures(ref) == 1 and c.queue.next_due() is not None  # retried with backoff
    assert not c.queue.busy(ref) and not c.in_flight and c.healthy()


async def test_a_timeout_raised_by_the_reconcile_itself_is_its_own_error_not_the_deadline():
    async def reconcile(ref: workqueue.Ref) -> list[Any]:
        raise TimeoutError("the tracker did not answer")

    ref = ("AgentTask", "ns", "t0")
    c = ctl.Controller("AgentTask", reconcile, Executor(), WorkQueue(clock), workers=1,  # type: ignore[arg-type]
                       stall_seconds=60.0, deadline=30.0)
    with pytest.raises(TimeoutError, match="tracker"):
        await c._decide(ref)
