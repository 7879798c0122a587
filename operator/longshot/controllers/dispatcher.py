"""The dispatch controller: a controller with a single key. Whatever may free a worker slot or ready a task (an agent
Pod that ended, a reconcile that wrote a status, the resync, the killswitch, a change of shards) enqueues that key;
the work queue's de-duplication turns a burst of such events into one plan (``dispatch.plan``: which pending tasks
start now), and its one worker admits the chosen tasks.

* A plan that would read what the last one read (the cache's version, the killswitch) is not made: it would choose
  the same tasks. An admission that failed, or a chosen task that could not be claimed, plans again next time.
* Admission, for at most ``MAX_ADMISSIONS`` chosen tasks at once (the rest at the next dispatch, so that a gate
  task made meanwhile waits for 64 Pods, not 450): first every Pod (a task's dispatch latency ends when its Pod exists),
  then the status writes and Events, outside the plan's lock. A chosen task whose reconcile is in flight is not
  admitted beside it: the task's reference is claimed in the task controller's queue until its admission is
  written, and one that cannot be claimed is admitted by the next plan. Nor is one whose owner task's reconcile is
  in flight (a best-of-N candidate or judge: the reconcile that made it still writes the round's gates its input is
  read from). A build's tasks start only once the operator has decided on the build's current spec
  (``dispatch.observed``): a spec that fails its configuration check stops the build before any Pod.
* A dispatch that raises is retried with the key's backoff, as any reconcile; ``FAILURES_UNHEALTHY`` in a row make
  :meth:`healthy` False.
* Between two plans the worker waits at least as long as the last plan took (its cost grows with the tasks: ~0.1 s
  at 10,000), so dispatch never holds more than half of the event loop; a new gate, review, sweep or final task
  (:meth:`hurry`: the merge queue or a build's finalization waits for its end) cuts that wait short: every batch of
  the merge queue waits for its gate's Pod.
* A plan that found everything full (``Plan.full``: the operator-wide limit, or every build at its limit,
  suspended, halted or out of budget) is not made again until something may free a slot (``Cache.freeing``): a
  10,000-task plan taken in while the build's slots are full costs no plan per new task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Final

from longshot import metrics
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import dispatch, warmpools, workqueue
from longshot.controllers import executor as ex
from longshot.controllers import tasks as tasksc
from longshot.controllers.controller import bounded
from longshot.controllers.dispatch import Plan as DispatchPlan
from longshot.runtime import kube

log = logging.getLogger("longshot.dispatch")

KEY: Final = ("Dispatch", "", "dispatch")
"""The controller's one reference."""
BATCH_SECONDS: Final = 0.02
"""Let a burst of events land before a plan."""
SLOW_DISPATCH_SECONDS: Final = 1.0
"""An admission whose Pod was created this long after its task could start is logged (with why it was dispatched)."""
CONCURRENCY: Final = 32
"""Admissions' API calls in flight."""
MAX_ADMISSIONS: Final = 64
"""Most tasks one dispatch admits (the first of the plan's order: priority within a build, fairness across them);
the rest are the next dispatch's, at once. Without a bound, a gate task made while a large round's Pods are being
created (priority 9) waits for that whole round and the next plan, one gate at a time (docs/benchmarks.md)."""
LINE_SHOWN: Final = 16
"""The tasks at the head of the line for capacity whose ``Admitted`` condition says their place
(``Context.admission_line``): a condition write per task is an API write, and the line moves at every admission."""
LINE_WRITE_SECONDS: Final = 10.0
"""A task's place in line is written again at most this often (the line moves at every admission)."""
FAILURES_UNHEALTHY: Final = 10
STALL_SECONDS: Final = 60.0


