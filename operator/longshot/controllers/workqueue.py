"""A work queue of references to reconcile, after controller-runtime's: deduplicated, never processed twice at
once, retried with per-key exponential backoff when a reconcile fails, and able to hold a reference until a
time (timers: backoffs, sweeps, error retries).

* :meth:`add` marks a reference dirty. A reference added while it is being processed is processed again
  after :meth:`done` (nothing is lost, nothing runs twice at once).
* :meth:`retry` is for a failed reconcile: the reference comes back after ``base * 2**(failures-1)`` seconds,
  capped at ``cap``; :meth:`forget` (after a success) resets its failure count. A failed reconcile is never
  dropped.
* :meth:`add_at` holds a reference until a time; the earliest such time is :meth:`next_due`.
* :meth:`claim` takes one reference out of turn (the dispatcher admitting a task while the step works): it is
  processing until :meth:`done`, exactly as if :meth:`take` had handed it out.

The clock is injected; the queue does no I/O and no waiting itself (the manager waits on :attr:`wake`).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")


class WorkQueue(Generic[T]):
    def __init__(self, clock: Callable[[], datetime], *, base_delay: float = 0.25, max_delay: float = 60.0) -> None:
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._dirty: dict[T, None] = {}
        self._processing: set[T] = set()
        self._failures: dict[T, int] = {}
        self._timers: list[tuple[datetime, int, T]] = []
        self._seq = 0
        self.wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, ref: T) -> None:
        self._dirty[ref] = None
        self.wake.set()

    def add_all(self, refs: Iterable[T]) -> None:
        for r in refs:
            self._dirty[r] = None
        self.wake.set()

    def add_at(self, ref: T, when: datetime) -> None:
        if when <= self.clock():
            self.add(ref)
            return
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, ref))
        self.wake.set()

    def add_after(self, ref: T, seconds: float) -> None:
        self.add_at(ref, self.clock() + timedelta(seconds=seconds))

    def retry(self, ref: T) -> float:
        """A reconcile of ``ref`` failed: bring it back after its backoff; returns the delay."""
        n = self._failures.get(ref, 0) + 1
        self._failures[ref] = n
        delay = float(min(self.max_delay, self.base_delay * 2.0 ** min(n - 1, 30)))
        self.add_after(ref, delay)
        return delay

    def forget(self, ref: T) -> None:
        self._failures.pop(ref, None)

    def failures(self, ref: T) -> int:
        return self._failures.get(ref, 0)

    def _release_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, ref = heapq.heappop(self._timers)
            self._dirty[ref] = None

    def take(self, limit: int | None = None) -> list[T]:
        """Dirty references that are not being processed (due timers included); they are now processing."""
        self._release_timers()
        out: list[T] = []
        for ref in list(self._dirty):
            if ref in self._processing:
                continue
            del self._dirty[ref]
            self._processing.add(ref)
            out.append(ref)
            if limit is not None and len(out) >= limit:
                break
        return out

    def claim(self, ref: T) -> bool:
        """Process ``ref`` now, out of turn: False when it is being processed already (leave it to that).
        A dirty ``ref`` stays dirty: it is handed out again after :meth:`done`, as one added while processing."""
        if ref in self._processing:
            return False
        self._processing.add(ref)
        return True

    def busy(self, ref: T) -> bool:
        """``ref`` is being processed (taken or claimed, not done yet)."""
        return ref in self._processing

    def done(self, ref: T) -> None:
        self._processing.discard(ref)
        if ref in self._dirty:
            self.wake.set()

    def next_due(self) -> datetime | None:
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """Dirty references plus timers."""
        return len(self._dirty) + len(self._timers)
