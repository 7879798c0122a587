from __future__ import annotations

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