class Dispatcher:
    def __init__(self, ctx: ctxmod.Context, tasks: tasksc.TaskReconciler, executor: ex.Executor,
                 task_queue: workqueue.WorkQueue[workqueue.Ref], *, clock: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self.executor = executor
        self.task_queue = task_queue
        """The task controller's queue: a task being admitted is claimed there (never reconciled at once)."""
        self.clock = clock
        self.monotonic = monotonic
        self.queue: workqueue.WorkQueue[workqueue.Ref] = workqueue.WorkQueue(clock, base_delay=0.5, max_delay=30.0)
        self.why: list[str] = []
        """Why the key was enqueued since the last plan (said in the log of a slow admission)."""
        self.poked: datetime | None = None
        """When the key was first enqueued since the last plan: a ready task the last plan held back may start from
        then (its dispatch latency counts from there, not from when it became ready)."""
        self.slot_freed: datetime | None = None
        """When an agent Pod was last seen to end (a worker slot came free): a held task's dispatch latency counts
        from then when that is later than when it became ready."""
        self.planned: tuple[int, bool] | None = None
        """What the last plan read (the cache's version, the killswitch); None: the next dispatch plans."""
        self.full: tuple[int, bool] | None = None
        """The last plan found everything full: ``(Cache.freeing, killswitch)`` then; None: it did not."""
        self.plan_seconds = 0.0
        self.asked: datetime | None = None
        """When the dispatch in flight was first asked for (its first poke), for the log of a slow admission."""
        self.failures = 0
        """Dispatches in a row that raised."""
        self.started: float | None = None
        """When the dispatch in flight started (monotonic); None: none is."""
        self.hurried = asyncio.Event()
        """Set when a delivery task was created since the last plan began, or when the last plan could not claim
        one (its first reconcile was in flight): the wait after a plan is cut short."""
        self.admissions = asyncio.Semaphore(CONCURRENCY)
        self.readiness = dispatch.Readiness()
        """When ready tasks became ready and which the last plan held back: read by dispatch alone."""
        self.said: dict[cachemod.Key, tuple[tuple[str, str], datetime]] = {}
        """The ``Admitted`` condition each task at the head of the line was last asked to show, and when."""
        self.mode: tuple[str, str] | None = None
        """The mode admission by capacity ran in at the last plan, and why (logged when it changes)."""

    # --- input ---------------------------------------------------------------------------------------

    def poke(self, why: str) -> None:
        """Something that may change the plan happened: dispatch soon (bursts coalesce)."""
        if len(self.why) < 8 and why not in self.why:
            self.why.append(why)
        if self.poked is None:
            self.poked = self.clock()
        self.queue.add(KEY)

    def hurry(self, why: str) -> None:
        """A task the merge queue or a finalization waits for was created: plan without the wait after the last."""
        self.hurried.set()
        self.poke(why)

    def pod_ended(self) -> None:
        self.slot_freed = self.clock()
        self.poke("a Pod ended")

    def replan(self, why: str) -> None:
        """Plan at the next dispatch even if nothing the last plan read has changed (shards moved, the resync)."""
        self.planned = None
        self.full = None
        self.poke(why)

    # --- the controller ------------------------------------------------------------------------------

    async def run(self) -> None:
        """The one worker, until the queue is shut down (it finishes the dispatch in flight) or it is cancelled."""
        while True:
            try:
                await self.queue.get()
            except workqueue.ShutDown:
                return
            await asyncio.sleep(BATCH_SECONDS)  # the rest of the burst lands
            self.hurried.clear()  # the plan reads what was created until now
            await self.process()
            if not self.hurried.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hurried.wait(), self.plan_seconds)

    async def process(self) -> None:
        """One dispatch; the key was taken from the queue and is handed back here, whatever happens."""
        why, self.why = ", ".join(self.why) or "resync", []
        poked, self.poked = self.poked, None
        self.asked = poked
        if poked is not None:
            since = self.readiness.ready_since
            for key in self.readiness.held:  # held back by the last plan: may start from when this dispatch was asked
                if key in since:
                    since[key] = max(since[key], poked)
        self.started = self.monotonic()
        try:
            await self.dispatch(why)
            await self._pools()  # also when the plan was skipped (full, or nothing read changed): demand may have
            self.queue.forget(KEY)
            self.failures = 0
        except Exception:
            self.failures += 1
            self.planned = self.full = None
            delay = self.queue.retry(KEY)
            log.exception("dispatch failed; dispatching again in %.2fs", delay)
        finally:
            self.started = None
            self.queue.done(KEY)

    def healthy(self) -> bool:
        if self.failures >= FAILURES_UNHEALTHY:
            return False
        return self.started is None or self.monotonic() - self.started <= STALL_SECONDS

    # --- one dispatch --------------------------------------------------------------------------------

    async def dispatch(self, why: str = "") -> None:
        reads = (self.ctx.cache.version, self.ctx.killswitch)
        if reads == self.planned:
            return  # nothing the last plan read has changed: it would choose the same
        if self.full is not None and self.full == (self.ctx.cache.freeing, self.ctx.killswitch):
            return  # everything was full, and nothing that could free a slot has happened since
        self.planned = reads
        freeing = self.ctx.cache.freeing
        held, freed = self.readiness.held, self.slot_freed  # before this plan (which sets them anew)
        began = self.monotonic()
        chosen = dispatch.plan(self.ctx, self.readiness)
        self.plan_seconds = self.monotonic() - began
        self._line(chosen)
        self.full = (freeing, reads[1]) if chosen.full and not chosen.admit else None
        for b in chosen.budget_blocked:
            ns, name = b.split("/", 1)
            self.ctx.queue.add_all([("BuildRequest", ns, name)])
        # their DispatchFailed condition appeared, changed or cleared
        self.ctx.queue.add_all([("BuildRequest", ns, name) for ns, name in chosen.failed])
        # a chosen task whose reconcile, or its owner task's, is in flight is admitted by the dispatch after it, not
        # beside it (the end of every reconcile dispatches again)
        admit = chosen.admit[:MAX_ADMISSIONS]
        if len(admit) < len(chosen.admit):  # the rest at the next dispatch, which comes at once
            self.planned = None
            self.poke("the last plan chose more than one dispatch admits")
        claimed = [k for k in admit if not self._owner_busy(k) and self.task_queue.claim(("AgentTask", *k))]
        try:
            if len(claimed) < len(admit):
                self.planned = None  # the end of that task's reconcile dispatches again (``Manager._reconciled``)
                if any(self.ctx.cache.delivery_task(k) for k in admit if k not in claimed):
                    self.hurried.set()  # and at once for a gate (a new task's first reconcile is short)
            if not claimed:
                return
            rests = await self._create_pods(claimed, held, freed, why)
            # then their status writes and Events: the Pods are in the cache, so the next plan counts their tasks
            # as running (fenced as ever: a write that loses is retried, and the retry adopts the Pod created above)
            await bounded([(k, r) for k, r in zip(claimed, rests, strict=True) if r], lambda kr: self._finish(*kr),
                          CONCURRENCY)
        finally:
            for k in claimed:
                self.task_queue.done(("AgentTask", *k))

    async def _pools(self) -> None:
        """The warm pools after the admissions (``controllers.warmpools``): a failure is logged, and the next
        dispatch plans them again."""
        try:
            await warmpools.maintain(self.ctx)
        except Exception:
            log.exception("warm pools: maintenance failed; trying again at the next dispatch")

    def _line(self, plan: DispatchPlan) -> None:
        """Admission by capacity's part of a plan: the mode (logged when it changes), the gauges, and the
        ``Admitted`` condition of the tasks at the head of the line (their task reconciles write it; at most every
        ``LINE_WRITE_SECONDS`` per task)."""
        cap = plan.capacity
        if cap is not None:
            self.ctx.capacity_counted = cap.mode == "explicit" or (cap.mode == "auto" and cap.free is not None)
            if (cap.mode, cap.why) != self.mode:
                if cap.mode == "fallback":
                    log.warning("admission by capacity: %s; admitting by the numeric limits alone (workers.max, "
                                "LONGSHOT_MAX_WORKERS) until Nodes can be counted", cap.why)
                elif self.mode is not None or cap.mode != "off":
                    log.info("admission by capacity: %s%s", cap.mode, f" ({cap.why})" if cap.why else "")
                self.mode = (cap.mode, cap.why)
            held = len(self.readiness.held) if plan.waiting else 0
            metrics.set_admission(cap.mode, held, cap.free.cpu if cap.free is not None else None)
        line: dict[cachemod.Key, tuple[str, str]] = {}
        for w in plan.waiting[:LINE_SHOWN]:
            key = (w.task.build.split("/", 1)[0], w.task.name)
            line[key] = ("WaitingForCapacity",
                         f"waiting for capacity: place {w.position} in line ({len(self.readiness.held)} ready tasks "
                         f"held); namespace {w.tenant} runs {w.running} agent(s), its share {w.share:.2f} "
                         f"(weight {w.weight:g})")
        for key in plan.unfit:
            line[key] = ("InsufficientCapacity", "its Pod requests more than any node agent Pods may use offers, or "
                                                 "more than its namespace's limit: lower its resources or add nodes")
        for key, reason, message in plan.tenant_held:
            line[key] = (reason, message)
        self.ctx.admission_line = line
        now = self.clock()
        ask: list[cachemod.Ref] = []
        for key, want in line.items():
            said = self.said.get(key)
            if said is None or (said[0] != want and (now - said[1]).total_seconds() >= LINE_WRITE_SECONDS):
                self.said[key] = (want, now)
                ask.append(("AgentTask", *key))
        for key in [k for k in self.said if k not in line]:  # left the line: its condition is cleared
            del self.said[key]
            ask.append(("AgentTask", *key))
        if ask:
            self.ctx.queue.add_all(ask)

    def _owner_busy(self, key: cachemod.Key) -> bool:
        """The task is owned by another task (a best-of-N candidate or judge) whose reconcile is in flight: that
        reconcile made it and is still writing what its task input is read from (the round's gates)."""
        task = self.ctx.cache.tasks.get(key)
        if task is None:
            return False
        return any(o.kind == "AgentTask" and self.task_queue.busy(("AgentTask", key[0], o.name))
                   for o in task.metadata.owner_references)

    async def _create_pods(self, keys: list[cachemod.Key], held: set[cachemod.Key], freed: datetime | None,
                           why: str) -> list[list[ex.Action] | None]:
        """Every chosen task's Pod, concurrently. Returns each admission's remaining actions (None: it failed,
        and is retried)."""
        slow: list[float] = []
        began = self.monotonic()

        async def create(key: cachemod.Key) -> list[ex.Action] | None:
            since = self.readiness.ready_since.get(key)
            if since is not None and key in held and freed is not None and freed > since:
                since = freed  # held for a slot that came free since (a Pod ended): it could start from then
            async with self.admissions:
                try:
                    pods, rest = ex.split_pod_creates(await self.tasks.admit(key))
                    await self.executor.run(pods)
                except Exception as e:
                    self._admission_failed(key, e)
                    return None
            self.readiness.ready_since.pop(key, None)  # admitted: its latency is observed now
            if pods and since is not None:
                latency = max(0.0, (self.clock() - since).total_seconds())
                metrics.DISPATCH_LATENCY.observe(latency)
                if latency >= SLOW_DISPATCH_SECONDS:
                    slow.append(latency)
            return rest

        rests = await bounded(keys, create, CONCURRENCY)
        if slow:  # where the time went, for longshot_dispatch_latency_seconds' tail: before the dispatch, or in it
            asked = (self.clock() - self.asked).total_seconds() if self.asked is not None else 0.0
            log.info("dispatch (%s): %d of %d Pods created %.1f-%.1fs after their task could start; the dispatch "
                     "was asked for %.1fs before, its plan took %.2fs, the creates %.1fs", why, len(slow), len(keys),
                     min(slow), max(slow), asked, self.plan_seconds, self.monotonic() - began)
        return rests

    async def _finish(self, key: cachemod.Key, rest: list[ex.Action]) -> None:
        async with self.admissions:
            try:
                await self.executor.run(rest)
            except Exception as e:
                self._admission_failed(key, e)

    def _admission_failed(self, key: cachemod.Key, e: Exception) -> None:
        self.planned = self.full = None  # the task is still a candidate: its retried reconcile dispatches again
        ref: cachemod.Ref = ("AgentTask", *key)
        delay = self.task_queue.retry(ref)
        if isinstance(e, kube.Conflict):
            log.info("admission of %s/%s: the task changed meanwhile; reconciling it in %.2fs", key[0], key[1], delay)
        else:
            log.warning("admission of %s/%s failed (%s: %s); retrying in %.2fs", key[0], key[1], type(e).__name__, e,
                        delay)
