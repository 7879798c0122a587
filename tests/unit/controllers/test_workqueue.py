from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from longshot.controllers.workqueue import WorkQueue

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_deduplicated_and_never_processed_twice_at_once():
    q: WorkQueue[str] = WorkQueue(Clock())
    q.add("a")
    q.add("a")
    q.add("b")
    assert q.take() == ["a", "b"]
    q.add("a")  # changed while being processed
    assert q.take() == []
    q.done("a")
    assert q.take() == ["a"]


def test_a_failed_reconcile_comes_back_with_growing_backoff_and_success_resets_it():
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock, base_delay=1, max_delay=8)
    assert q.take() == []
    delays = []
    for _ in range(5):
        delays.append(q.retry("a"))
    assert delays == [1, 2, 4, 8, 8]
    assert q.take() == []  # not due yet
    clock.tick(1)
    assert q.take() == ["a"]
    q.done("a")
    q.forget("a")
    assert q.retry("a") == 1 and q.failures("a") == 1


def test_timers_release_at_their_time():
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add_after("later", 10)
    q.add_at("now", clock.now)
    assert q.take() == ["now"]
    assert q.next_due() == clock.now + timedelta(seconds=10)
    clock.tick(10)
    assert q.take() == ["later"]


def test_a_claimed_reference_is_not_handed_out_until_done_and_a_taken_one_cannot_be_claimed():
    q: WorkQueue[str] = WorkQueue(Clock())
    q.add("a")
    assert q.claim("a") and q.busy("a")
    assert not q.claim("a")  # once at a time
    assert q.take() == []  # dirty, but being processed: not handed out twice at once
    q.done("a")
    assert not q.busy("a")
    assert q.take() == ["a"]  # the change made while it was claimed is not lost
    assert not q.claim("a")  # taken by the step: the dispatcher leaves it
    q.done("a")
    assert q.claim("a")


def test_a_resync_queues_behind_every_event_and_an_event_moves_a_resynced_reference_up():
    q: WorkQueue[str] = WorkQueue(Clock())
    q.add_low(f"resync-{i}" for i in range(1000))
    q.add("event")
    q.add("resync-500")  # an event for a reference the resync marked: no longer low
    q.add_low(["event", "late"])  # marking low never moves a reference down
    assert q.take(3) == ["event", "resync-500", "resync-0"]
    assert len(q) == 999 and q.pending() == 999
    assert q.take()[-1] == "late"


def test_urgent_references_are_handed_out_first_whatever_came_before():
    q: WorkQueue[str] = WorkQueue(Clock(), urgent=lambda r: r.startswith("gate"))
    q.add_all(f"worker-{i}" for i in range(100))
    q.add_low(["resync"])
    q.add("gate-1")
    q.add_after("gate-2", 5)
    assert q.take(1) == ["gate-1"]
    q.clock.tick(5)  # type: ignore[attr-defined]
    assert q.take(2) == ["gate-2", "worker-0"]
    q.done("gate-1")
    q.add("gate-1")
    q.add("gate-1")
    assert q.take(2) == ["gate-1", "worker-1"]


def test_a_resync_marks_an_urgent_reference_urgent_not_low():
    q: WorkQueue[str] = WorkQueue(Clock(), urgent=lambda r: r.startswith("gate"))
    q.add("event")
    q.add_low([*(f"resync-{i}" for i in range(100)), "gate-1", "event"])
    assert q.take(3) == ["gate-1", "event", "resync-0"]


async def test_a_worker_waiting_on_get_is_handed_the_urgent_reference_first():
    q: WorkQueue[str] = WorkQueue(Clock(), urgent=lambda r: r == "gate")
    q.add_low(["resync"])
    q.add_all(["worker-a", "worker-b"])
    q.add("gate")
    assert [await q.get(), await q.get(), await q.get(), await q.get()] == ["gate", "worker-a", "worker-b", "resync"]
    q.done("gate")
    assert q.in_flight() == 3 and len(q) == 0


def test_with_a_duty_a_reference_waits_after_its_reconcile_a_multiple_of_the_time_it_took():
    """``duty=0.25`` (the BuildRequest controller's): a reconcile that took 2 s is followed by 6 s in which the
    reference is not handed out again, however often it is added; a short one only by ``min_interval``."""
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock, min_interval=1.0, duty=0.25)
    q.add("b")
    assert q._get_one() == "b"
    clock.tick(2)  # a long reconcile
    q.add("b")
    q.done("b")
    clock.tick(5.9)
    assert q._get_one() is None
    clock.tick(0.1)
    assert q._get_one() == "b"
    clock.tick(0.1)  # a short one: min_interval holds it, from when it was handed out
    q.done("b")
    q.add("b")
    clock.tick(0.8)
    assert q._get_one() is None
    clock.tick(0.1)
    assert q._get_one() == "b"
    q.done("b")
    plain: WorkQueue[str] = WorkQueue(clock, min_interval=1.0)  # no duty: only min_interval
    plain.add("b")
    assert plain._get_one() == "b"
    clock.tick(5)
    plain.done("b")
    plain.add("b")
    assert plain._get_one() == "b"


