"""A Lease's calls run on their own threads: a default executor saturated by reconciles' API and git work must not
hold a renewal past its deadline (it did: the replica dropped its shards every few seconds under load)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import kubernetes
import pytest

from longshot.runtime import leader

pytestmark = pytest.mark.unit


class Answer:
    data = b'{"metadata": {"name": "l"}}'


async def test_a_lease_call_is_answered_while_every_default_thread_is_busy():
    loop = asyncio.get_running_loop()
    busy = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy)
    release = threading.Event()
    blocker = loop.run_in_executor(None, release.wait, 30)  # the only default thread, held
    try:
        elector = leader.LeaderElector(kubernetes.client.ApiClient(), namespace="ns", name="l", identity="me")
        seen: list[str] = []

        def read(*args: Any, **kw: Any) -> Answer:
            seen.append(threading.current_thread().name)
            return Answer()

        assert await elector._call(read, timeout=2.0) == {"metadata": {"name": "l"}}
        assert seen and seen[0].startswith("longshot-lease")
        assert not blocker.done()
    finally:
        release.set()
        await blocker
        busy.shutdown()
