"""A mirror's pushes run side by side, and a fetch runs beside them leaving the refs they move alone: a fetch between
a push's upstream update and the mirror's own ref update that wrote the pushed ref made git refuse a push the
upstream had accepted ("reference already exists"). Until 2026-11-28 a fetch waited for every push in flight, which
made a repository's clones and pushes one chain of fetches (docs/benchmarks.md, the gateway at fleet scale)."""

from __future__ import annotations

import asyncio

import pytest

from longshot.gateway.gitserve import MirrorLock, fetch_refspecs

pytestmark = pytest.mark.unit


async def test_a_fetch_does_not_wait_for_the_pushes_in_flight_and_is_told_their_refs():
    lock = MirrorLock()
    pushing = [asyncio.Event(), asyncio.Event()]
    release = asyncio.Event()

    async def push(i: int, ref: str) -> None:
        async with lock.push((ref,)):
            pushing[i].set()
            await release.wait()

    p0 = asyncio.create_task(push(0, "refs/heads/longshot/b/t0"))
    p1 = asyncio.create_task(push(1, "refs/heads/longshot/b/t1"))
    await pushing[0].wait()
    await pushing[1].wait()  # both pushes are in at once
    assert lock.pushes == 2
    async with lock.fetch() as moving:  # would hang here if the fetch still waited for the pushes
        assert moving == {"refs/heads/longshot/b/t0", "refs/heads/longshot/b/t1"}
    release.set()
    await asyncio.gather(p0, p1)
    assert lock.pushes == 0
    async with lock.fetch() as moving:
        assert moving == frozenset()  # the pushes are over: their refs are fetched again


async def test_a_push_waits_for_a_running_fetch_and_a_fetch_waits_for_pushes_that_wait_to_register():
    lock = MirrorLock()
    order: list[str] = []
    in_fetch = asyncio.Event()
    release_fetch = asyncio.Event()

    async def first_fetch() -> None:
        async with lock.fetch():
            in_fetch.set()
            await release_fetch.wait()
            order.append("fetch1")

    async def push() -> None:
        async with lock.push(("refs/heads/x",)):
            order.append("push")

    async def second_fetch() -> frozenset[str]:
        async with lock.fetch() as moving:
            order.append("fetch2")
            return moving

    f1 = asyncio.create_task(first_fetch())
    await in_fetch.wait()
    p = asyncio.create_task(push())
    await asyncio.sleep(0)  # a scheduling turn, not a timing assumption: the push is waiting for the fetch
    f2 = asyncio.create_task(second_fetch())  # arrives while the push waits: it must not overtake it
    await asyncio.sleep(0)
    assert order == []
    release_fetch.set()
    await asyncio.gather(f1, p, f2)
    assert order == ["fetch1", "push", "fetch2"]


async def test_the_same_ref_pushed_twice_stays_left_out_until_both_pushes_end():
    lock = MirrorLock()
    ref = "refs/heads/longshot/b/t"
    async with lock.push((ref,)):
        async with lock.push((ref,)):
            pass
        async with lock.fetch() as moving:
            assert moving == {ref}
    async with lock.fetch() as moving:
        assert moving == frozenset()


def test_the_fetch_refspecs_leave_out_the_moving_refs_and_nothing_that_is_not_a_plain_ref_name():
    base = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", "+refs/longshot/*:refs/longshot/*"]
    assert fetch_refspecs(frozenset()) == base
    assert fetch_refspecs(frozenset({"refs/heads/longshot/b/t2", "refs/longshot/b/t1"})) == [
        *base, "^refs/heads/longshot/b/t2", "^refs/longshot/b/t1"]
    # outside the fetched namespaces, or a pattern: nothing to leave out, and never a pattern passed to git
    assert fetch_refspecs(frozenset({"refs/notes/x", "refs/heads/*", "refs/heads/a b"})) == base