def test_with_a_duty_the_wait_counts_the_reconcile_itself_not_the_writes_it_made():
    """A build's reconcile that made a plan's 150 tasks spent seconds on their creates, which wait for the API server,
    not the event loop: the duty counts what the controller says the reconcile itself took (``busy``)."""
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock, min_interval=1.0, duty=0.25)
    q.add("b")
    assert q._get_one() == "b"
    clock.tick(8)  # 0.2 s of reconcile, then the writes
    q.add("b")
    q.done("b", busy=0.2)
    clock.tick(0.5)
    assert q._get_one() is None
    clock.tick(0.1)
    assert q._get_one() == "b"  # 0.6 s of rest were due after it, not 24


# --- tenants in their own lanes ----------------------------------------------------------------------


def _ns(ref: tuple[str, str]) -> str:
    return ref[0]


async def _got(q: WorkQueue[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    return [await q.get() for _ in range(n)]


async def test_get_takes_turns_between_tenants_whatever_the_order_they_were_added():
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns)
    q.add_all([("a", f"b{i}") for i in range(4)])
    q.add_all([("b", "b0"), ("c", "b0"), ("b", "b1")])
    got = await _got(q, 7)
    assert got == [("a", "b0"), ("b", "b0"), ("c", "b0"), ("a", "b1"), ("b", "b1"), ("a", "b2"), ("a", "b3")]


async def test_a_tenant_at_its_cap_waits_and_another_tenant_is_handed_out_at_once():
    """Tenant a's sixteen builds take at most four workers of eight: b's one build does not wait for them."""
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns, tenant_cap=4)
    q.add_all([("a", f"b{i}") for i in range(16)])
    held = await _got(q, 4)
    assert {r[0] for r in held} == {"a"} and q.in_flight_of("a") == 4
    assert q.take(0) == []
    q.add(("b", "b0"))
    assert await asyncio.wait_for(q.get(), 1) == ("b", "b0")
    with pytest.raises(TimeoutError):  # a fifth of a's: held back by the cap
        await asyncio.wait_for(q.get(), 0.05)
    waiting = asyncio.create_task(q.get())
    q.done(held[0])  # one of a's ends: the next of a's goes
    assert await asyncio.wait_for(waiting, 1) == ("a", "b4")
    assert q.in_flight_of("a") == 4 and q.in_flight_of("b") == 1


async def test_a_claimed_reference_counts_toward_its_tenants_cap():
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns, tenant_cap=1)
    assert q.claim(("a", "t0"))
    q.add_all([("a", "t1"), ("b", "t0")])
    assert await asyncio.wait_for(q.get(), 1) == ("b", "t0")
    q.done(("a", "t0"))
    assert await asyncio.wait_for(q.get(), 1) == ("a", "t1")


def test_take_takes_turns_but_ignores_the_cap_and_keeps_the_tiers():
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns, tenant_cap=1, urgent=lambda r: r[1] == "gate")
    q.add_low([("a", "resync")])
    q.add_all([("a", "t0"), ("a", "t1"), ("b", "t0"), ("b", "gate")])
    assert q.take() == [("b", "gate"), ("a", "t0"), ("b", "t0"), ("a", "t1"), ("a", "resync")]
    for r in [("b", "gate"), ("a", "t0"), ("b", "t0"), ("a", "t1"), ("a", "resync")]:
        q.done(r)
    assert q.in_flight_of("a") == q.in_flight_of("b") == 0


def test_a_reference_is_never_handed_to_two_workers_across_tenants():
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns, tenant_cap=2)
    q.add_all([("a", "x"), ("b", "x")])
    assert q.take() == [("a", "x"), ("b", "x")]
    q.add_all([("a", "x"), ("b", "x")])  # changed while being processed
    assert q.take() == []
    q.done(("a", "x"))
    assert q.take() == [("a", "x")]
    assert len(q) == 1  # b's waits for its own done


async def test_a_lone_tenant_borrows_all_workers_but_one_which_a_new_tenant_finds():
    """Eight workers and a cap of four: a lone tenant with sixteen ready takes seven (it is not held to its share
    while nobody else waits); the eighth worker is the reserve, and b's first reference is handed out at once."""
    q: WorkQueue[tuple[str, str]] = WorkQueue(Clock(), tenant=_ns, tenant_cap=4, workers=8)
    q.add_all([("a", f"b{i}") for i in range(16)])
    held = await _got(q, 7)
    assert {r[0] for r in held} == {"a"} and q.in_flight_of("a") == 7
    with pytest.raises(TimeoutError):  # the last free worker is kept for a tenant under its cap
        await asyncio.wait_for(q.get(), 0.05)
    q.add(("b", "b0"))
    assert await asyncio.wait_for(q.get(), 1) == ("b", "b0")
