"""A mirror's pushes run side by side and a fetch runs alone: a fetch between a push's upstream update and the
mirror's own ref update made git refuse a push the upstream had accepted ("reference already exists")."""

from __future__ import annotations

import asyncio

import pytest

from longshot.gateway.gitserve import MirrorLock

pytestmark = pytest.mark.unit


async def test_a_fetch_waits_for_the_pushes_in_flight_and_pushes_run_together():
    lock = MirrorLock()
    order: list[str] = []
    pushing = [asyncio.Event(), asyncio.Event()]
    release = asyncio.Event()

    async def push(i: int) -> None:
        async with lock.push():
            order.append(f"push{i} in")
            pushing[i].set()
            await release.wait()
            order.append(f"push{i} out")

    async def fetch() -> None:
        async with lock.fetch():
            order.append("fetch")

    p0, p1 = asyncio.create_task(push(0)), asyncio.create_task(push(1))
    await pushing[0].wait()
    await pushing[1].wait()  # both pushes are in at once
    f = asyncio.create_task(fetch())
    await asyncio.sleep(0)  # let the fetch start waiting (a scheduling turn, not a timing assumption)
    assert "fetch" not in order
    release.set()
    await asyncio.gather(p0, p1, f)
    assert order.index("fetch") > max(order.index("push0 out"), order.index("push1 out"))


async def test_a_waiting_fetch_goes_before_new_pushes_and_a_push_waits_for_a_fetch():
    lock = MirrorLock()
    order: list[str] = []
    in_push = asyncio.Event()
    release_push = asyncio.Event()

    async def first_push() -> None:
        async with lock.push():
            in_push.set()
            await release_push.wait()
            order.append("push1")

    async def fetch() -> None:
        async with lock.fetch():
            order.append("fetch")

    async def later_push() -> None:
        async with lock.push():
            order.append("push2")

    p1 = asyncio.create_task(first_push())
    await in_push.wait()
    f = asyncio.create_task(fetch())
    await asyncio.sleep(0)
    p2 = asyncio.create_task(later_push())  # arrives while the fetch waits: it must not overtake it
    await asyncio.sleep(0)
    assert order == []
    release_push.set()
    await asyncio.gather(p1, f, p2)
    assert order == ["push1", "fetch", "push2"]
