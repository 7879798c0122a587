"""Requests waiting for a mirror to be up to date wait on a shared fetch, not in line for a lock: the fetch running
(when it started late enough for them) or the one queued behind it, which every request that needs it joins. Until
2026-11-29 each waiter took a lock in turn; on a busy gateway a push waited 17 s at p50 for fetches of 0.95 s
(docs/benchmarks.md). The fetch itself (``GitService._fetch``) is replaced here by one the test holds and releases."""

from __future__ import annotations

import asyncio
import time

import pytest

from longshot.gateway import gitserve
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


class HeldFetches:
    """Stands in for ``GitService._fetch``: records each fetch's start, runs one at a time or says so, and ends
    when the test releases it (or fails it)."""

    def __init__(self, service: gitserve.GitService) -> None:
        self.service = service
        self.started: list[float] = []
        self.ends: list[asyncio.Future[None]] = []
        self.running = 0
        self.overlapped = False
        self.began = asyncio.Event()

    async def __call__(self, up: gitserve.Upstream, started: float) -> None:
        self.running += 1
        self.overlapped |= self.running > 1
        self.started.append(started)
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ends.append(end)
        self.began.set()
        try:
            await end
            self.service._fetched[up.key] = started
        finally:
            self.running -= 1

    async def next_began(self, n: int) -> None:
        while len(self.started) < n:
            self.began.clear()
            await asyncio.wait_for(self.began.wait(), 5)


@pytest.fixture
def service(tmp_path):
    s = gitserve.GitService(GatewaySettings(mirror_dir=str(tmp_path / "m")))
    s.maintain = lambda up: None  # type: ignore[method-assign]  (no mirror on disk here)
    return s


@pytest.fixture
def fetches(service):
    """The service's fetches, held by the test."""
    held = HeldFetches(service)
    service._fetch = held
    return held


def upstream(key: str = "k") -> gitserve.Upstream:
    return gitserve.Upstream(url="https://git.example.com/o/r.git", key=key, secret_name="")


async def test_pushes_that_ask_during_a_fetch_share_one_fetch_that_starts_after_all_of_them_asked(service, fetches):
    up = upstream()
    first = asyncio.create_task(service.refresh(up))
    await fetches.next_began(1)
    asked = time.monotonic()
    waiting = [asyncio.create_task(service.refresh(up)) for _ in range(50)]
    await asyncio.sleep(0)
    assert len(fetches.started) == 1  # they wait: the running fetch started before they asked
    fetches.ends[0].set_result(None)
    await first
    await fetches.next_began(2)
    assert len(fetches.started) == 2 and fetches.started[1] >= asked  # one more fetch for all fifty
    assert not any(t.done() for t in waiting)
    fetches.ends[1].set_result(None)
    # all fifty wake together, within a few passes of the event loop (waiters in line for a lock take one pass each)
    for _ in range(6):
        await asyncio.sleep(0)
    assert all(t.done() for t in waiting), f"{sum(not t.done() for t in waiting)} of 50 still waiting"
    assert all(t.exception() is None for t in waiting)
    assert len(fetches.started) == 2 and not fetches.overlapped


async def test_a_clone_joins_a_running_fetch_that_started_within_its_age_and_a_push_does_not(service, fetches):
    up = upstream()
    push = asyncio.create_task(service.refresh(up))
    await fetches.next_began(1)
    clone = asyncio.create_task(service.refresh(up, max_age=30.0))
    later_push = asyncio.create_task(service.refresh(up))
    fetches.ends[0].set_result(None)
    await asyncio.wait_for(asyncio.gather(push, clone), 5)  # the clone was served by the running fetch
    await fetches.next_began(2)
    assert not later_push.done()  # the push asked after that fetch started: it waits for the next
    fetches.ends[1].set_result(None)
    await asyncio.wait_for(later_push, 5)
    # a clone within the age of the last fetch is served from the mirror as it is
    await asyncio.wait_for(service.refresh(up, max_age=30.0), 5)
    assert len(fetches.started) == 2


async def test_a_failed_fetch_fails_each_of_its_waiters_and_the_next_request_fetches_again(service, fetches):
    up = upstream()
    waiters = [asyncio.create_task(service.refresh(up)) for _ in range(3)]
    await fetches.next_began(1)
    fetches.ends[0].set_exception(gitserve.UpstreamError("the gateway could not fetch the repository"))
    for t in waiters:
        with pytest.raises(gitserve.UpstreamError, match="could not fetch"):
            await asyncio.wait_for(t, 5)
    again = asyncio.create_task(service.refresh(up))
    await fetches.next_began(2)
    fetches.ends[1].set_result(None)
    await asyncio.wait_for(again, 5)


async def test_a_waiter_that_goes_away_does_not_stop_the_fetch_the_others_wait_for(service, fetches):
    up = upstream()
    leaving = asyncio.create_task(service.refresh(up))  # it queued the fetch
    staying = asyncio.create_task(service.refresh(up))
    await fetches.next_began(1)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert not fetches.ends[0].done()
    fetches.ends[0].set_result(None)
    await asyncio.wait_for(staying, 5)


async def test_mirrors_fetch_independently(service, fetches):
    one = asyncio.create_task(service.refresh(upstream("a")))
    other = asyncio.create_task(service.refresh(upstream("b")))
    await fetches.next_began(2)  # both at once: one fetch at a time is per mirror
    for end in fetches.ends:
        end.set_result(None)
    await asyncio.wait_for(asyncio.gather(one, other), 5)
