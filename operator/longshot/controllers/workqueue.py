"""A work queue of references to reconcile, after controller-runtime's: deduplicated, never processed twice at
once, retried with per-key exponential backoff when a reconcile fails, and able to hold a reference until a
time (timers: backoffs, sweeps, error retries).

* :meth:`add` marks a reference dirty. A reference added while it is being processed is processed again
  after :meth:`done` (nothing is lost, nothing runs twice at once).
* :meth:`retry` is for a failed reconcile: the reference comes back after ``base * 2**(failures-1)`` seconds,
  capped at ``cap``; :meth:`forget` (after a success) resets its failure count. A failed reconcile is never
  dropped.
* :meth:`add_at` holds a reference until a time; the earliest such time is :meth:`next_due`.
* :meth:`claim` takes one reference out of turn (the dispatcher admitting a task while the task controller's
  workers run): it is processing until :meth:`done`, exactly as if :meth:`take` had handed it out.
* :meth:`get` waits for the next reference a worker may process (controller-runtime's ``Get``); :meth:`take`
  hands out every due one at once (the tests' hand-driven turn, ``tests/driving.py``).
* Priorities, after controller-runtime's priority queue: :meth:`add_low` (the periodic resync, a leadership change:
  every object again) queues behind every reference added otherwise, and an ``urgent`` classifier puts references
  ahead of all others (the AgentTask controller: the merge queue's gate and review tasks, whose ends the queue waits
  for). Without them a resync of 10,000 tasks, or the ends of hundreds of worker Pods, each costing a read of their
  branch, stood between a gate Pod's end and the merge it was holding up.
  A reference added at a higher priority while waiting at a lower one moves up; never down.
* ``min_interval``: a reference is handed to a worker (:meth:`get`) at most once per that many seconds; events
  that land meanwhile wait and are reconciled together. The BuildRequest controller uses it: every change of any of
  a build's tasks enqueues the build, and a build's reconcile reads all of its tasks, so without it a 10,000-task
  build's reconciles cost O(tasks) per task event. (:meth:`take`, the test driver's, hands out regardless.)
  ``duty`` (below 1, with ``min_interval``): a reference handed out by :meth:`get` then waits, after :meth:`done`,
  ``1/duty - 1`` times as long as its reconcile took (``busy``: not the writes it made, which wait for the API
  server; a build's reconcile that created a plan's 150 tasks took seconds of writes), so that one reference holds
  at most that share of the workers' time however long its reconciles grow (the BuildRequest controller: a quarter;
  a 10,000-task build's reconcile is the reason).
* Tenants in their own lanes (``tenant``, ``tenant_cap``): :meth:`get` takes turns between tenants (a reference's
  namespace), round-robin in the order of their names within a tier, and hands a tenant no more while ``tenant_cap``
  of its references are being processed (claimed ones count) unless more than one of the ``workers`` is free: a
  capped tenant borrows those, and the last free worker is kept for a tenant under its cap, whose reference goes
  first (``core.lanes``). :meth:`take` takes turns too but ignores the cap.

The clock is injected; the queue does no I/O. :class:`Queues` routes references to the queue of their kind: every
kind has its own queue and workers (``controllers/controller.py``), one facade for whoever enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Final, Generic, Protocol, TypeVar

from longshot.core import lanes

T = TypeVar("T")
Ref = tuple[str, str, str]
"""(kind, namespace, name): what :class:`Queues` routes (``controllers.cache.Ref``)."""

log = logging.getLogger(__name__)

URGENT: Final = 0
NORMAL: Final = 1
LOW: Final = 2
"""The tiers of dirty references, handed out in this order."""


def _one_tenant(_: object) -> str:
    return ""


class ShutDown(Exception):
    """The queue was shut down: :meth:`WorkQueue.get` hands out nothing more (client-go's ``ShuttingDown``)."""


class Enqueuer(Protocol):
    """What reconcilers, the executor and the cache's observers need of the work queues: to add references, now or
    at a time. :class:`Queues` (every controller's queue) and a single :class:`WorkQueue` of references (unit
    tests) both are one."""

    def add_all(self, refs: Iterable[Ref]) -> None: ...

    def add_at(self, ref: Ref, when: datetime) -> None: ...


class WorkQueue(Generic[T]):
    def __init__(self, clock: Callable[[], datetime], *, base_delay: float = 0.25, max_delay: float = 60.0,
                 min_interval: float = 0.0, duty: float = 1.0, urgent: Callable[[T], bool] | None = None,
                 tenant: Callable[[T], str] | None = None, tenant_cap: int | None = None,
                 workers: int | None = None) -> None:
        self.clock = clock
        self.urgent = urgent
        self.tenant = tenant if tenant is not None else _one_tenant
        """A reference's tenant (its namespace): :meth:`get` takes turns between tenants (``core.lanes``)."""
        self.tenant_cap = tenant_cap
        """References of one tenant :meth:`get` lets be processed at once (None: no limit), unless more than one of
        the ``workers`` is free: a tenant at its cap borrows those, and the last free worker is kept for a tenant
        under its cap (``core.lanes.next_tenant``'s ``spare``)."""
        self.workers = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.min_interval = timedelta(seconds=min_interval)
        self.duty = duty
        self._cooldown: dict[T, datetime] = {}
        """Reference -> when :meth:`get` may hand it out again (``min_interval`` after it last did, and with a
        ``duty`` below 1 not before its last reconcile's time over ``duty`` has passed)."""
        self._began: dict[T, datetime] = {}
        """References handed out by :meth:`get` with a ``duty`` below 1 -> when."""
        self._tiers: tuple[dict[str, dict[T, None]], ...] = ({}, {}, {})
        """The dirty references in three tiers (urgent, normal, low; handed out in that order), each by tenant, in
        the order added."""
        self._tier_of: dict[T, int] = {}
        """Dirty reference -> its tier."""
        self._processing: set[T] = set()
        self._in_flight: dict[str, int] = {}
        """Tenant -> its references being processed."""
        self._turn: str | None = None
        """The tenant served last (round-robin)."""
        self._failures: dict[T, int] = {}
        self._timers: list[tuple[datetime, int, T]] = []
        self._seq = 0
        self._shut = False
        self.wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tier_of)

    def _is_dirty(self, ref: T) -> bool:
        return ref in self._tier_of

    def _list(self, ref: T, tier: int) -> None:
        self._tiers[tier].setdefault(self.tenant(ref), {})[ref] = None
        self._tier_of[ref] = tier

    def _unlist(self, ref: T) -> None:
        tier = self._tier_of.pop(ref)
        tenant = self.tenant(ref)
        refs = self._tiers[tier][tenant]
        del refs[ref]
        if not refs:
            del self._tiers[tier][tenant]

    def _mark(self, ref: T) -> None:
        tier = self._tier_of.get(ref)
        want = URGENT if self.urgent is not None and self.urgent(ref) else NORMAL
        if tier is not None and tier <= want:
            return  # already there or higher: it keeps its place
        if tier is not None:
            self._unlist(ref)
        self._list(ref, want)

    def add(self, ref: T) -> None:
        self._mark(ref)
        self.wake.set()

    def add_all(self, refs: Iterable[T]) -> None:
        for r in refs:
            self._mark(r)
        self.wake.set()

    def add_low(self, refs: Iterable[T]) -> None:
        """Mark ``refs`` dirty behind everything else (a resync): one already dirty keeps its place. One that the
        ``urgent`` classifier names goes ahead of all others, as :meth:`add` puts it: a replica that got its shards
        back marks every object at once, and a gate whose Pod ended while the shard was away (its event dropped:
        the replica did not own it) waited behind 10,000 tasks while the merge queue waited for it."""
        for r in refs:
            if self.urgent is not None and self.urgent(r):
                self._mark(r)
            elif not self._is_dirty(r):
                self._list(r, LOW)
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
            self._mark(ref)

    def take(self, limit: int | None = None) -> list[T]:
        """Dirty references that are not being processed (due timers included); they are now processing.
        Tenants take turns, but neither ``min_interval`` nor the tenant cap holds them back (the test driver's
        hand-out)."""
        return self._hand_out(limit, mind_interval=False)

    def _hand_out(self, limit: int | None, *, mind_interval: bool) -> list[T]:
        self._release_timers()
        now = self.clock() if mind_interval and self.min_interval else None
        cap = self.tenant_cap if mind_interval else None
        out: list[T] = []
        for tier in self._tiers:
            while limit is None or len(out) < limit:
                ref = self._next_of(tier, now, cap)
                if ref is None:
                    break
                self._start(ref, now)
                out.append(ref)
        if now is not None and len(self._cooldown) > 4096:  # forget those long past (references that never came back)
            self._cooldown = {r: t for r, t in self._cooldown.items() if t > now}
        return out

    def _next_of(self, tier: dict[str, dict[T, None]], now: datetime | None, cap: int | None) -> T | None:
        """The reference of ``tier`` to hand out next: the first ready one of the tenant whose turn it is
        (``core.lanes.next_tenant``); None when no tenant under ``cap`` has one ready."""
        ready: dict[str, T] = {}
        for tenant, refs in tier.items():
            ref = self._first_ready(refs, now)
            if ref is not None:
                ready[tenant] = ref
        spare = cap is not None and self.workers is not None and len(self._processing) < self.workers - 1
        chosen = lanes.next_tenant(ready, self._turn, self._in_flight, cap, spare=spare)
        if chosen is None:
            return None
        self._turn = chosen
        return ready[chosen]

    def _first_ready(self, refs: dict[T, None], now: datetime | None) -> T | None:
        """The first of ``refs`` not being processed and, with ``now``, not held back by ``min_interval``."""
        # no copy: a worker's take of one costs O(references being processed), not O(dirty)
        for ref in refs:
            if ref in self._processing:
                continue
            if now is not None and self._cooldown.get(ref, now) > now:
                continue
            return ref
        return None

    def _start(self, ref: T, now: datetime | None) -> None:
        self._unlist(ref)
        self._processing.add(ref)
        tenant = self.tenant(ref)
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        if now is not None:
            self._cooldown[ref] = now + self.min_interval
            if self.duty < 1:
                self._began[ref] = now

    def _stop(self, ref: T) -> None:
        self._processing.discard(ref)
        tenant = self.tenant(ref)
        left = self._in_flight.get(tenant, 0) - 1
        if left > 0:
            self._in_flight[tenant] = left
        else:
            self._in_flight.pop(tenant, None)

    def claim(self, ref: T) -> bool:
        """Process ``ref`` now, out of turn: False when it is being processed already (leave it to that).
        A dirty ``ref`` stays dirty: it is handed out again after :meth:`done`, as one added while processing.
        It counts toward its tenant's cap."""
        if ref in self._processing:
            return False
        self._processing.add(ref)
        tenant = self.tenant(ref)
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        return True

    def busy(self, ref: T) -> bool:
        """``ref`` is being processed (taken or claimed, not done yet)."""
        return ref in self._processing

    def done(self, ref: T, busy: float | None = None) -> None:
        """``ref`` was processed. ``busy``: the seconds its reconcile itself took (without carrying out its writes,
        which wait for the API server, not the event loop), for ``duty``; the time since it was handed out when not
        given."""
        if ref in self._processing:
            self._stop(ref)
        began = self._began.pop(ref, None)
        if began is not None:  # ``duty``: it waits (1/duty - 1) times as long as it took
            now = self.clock()
            took = timedelta(seconds=busy) if busy is not None else now - began
            self._cooldown[ref] = max(self._cooldown.get(ref, now), now + took * (1 / self.duty - 1))
        if self._is_dirty(ref) or (self.tenant_cap is not None and self._tier_of):
            self.wake.set()  # it, or another of its tenant's held back by the cap, may be handed out now

    def in_flight_of(self, tenant: str) -> int:
        """References of ``tenant`` being processed now."""
        return self._in_flight.get(tenant, 0)

    def next_due(self) -> datetime | None:
        return self._timers[0][0] if self._timers else None

    def _get_one(self) -> T | None:
        """One reference, minding ``min_interval`` (counted from when :meth:`get` last handed it out); None when
        none may be handed out now."""
        got = self._hand_out(1, mind_interval=True)
        return got[0] if got else None

    def _cooling(self) -> datetime | None:
        """The earliest time a dirty reference held back by ``min_interval`` may be handed out."""
        times = [t for r, t in self._cooldown.items() if self._is_dirty(r) and r not in self._processing]
        return min(times) if times else None

    def pending(self) -> int:
        """Dirty references plus timers."""
        return len(self) + len(self._timers)

    def in_flight(self) -> int:
        """References being processed now."""
        return len(self._processing)

    def shut_down(self) -> None:
        """Hand out nothing more: every :meth:`get`, waiting or to come, raises :class:`ShutDown` (the workers
        finish what they hold and stop)."""
        self._shut = True
        self.wake.set()

    async def get(self) -> T:
        """The next reference to process, once there is one (a dirty reference not being processed, or a timer
        that came due); it is processing until :meth:`done`. Any number of workers may wait at once: each
        reference goes to one of them. Raises :class:`ShutDown` once :meth:`shut_down` was called."""
        while True:
            if self._shut:
                raise ShutDown()
            got = self._get_one()
            if got is not None:
                if len(self) or self._timers:
                    self.wake.set()  # more for the other workers
                return got
            self.wake.clear()
            due = min((t for t in (self.next_due(), self._cooling() if self._cooldown else None) if t is not None),
                      default=None)
            timeout = None if due is None else max(0.0, (due - self.clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)


class Queues:
    """Every controller's work queue behind one facade: a reference goes to the queue of its kind
    (``ref[0]``). The reconcilers, the executor and the cache's observers enqueue through it without knowing
    which controller processes what. A reference of a kind no controller handles is dropped with a log line."""

    def __init__(self, queues: Mapping[str, WorkQueue[Ref]]) -> None:
        self.by_kind = dict(queues)

    def _queue(self, ref: Ref) -> WorkQueue[Ref] | None:
        q = self.by_kind.get(ref[0])
        if q is None:
            log.debug("no controller for %s: %s/%s not enqueued", *ref)
        return q

    def add(self, ref: Ref) -> None:
        q = self._queue(ref)
        if q is not None:
            q.add(ref)

    def _by_queue(self, refs: Iterable[Ref]) -> Iterator[tuple[WorkQueue[Ref], list[Ref]]]:
        groups: dict[str, list[Ref]] = defaultdict(list)
        for r in refs:
            groups[r[0]].append(r)
        for group in groups.values():
            q = self._queue(group[0])
            if q is not None:
                yield q, group

    def add_all(self, refs: Iterable[Ref]) -> None:
        for q, group in self._by_queue(refs):
            q.add_all(group)

    def add_low(self, refs: Iterable[Ref]) -> None:
        """Every reference behind its queue's others (``WorkQueue.add_low``): the resync."""
        for q, group in self._by_queue(refs):
            q.add_low(group)

    def add_at(self, ref: Ref, when: datetime) -> None:
        q = self._queue(ref)
        if q is not None:
            q.add_at(ref, when)

    def add_after(self, ref: Ref, seconds: float) -> None:
        q = self._queue(ref)
        if q is not None:
            q.add_after(ref, seconds)

    def retry(self, ref: Ref) -> float:
        return self.by_kind[ref[0]].retry(ref)

    def forget(self, ref: Ref) -> None:
        self.by_kind[ref[0]].forget(ref)

    def failures(self, ref: Ref) -> int:
        return self.by_kind[ref[0]].failures(ref)

    def claim(self, ref: Ref) -> bool:
        return self.by_kind[ref[0]].claim(ref)

    def busy(self, ref: Ref) -> bool:
        return self.by_kind[ref[0]].busy(ref)

    def done(self, ref: Ref, busy: float | None = None) -> None:
        self.by_kind[ref[0]].done(ref, busy)

    def pending(self) -> int:
        """Dirty references plus timers, over every queue."""
        return sum(q.pending() for q in self.by_kind.values())

    def next_due(self) -> datetime | None:
        dues = [d for d in (q.next_due() for q in self.by_kind.values()) if d is not None]
        return min(dues) if dues else None
