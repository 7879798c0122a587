"""One controller per kind, in controller-runtime's shape: a work queue of the kind's references and N workers that
each take a reference, reconcile it, have the executor carry out the actions, and hand it back in a ``finally``.

    watch event --> Manager.observe --> cache --> Queues.add_all --> this kind's WorkQueue
                                                                        |  (deduplicated; one reference is never
                                                                        v   processed by two workers at once)
                                               worker 1..N:  get --> reconcile --> executor.run --> forget/retry
                                                                                                 --> done (finally)

* A reconcile that raises (an API error, a fenced status write that lost with 409) is retried with the reference's
  exponential backoff: never dropped; a success resets it (controller-runtime's ``Forget``).
* :meth:`Controller.process` is the one path a reference takes: the workers of :meth:`run` call it, and so do the
  tests that drive the controllers by hand (``tests/driving.py``, with the queue's ``take`` and :func:`bounded`).
* A reconcile that runs past the controller's ``deadline`` (shorter than ``stall_seconds``; the manager's
  ``DEADLINES``) is cancelled and retried with backoff: what it waited on (a tenant's slow tracker, forge or git
  server, a lane another tenant holds) costs that object a retry, never the replica's health.
* :meth:`healthy` is False while a reconcile has run longer than ``stall_seconds`` (every API and git call of a
  reconcile is bounded, so such a reconcile is wedged): the liveness probe restarts the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from longshot import metrics
from longshot.controllers import executor as ex
from longshot.controllers import workqueue
from longshot.runtime import kube

log = logging.getLogger("longshot.controller")
T = TypeVar("T")
R = TypeVar("R")

SLOW_RECONCILE_SECONDS: Final = 5.0
"""A reconcile that takes this long is logged (with its kind and object): the first thing to know about a slow
operator."""

Ref = workqueue.Ref


class DeadlineExceeded(Exception):
    """A reconcile ran past its controller's ``deadline``: it was cancelled, and is retried with backoff."""


Reconcile = Callable[[Ref], Awaitable[list[ex.Action]]]


class Controller:
    def __init__(self, kind: str, reconcile: Reconcile, executor: ex.Executor, queue: workqueue.WorkQueue[Ref], *,
                 workers: int, stall_seconds: float, deadline: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic, after: Callable[[Ref], None] | None = None) -> None:
        self.kind = kind
        self.reconcile = reconcile
        self.executor = executor
        self.queue = queue
        self.workers = workers
        self.stall_seconds = stall_seconds
        self.deadline = deadline
        """Seconds a reconcile (reads and decision, not the executor's writes) may take before it is cancelled and
        retried with backoff (:class:`DeadlineExceeded`); None: no deadline. Shorter than ``stall_seconds``, so a
        reconcile waiting on a tenant's slow server fails that tenant's object, not the replica's health."""
        self.monotonic = monotonic
        self.after = after
        """Called after every reconcile, whatever its result (the manager wakes the dispatcher)."""
        self.in_flight: dict[Ref, float] = {}
        """References being reconciled, with when their reconcile started (monotonic)."""
        self.reconciles = 0
        self.failures = 0

    async def process(self, ref: Ref) -> None:
        """Reconcile ``ref`` and carry out its actions; retried with backoff when anything raises. The caller
        took ``ref`` from the queue: it is handed back here, whatever happens."""
        kind, ns, name = ref
        started = time.monotonic()  # the real clock, not the injected one: a duration for the metrics
        self.in_flight[ref] = self.monotonic()
        decided: float | None = None
        try:
            actions = await self._decide(ref)
            decided = time.monotonic()
            await self.executor.run(actions)
            self.queue.forget(ref)
            self.reconciles += 1
            metrics.observe_reconcile(kind, "Success", time.monotonic() - started)
        except Exception as e:
            self.failures += 1
            delay = self.queue.retry(ref)
            metrics.observe_reconcile(kind, "Conflict" if isinstance(e, kube.Conflict) else "Error",
                                      time.monotonic() - started)
            if isinstance(e, kube.Conflict):
                log.info("%s %s/%s changed meanwhile; reconciling again in %.2fs", kind, ns, name, delay)
            else:
                log.warning("reconcile of %s %s/%s failed (%s: %s); retrying in %.2fs", kind, ns, name,
                            type(e).__name__, e, delay,
                            exc_info=not (kube.is_api_error(e) or isinstance(e, DeadlineExceeded)))
        finally:
            took = self.monotonic() - self.in_flight.pop(ref, self.monotonic())
            if took >= SLOW_RECONCILE_SECONDS:
                log.warning("a reconcile of %s %s/%s took %.1fs", kind, ns, name, took)
            self.queue.done(ref, (decided if decided is not None else time.monotonic()) - started)
            if self.after is not None:
                self.after(ref)

    async def _decide(self, ref: Ref) -> list[ex.Action]:
        """``reconcile(ref)``, cancelled past ``deadline`` (a :class:`DeadlineExceeded`)."""
        if self.deadline is None:
            return await self.reconcile(ref)
        limit = asyncio.timeout(self.deadline)
        try:
            async with limit:
                return await self.reconcile(ref)
        except TimeoutError:
            if not limit.expired():
                raise  # the reconcile's own (a call it made timed out)
            raise DeadlineExceeded(f"it ran past its deadline of {self.deadline:g}s") from None

    # --- driving it ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The controller's workers, until its queue is shut down (each finishes the reconcile it holds) or the run
        is cancelled: each waits for a reference and processes it."""
        workers = [asyncio.create_task(self._worker(), name=f"{self.kind} worker {i}") for i in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            try:
                ref = await self.queue.get()
            except workqueue.ShutDown:
                return
            await self.process(ref)  # handles its own errors; ``done`` in its ``finally``

    # --- health --------------------------------------------------------------------------------------

    def longest_running(self) -> float:
        """Seconds the oldest reconcile in flight has run (0 when none)."""
        if not self.in_flight:
            return 0.0
        return max(0.0, self.monotonic() - min(self.in_flight.values()))

    def healthy(self) -> bool:
        return self.longest_running() <= self.stall_seconds


async def bounded(items: Sequence[T], fn: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``fn`` over ``items``, at most ``limit`` at a time, the results in the items' order.

    ``limit`` workers take the next item in turn: a resync of 10,000 tasks holds ``limit`` coroutines, not an
    asyncio Task (with its coroutine frame) per item all at once, as ``asyncio.gather`` over every item did. ``fn``
    is expected to handle its own errors; one that raises is re-raised once every item has been tried."""
    results: list[R | None] = [None] * len(items)
    todo = iter(range(len(items)))
    failed: list[BaseException] = []

    async def worker() -> None:
        for i in todo:
            try:
                results[i] = await fn(items[i])
            except Exception as e:
                failed.append(e)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    if failed:
        raise failed[0]
    return results  # type: ignore[return-value]  # every slot is filled when nothing failed
