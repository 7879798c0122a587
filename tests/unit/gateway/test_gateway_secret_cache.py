"""The gateway's Secret reads are reused for secret_cache_seconds (gateway.cluster.Cluster.get_secret)."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest

from longshot.gateway import cluster as gcluster

pytestmark = pytest.mark.unit


class Secrets:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {("ns", "git"): {"token": "one"}}
        self.reads = 0

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads += 1
        return self.data.get((namespace, name))


def cluster(ttl: float, monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> tuple[gcluster.Cluster, Secrets]:
    c = gcluster.Cluster(kubernetes.client.ApiClient())
    fake = Secrets()
    c.kube = fake  # type: ignore[assignment]
    c.secret_cache_seconds = ttl
    monkeypatch.setattr(gcluster.time, "monotonic", lambda: clock[0])
    return c, fake


def test_a_secret_is_read_once_per_window_and_a_rotation_is_seen_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    c, fake = cluster(5.0, monkeypatch, clock)
    for _ in range(10):
        assert c.get_secret("ns", "git") == {"token": "one"}
    assert fake.reads == 1
    fake.data[("ns", "git")] = {"token": "two"}  # rotated
    clock[0] = 104.0
    assert c.get_secret("ns", "git") == {"token": "one"} and fake.reads == 1
    clock[0] = 105.5
    assert c.get_secret("ns", "git") == {"token": "two"} and fake.reads == 2


def test_a_missing_secret_is_not_cached_and_zero_reads_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    c, fake = cluster(5.0, monkeypatch, clock)
    assert c.get_secret("ns", "nope") is None and c.get_secret("ns", "nope") is None
    assert fake.reads == 2
    got: Any = c.get_secret("ns", "git")
    got["token"] = "changed by a caller"  # a copy: the cached data is not the caller's
    assert c.get_secret("ns", "git") == {"token": "one"}
    c2, fake2 = cluster(0.0, monkeypatch, clock)
    for _ in range(3):
        c2.get_secret("ns", "git")
    assert fake2.reads == 3


async def test_from_the_event_loop_a_cached_secret_needs_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [10.0]
    c, fake = cluster(5.0, monkeypatch, clock)
    threads: list[object] = []

    async def to_thread(fn, *args):  # type: ignore[no-untyped-def]
        threads.append(fn)
        return fn(*args)

    monkeypatch.setattr(gcluster.asyncio, "to_thread", to_thread)
    assert await c.aget_secret("ns", "git") == {"token": "one"}  # a miss: read in a thread
    assert await c.aget_secret("ns", "git") == {"token": "one"}  # a hit: on the loop
    assert len(threads) == 1 and fake.reads == 1
    clock[0] = 16.0  # past the window: read again, in a thread
    assert await c.aget_secret("ns", "git") == {"token": "one"} and len(threads) == 2 and fake.reads == 2


async def test_requests_that_miss_the_cache_together_share_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [10.0]
    c, fake = cluster(5.0, monkeypatch, clock)
    gate = asyncio.Event()
    started: list[object] = []

    async def to_thread(fn, *args):  # type: ignore[no-untyped-def]
        started.append(fn)  # a read of the API server begins
        await gate.wait()  # and is under way while the others arrive
        return fn(*args)

    monkeypatch.setattr(gcluster.asyncio, "to_thread", to_thread)
    reads = [asyncio.create_task(c.aget_secret("ns", "git")) for _ in range(30)]
    for _ in range(5):  # loop passes: each request has asked, the shared read has begun
        await asyncio.sleep(0)
    assert len(started) == 1
    gate.set()
    got = await asyncio.gather(*reads)
    assert fake.reads == 1 and got == [{"token": "one"}] * 30
    got[0]["token"] = "changed by a caller"  # each its own copy
    assert got[1] == {"token": "one"}
