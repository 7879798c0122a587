"""Stopping the leadership loop while it hands a shard over (leadership.cancel_and_wait). An integration test's
teardown found the operator still running 60 s after its stop: the shutdown cancelled the leadership loop while a
rebalance was awaiting a shard elector's release inside ``contextlib.suppress(CancelledError)``, which swallowed
the loop's own cancellation, and the loop went on."""

from __future__ import annotations

import asyncio

import pytest

from longshot.controllers import leadership

pytestmark = pytest.mark.unit


def elector(released: list[str], name: str, gate: asyncio.Event, started: asyncio.Event | None = None):
    async def run() -> None:
        try:
            await asyncio.Event().wait()  # holds its Lease until cancelled
        except asyncio.CancelledError:
            if started is not None:
                started.set()
            await gate.wait()  # releasing the Lease: an API call
            released.append(name)
            raise
    return run


async def spin() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_loop_cancelled_while_it_hands_a_shard_over_stops():
    released: list[str] = []
    gate, releasing = asyncio.Event(), asyncio.Event()

    async def loop() -> None:  # rebalance: hand the shard over, then wait for the next poll
        shard = asyncio.create_task(elector(released, "shard", gate, releasing)())
        await asyncio.sleep(0)
        await leadership.cancel_and_wait(shard)
        while True:
            await asyncio.sleep(0)

    task = asyncio.create_task(loop())
    await releasing.wait()
    task.cancel()  # the operator's shutdown
    gate.set()
    await spin()
    assert task.cancelled()  # with suppress(CancelledError) the loop was still running here
    assert released == ["shard"]  # and the shard was handed over first


async def test_in_a_finally_of_a_cancelled_task_every_child_is_waited_for():
    released: list[str] = []
    gate = asyncio.Event()
    gate.set()
    waited: list[bool] = []

    async def run() -> None:
        children = [asyncio.create_task(elector(released, n, gate)()) for n in ("a", "b")]
        try:
            await asyncio.Event().wait()
        finally:  # leadership.stop() while the loop is being cancelled
            for c in children:
                await leadership.cancel_and_wait(c)
            waited.append(True)

    task = asyncio.create_task(run())
    await spin()
    task.cancel()
    await spin()
    assert task.cancelled() and waited == [True] and released == ["a", "b"]


async def test_a_childs_error_is_not_raised_to_the_caller():
    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("the API server is away") from None

    child = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await leadership.cancel_and_wait(child)
    assert child.done() and isinstance(child.exception(), RuntimeError)
