"""The manager: one loop that takes references from the work queue, runs their reconciler, has the executor
carry out the actions, and dispatches ready tasks.

* kopf's event handlers only call :meth:`Manager.observe` (the cache parses the object and says which
  references it concerns).
* Each step takes every due reference from the work queue and reconciles them, kind by kind (tasks, MergeJobs,
  merge queues, builds), each kind concurrently. The merge queues' reconciles do git work that takes seconds
  (fetch, speculative merges, the secret scan, push): they run detached (``DETACHED``), so the step goes on to
  the builds and to dispatch while they work, as controller-runtime gives each controller its own workers; the
  work queue still never runs one reference twice at once. A reconcile that raises (an API error, a fenced status write
  that lost to a newer version) is retried with per-reference exponential backoff: never dropped. A success
  resets the backoff.
* A worker slot is filled as soon as its Pod's end is seen: the dispatcher (``_dispatcher``) runs beside the
  step, not after it, since a step's reconciles take seconds on a busy node and every event waits for them (the
  tail of the dispatch latency). Every dispatch (the dispatcher's and the step's after its reconciles) runs under
  one lock, so no two plans count the same free slot, and an admitted task's reference is claimed in the work
  queue until its admission is written: a task is never reconciled and admitted at once.
* A periodic resync marks everything (``RESYNC_SECONDS``), so nothing depends on an event arriving.
* The killswitch ConfigMap is polled; leadership (``controllers/leadership.py``) says which shards this replica
  acts on, and a change marks everything again.
* A step hands back every reference it took, whatever raises (a reference it had not reconciled yet is dirty
  again), so a bug outside a reconcile wedges nothing.
* ``healthy()`` is False when the loop has not turned for ``STALL_SECONDS``, its last ``STEP_FAILURES_UNHEALTHY``
  steps raised, a detached reconcile has run for ``DETACHED_STALL_SECONDS``, or the replica lost its footing: the
  liveness probe restarts a wedged operator.

No module imports this one but the entry points: reconcilers get what they need through the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import kubernetes

from longshot import config, metrics
from longshot.api import timeutil
from longshot.controllers import builds as buildsc
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import dispatch, leadership, workqueue
from longshot.controllers import executor as ex
from longshot.controllers import mergejobs as mjc
from longshot.controllers import mergequeue as mqc
from longshot.controllers import tasks as tasksc
from longshot.core import builds
from longshot.core import mergejobs as mj
from longshot.net import guard as gd
from longshot.runtime import kube, netpol, preflight

log = logging.getLogger("longshot.manager")
T = TypeVar("T")
R = TypeVar("R")

RESYNC_SECONDS: Final = 60.0
SLOW_STEP_SECONDS: Final = 5.0
"""A step that takes this long is logged with what it spent its time on (reconciles by kind, dispatch)."""
KILLSWITCH_POLL_SECONDS: Final = 2.0
STALL_SECONDS: Final = 60.0
SLOW_DISPATCH_SECONDS: Final = 1.0
"""An admission whose Pod was created this long after its task could start is logged (with the dispatch's place)."""
CONCURRENCY: Final = 32
THREADS: Final = 64
"""Threads of the default executor (``startup.py``): every reconcile and admission in flight may wait on the API,
plus git work of the merge queues and the killswitch poll."""
BATCH_SECONDS: Final = 0.02
"""Let a burst of watch events land before a step."""
ORDER: Final = ("AgentTask", "MergeJob", "Queue", "BuildRequest")
DETACHED: Final = frozenset({"Queue"})
"""Kinds whose reconciles the step does not wait for (git work): dispatch is not held up by a merge."""
STEP_FAILURES_UNHEALTHY: Final = 10
"""Steps in a row that raised (each followed by half a second's pause in :meth:`Manager.run`): the loop turns but
does nothing useful, and :meth:`Manager.healthy` says so."""
DETACHED_STALL_SECONDS: Final = 300.0
"""A detached reconcile running longer than this is wedged (every git call of the merge queue is bounded)."""


class Manager:
    def __init__(self, k: kube.KubeAPI, settings: config.Settings, *,
                 client: kubernetes.client.ApiClient | None = None,
                 clock: Callable[[], datetime] = timeutil.utcnow, rand: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.cache = cachemod.Cache()
        self.queue: workqueue.WorkQueue[cachemod.Ref] = workqueue.WorkQueue(clock)
        self.ctx = ctxmod.Context(cache=self.cache, kube=k, settings=settings, queue=self.queue, clock=clock, rand=rand)
        self.ctx.egress = gd.for_policy(settings.egress_policy())
        self.ctx.preflight = functools.partial(preflight.check, guard=self.ctx.egress)
        self.executor = ex.Executor(k, self.cache, self.queue, clock)
        self.tasks = tasksc.TaskReconciler(self.ctx)
        self.builds = buildsc.BuildReconciler(self.ctx)
        self.jobs = mjc.MergeJobReconciler(self.ctx)
        self.ctx.workspaces = mqc.Workspaces(self.ctx)  # shared: merge queue, roadmap intake, best-of-N gates
        self.queues = mqc.QueueReconciler(self.ctx, self.ctx.workspaces)
        self.reconcilers: Mapping[str, Callable[[str, str], Awaitable[list[ex.Action]]]] = {
            "AgentTask": lambda ns, n: self.tasks.reconcile((ns, n)),
            "BuildRequest": lambda ns, n: self.builds.reconcile((ns, n)),
            "MergeJob": lambda ns, n: self.jobs.reconcile((ns, n)),
            "Queue": lambda ns, n: self.queues.reconcile(n),
        }
        self.leadership: leadership.Leadership | None = None
        if client is not None:
            self.leadership = leadership.Leadership(client, settings, shards=self.cache.shards,
                                                    on_change=self._leadership_changed, clock=clock)
            self.ctx.owns = self.leadership.holds
            if settings.network_policy:
                self.ctx.network_policy = lambda namespace: netpol.ensure(client, namespace, settings)
        self.sem = asyncio.Semaphore(CONCURRENCY)
        self.admissions = asyncio.Semaphore(CONCURRENCY)
        """Admissions' API calls in flight: their own, so a step's reconciles never hold up the dispatcher."""
        self.heartbeat = monotonic()
        self.steps = 0
        self.slot_freed: datetime | None = None
        """When an agent Pod was last seen to end (a worker slot came free): a held task's dispatch latency counts
        from then when that is later than the start of its step."""
        self.slot_wake = asyncio.Event()
        """Set when an agent Pod is seen to end: the dispatcher (or the next step, whichever comes first) fills
        the slot."""
        self._planned: tuple[int, bool] | None = None
        """What the last plan read (the cache's version, the killswitch): a dispatch that would read the same makes
        no plan, since it would choose the same tasks. None: the next dispatch plans (this replica's shards moved,
        the resync, or a chosen task was not admitted: its claim or its admission failed)."""
        self.plan_seconds = 0.0
        """How long the last dispatch's plan took (``dispatch.plan`` reads every task)."""
        self._dispatching = asyncio.Lock()
        """One dispatch at a time: its plan counts the Pods the one before it created (they are in the cache)."""
        self.reconciles = 0
        self.failures = 0
        self.step_failures = 0
        """Steps in a row that raised (reset by one that did not)."""
        self._stopping = False
        self._next_resync = 0.0
        self._next_killswitch = 0.0
        self._detached: dict[asyncio.Task[None], float] = {}
        """Detached reconciles in flight, with when they started (monotonic)."""

    # --- input -------------------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        if kind == "Pod" and _ended(body):
            meta = body.get("metadata") or {}
            before = self.cache.pods.get((str(meta.get("namespace", "")), str(meta.get("name", ""))))
            if before is None or not before.ended:
                self.slot_freed = self.clock()  # a worker slot came free now (dispatch.slot_freed)
                self.slot_wake.set()
        refs = self.cache.observe(kind, event_type, body)
        for r in refs:
            if r[0] == "BuildRequest":
                self.ctx.touched((r[1], r[2]))
                build = self.cache.builds.get((r[1], r[2]))
                if self.leadership is not None and build is not None and not self.leadership.knows(
                        self.cache.shard_of(build)):
                    self.leadership.poke()  # a new repository: its shard is taken now, not at the next poll
        self.queue.add_all(refs)

    def _leadership_changed(self) -> None:
        self._planned = None
        self.queue.add_all(self.cache.all_refs())

    # --- the loop ----------------------------------------------------------------------------------

    def healthy(self) -> bool:
        now = self.monotonic()
        if now - self.heartbeat > STALL_SECONDS or self.step_failures >= STEP_FAILURES_UNHEALTHY:
            return False
        if any(now - started > DETACHED_STALL_SECONDS for started in self._detached.values()):
            return False
        return self.leadership is None or self.leadership.healthy()

    async def run(self) -> None:
        log.info("manager started as %s (operator-wide limit %d workers)", self.settings.identity,
                 self.settings.max_workers)
        lead = asyncio.create_task(self.leadership.run(), name="leadership") if self.leadership else None
        dispatcher = asyncio.create_task(self._dispatcher(), name="dispatcher")
        try:
            while not self._stopping:
                await self._wait()
                if self._stopping:
                    break
                try:
                    await self.step()
                except Exception:  # a bug in a step must not stop the loop: the step handed back its references
                    log.exception("manager step failed")
                    await asyncio.sleep(0.5)
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await dispatcher
            for t in list(self._detached):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*self._detached, return_exceptions=True)
            if lead is not None:
                lead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lead

    async def _wait(self) -> None:
        timeout = KILLSWITCH_POLL_SECONDS
        due = self.queue.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self.clock()).total_seconds()))
        try:
            await asyncio.wait_for(self.queue.wake.wait(), timeout=timeout)
            await asyncio.sleep(BATCH_SECONDS)
        except TimeoutError:
            pass
        self.queue.wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self.queue.wake.set()

    async def _dispatcher(self) -> None:
        """Fill the slots of agent Pods that ended, at once, whatever the step is doing meanwhile."""
        while True:
            await self.slot_wake.wait()
            # the ends of a burst: one plan for all of them; and at least as long as the last plan took (its cost
            # grows with the tasks: ~0.1 s at 10,000), so the dispatcher never holds more than half of the loop
            await asyncio.sleep(max(BATCH_SECONDS, self.plan_seconds))
            try:
                await self._fill_freed_slots()
            except Exception:  # a bug must not stop the dispatcher; the step's dispatches still run
                log.exception("dispatch failed")
                await asyncio.sleep(0.5)

    async def _fill_freed_slots(self) -> None:
        if self.slot_wake.is_set():
            self.slot_wake.clear()
            await self._dispatch("a Pod ended")

    async def step(self) -> None:
        """One turn of the loop. A step that raises (a bug outside any reconcile: the dispatch, the killswitch
        poll) has handed back every reference it took (:meth:`_step`); ``STEP_FAILURES_UNHEALTHY`` of them in a
        row make :meth:`healthy` False, and one step that ends well makes it True again."""
        try:
            await self._step()
        except Exception:
            self.step_failures += 1
            raise
        self.step_failures = 0

    async def _step(self) -> None:
        self.heartbeat = mark = self.monotonic()
        self.steps += 1
        spent: list[str] = []  # what the step spent its time on, said when it was slow

        def lap(what: str) -> None:
            nonlocal mark
            t = self.monotonic()
            spent.append(f"{what} {t - mark:.1f}s")
            mark = t

        # a ready task held back by the last dispatch may start now (a slot came free): its dispatch latency
        # counts from here, not from when it became ready
        started = self.clock()
        for key in self.ctx.held:
            if key in self.ctx.ready_since:
                self.ctx.ready_since[key] = started
        now = self.monotonic()
        if now >= self._next_killswitch:
            self._next_killswitch = now + KILLSWITCH_POLL_SECONDS
            await self._poll_killswitch()
        if now >= self._next_resync:
            self._next_resync = now + RESYNC_SECONDS
            self._planned = None
            self.queue.add_all(self.cache.all_refs())
        refs = self.queue.take()
        handed: set[cachemod.Ref] = set()
        """The references given to ``_process`` (which calls ``done`` on each, in its own ``finally``)."""
        try:
            lap("killswitch poll and resync")
            if self.slot_wake.is_set():
                # a Pod ended and the dispatcher has not filled its slot yet (``dispatch.slot_freed``): the next
                # task's Pod is created before this step's task reconciles (the ended one's status write among them)
                await self._fill_freed_slots()
                lap("dispatch")
            for kind in ORDER:
                group = [r for r in refs if r[0] == kind]
                handed.update(group)
                if group and kind in DETACHED:
                    self._detach(group)
                elif group:
                    await bounded(group, self._process, CONCURRENCY)
                    lap(f"{len(group)} {kind}")
                if kind == "AgentTask":
                    # the slots the tasks that just ended freed are filled now, not after the merge jobs' and the
                    # builds' reconciles of this step (status writes of every build: seconds on a busy node)
                    await self._dispatch("after the tasks")
                    lap("dispatch")
        finally:
            # every reference taken is handed back, whatever raised: one never reconciled is dirty again (the next
            # step takes it), so none stays "processing" for ever (controller-runtime's ``done`` in a ``finally``)
            for r in refs:
                if r not in handed:
                    if r[0] in ORDER:
                        self.queue.add(r)
                    self.queue.done(r)
        await self._dispatch("end of step")
        lap("dispatch")
        self._gauges()
        took = self.monotonic() - self.heartbeat
        if took >= SLOW_STEP_SECONDS:
            # every event waits for the step to end: a slow one is the first thing to know about a slow operator
            log.warning("a manager step took %.1fs (%s)", took, ", ".join(spent))

    def _detach(self, refs: list[cachemod.Ref]) -> None:
        for r in refs:
            task = asyncio.create_task(self._process(r), name=f"reconcile {r[0]} {r[1]}/{r[2]}")
            self._detached[task] = self.monotonic()
            task.add_done_callback(self._detached_done)

    def _detached_done(self, task: asyncio.Task[None]) -> None:
        self._detached.pop(task, None)
        self.queue.wake.set()  # what it wrote may make tasks ready, and its own reference may be dirty again

    async def settle(self) -> None:
        """Wait for the detached reconciles in flight (tests and shutdown)."""
        while self._detached:
            await asyncio.gather(*list(self._detached), return_exceptions=True)

    async def _process(self, ref: cachemod.Ref) -> None:
        kind, ns, name = ref
        async with self.sem:
            started = time.monotonic()  # the real clock, not the injected one: a duration for the metrics
            try:
                actions = await self.reconcilers[kind](ns, name)
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
                                type(e).__name__, e, delay, exc_info=not isinstance(e, kubernetes.client.ApiException))
            finally:
                self.queue.done(ref)

    async def _dispatch(self, where: str = "") -> None:
        claimed: list[cachemod.Key] = []
        try:
            async with self._dispatching:
                reads = (self.cache.version, self.ctx.killswitch)
                if reads == self._planned:
                    return  # nothing the last plan read has changed: it would choose the same
                self._planned = reads
                held, freed = self.ctx.held, self.slot_freed  # before this plan (which sets ctx.held anew)
                began = self.monotonic()
                chosen = dispatch.plan(self.ctx)
                self.plan_seconds = self.monotonic() - began
                for b in chosen.budget_blocked:
                    ns, name = b.split("/", 1)
                    self.queue.add(("BuildRequest", ns, name))
                for ns, name in chosen.failed:  # its DispatchFailed condition appeared, changed or cleared
                    self.queue.add(("BuildRequest", ns, name))
                # a chosen task whose reconcile is in flight is admitted by the dispatch after it, not beside it
                claimed = [k for k in chosen.admit if self.queue.claim(("AgentTask", *k))]
                if len(claimed) < len(chosen.admit):
                    self._planned = None
                if not claimed:
                    return
                rests = await self._create_pods(claimed, held, freed, where)
            # 2. then their status writes and Events, outside the lock: the Pods are in the cache, so the next
            # plan counts their tasks as running (fenced as ever: a write that loses is retried, and the retry
            # adopts the Pod created above)
            await bounded([(k, r) for k, r in zip(claimed, rests, strict=True) if r], lambda kr: self._finish(*kr),
                          CONCURRENCY)
        finally:
            for k in claimed:
                self.queue.done(("AgentTask", *k))
        self.queue.wake.set()  # more may be admissible now that counts changed

    async def _create_pods(self, keys: list[cachemod.Key], held: set[cachemod.Key], freed: datetime | None,
                           where: str) -> list[list[ex.Action] | None]:
        """1. every chosen task's Pod, concurrently: a task's dispatch latency ends when its Pod exists. Returns
        each admission's remaining actions (None: it failed, and is retried)."""
        slow: list[float] = []
        began = self.monotonic()

        async def create(key: cachemod.Key) -> list[ex.Action] | None:
            since = self.ctx.ready_since.get(key)
            if since is not None and key in held and freed is not None and freed > since:
                since = freed  # held for a slot that came free since (a Pod ended): it could start from then
            async with self.admissions:
                try:
                    pods, rest = ex.split_pod_creates(await self.tasks.admit(key))
                    await self.executor.run(pods)
                except Exception as e:
                    self._admission_failed(key, e)
                    return None
            if pods and since is not None:
                latency = max(0.0, (self.clock() - since).total_seconds())
                metrics.DISPATCH_LATENCY.observe(latency)
                if latency >= SLOW_DISPATCH_SECONDS:
                    slow.append(latency)
            return rest

        rests = await bounded(keys, create, CONCURRENCY)
        if slow:  # where the time went, for longshot_dispatch_latency_seconds' tail: before the dispatch, or in it
            log.info("dispatch (%s): %d of %d Pods created %.1f-%.1fs after their task could start; the creates "
                     "took %.1fs", where, len(slow), len(keys), min(slow), max(slow), self.monotonic() - began)
        return rests

    async def _finish(self, key: cachemod.Key, rest: list[ex.Action]) -> None:
        async with self.admissions:
            try:
                await self.executor.run(rest)
            except Exception as e:
                self._admission_failed(key, e)

    def _admission_failed(self, key: cachemod.Key, e: Exception) -> None:
        self._planned = None  # the task is still a candidate, whether or not anything else changes
        ref: cachemod.Ref = ("AgentTask", *key)
        delay = self.queue.retry(ref)
        if isinstance(e, kube.Conflict):
            log.info("admission of %s/%s: the task changed meanwhile; reconciling it in %.2fs", key[0], key[1], delay)
        else:
            log.warning("admission of %s/%s failed (%s: %s); retrying in %.2fs", key[0], key[1], type(e).__name__, e,
                        delay)

    async def _poll_killswitch(self) -> None:
        engaged = self.settings.killswitch
        try:
            data = await asyncio.to_thread(self.ctx.kube.get_configmap, self.settings.namespace,
                                           self.settings.killswitch_configmap)
        except Exception as e:
            log.warning("cannot read the killswitch ConfigMap: %s", e)
            return
        if data is not None and str(data.get("engaged", "")).strip().lower() in ("true", "1", "yes"):
            engaged = True
        if engaged != self.ctx.killswitch:
            log.warning("killswitch %s", "ENGAGED: stopping every agent Pod" if engaged else "released")
            self.ctx.killswitch = engaged
            self.queue.add_all(r for r in self.cache.all_refs() if r[0] in ("BuildRequest", "AgentTask"))

    def _gauges(self) -> None:
        held = self.leadership.held() if self.leadership is not None else {"*"}
        metrics.set_role(leader=bool(held))
        depth = sum(1 for j in self.cache.jobs.values() if j.status.phase in (None, mj.QUEUED, mj.TESTING))
        metrics.MERGE_QUEUE_DEPTH.set(depth)
        mine = [b for b in self.cache.builds.values() if self.ctx.owns_build(b)]
        metrics.set_builds(
            (builds.waiting_for_a_person(ctxmod.conditions_of(b)) for b in mine),
            (builds.budget_used(b.spec.budget.max_tokens, b.spec.budget.max_cost, b.status.usage.tokens,
                                b.status.usage.cost)
             for b in mine if b.status.completion_time is None))


def _ended(body: Mapping[str, Any]) -> bool:
    return str((body.get("status") or {}).get("phase") or "") in ("Succeeded", "Failed")


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
