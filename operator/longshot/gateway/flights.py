"""Concurrent look-ups of one thing share one call (what Go calls a single flight).

A thousand agents' requests arrive in bursts: an attempt's clone, heartbeat and model call start together, and a
cached credential expires under many requests at once. Without this each of them made its own TokenReview, its own
reads of Pod, task and build, its own GET of the Secret; now the first starts the call and the others await it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Flights(Generic[V]):
    """Concurrent look-ups of one key share one call: the first asker starts it, the others await it, and all get
    its result or its exception. A waiter that goes away (cancelled) does not stop the call for the others; once it
    ends, the next asker starts a new one (what it found is cached by the caller, not here). Event loop only."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[V]] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(call())
            self._running[key] = running
            running.add_done_callback(lambda f: self._ended(key, f))
        return await asyncio.shield(running)

    def _ended(self, key: Hashable, f: asyncio.Future[V]) -> None:
        if self._running.get(key) is f:
            del self._running[key]
        if not f.cancelled():
            f.exception()  # retrieved: every waiter may have gone away

    def __len__(self) -> int:
        return len(self._running)
