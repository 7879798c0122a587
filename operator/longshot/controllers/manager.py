"""The manager: wiring. One controller per kind (``controllers/controller.py``: a work queue and N workers),
the dispatch controller (``controllers/dispatcher.py``), the killswitch, the resync, leadership and health.

    kopf watch event --> observe --> cache --> Queues --> AgentTask | MergeJob | Queue | BuildRequest controller
                                      |                                         (N workers each: reconcile,
                                      +--> Dispatcher.poke <------------------   execute, done in a finally)
                                             (one key: a burst is one plan)

* kopf's event handlers only call :meth:`Manager.observe` (the cache parses the object and says which references it
  concerns; they go to their kind's queue). An agent Pod that ended frees a worker slot: the dispatcher is poked at
  once, whatever the controllers are doing.
* Each kind has its own workers (``WORKERS``), so a merge queue busy with git for seconds holds up neither the
  tasks nor dispatch (controller-runtime gives each controller its own); one reference is never processed twice at
  once. A failed reconcile is retried with per-reference exponential backoff: never dropped.
* The end of every reconcile pokes the dispatcher (what it wrote may free a slot or ready a task); a plan that would
  read what the last one read is not made.
* Housekeeping (``_housekeeping``): the killswitch ConfigMap is polled, a periodic resync marks everything
  (so nothing depends on an event arriving: a pass every ``RESYNC_SECONDS``, spread at ``RESYNC_PER_SECOND`` over
  the turns), and gauges are set. Leadership
  (``controllers/leadership.py``) says which shards this replica acts on; a change marks everything again.
* ``healthy()`` is False when housekeeping has not turned for ``STALL_SECONDS`` or failed
  ``STEP_FAILURES_UNHEALTHY`` times in a row, a controller's reconcile has run past its stall limit, the dispatcher
  is wedged or keeps failing, or the replica lost its footing: the liveness probe restarts a wedged operator.
* ``ready()`` (``/readyz``) is ``healthy()`` once the manager runs.
* A standing intake's child build (label ``longshot.dev/intake``) that changes enqueues its intake too
  (``cache.intake_refs``, for a watch event and for the executor's own write alike); the webhook server's
  ``POST /intake/<namespace>/<name>`` (:meth:`Manager.webhook`) schedules a poll of an intake on the event loop.
* Tests drive the controllers by hand (``tests/driving.py``: one turn of every kind, in ``ORDER``) through the same
  ``process`` path the workers take.

No module imports this one but the entry points: reconcilers get what they need through the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from longshot import config, metrics
from longshot.api import timeutil
from longshot.controllers import builds as buildsc
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import controller as ctl
from longshot.controllers import dispatcher as dsp
from longshot.controllers import executor as ex
from longshot.controllers import leadership, workqueue
from longshot.controllers import queue as mqc
from longshot.controllers import schedules as schedulesc
from longshot.controllers import standing as standingc
from longshot.controllers import tasks as tasksc
from longshot.core import builds, lanes
from longshot.core import mergejobs as mj
from longshot.core import tasks as core_tasks
from longshot.net import guard as gd
from longshot.runtime import capacity, kube, netpol, preflight

log = logging.getLogger("longshot.manager")

RESYNC_SECONDS: Final = 60.0
"""The resync marks every object once a pass, and a pass takes at least this long (a small install: every minute)."""
RESYNC_PER_SECOND: Final = 25.0
"""At most this many objects marked a second by the resync: a pass is spread over the housekeeping turns, and with
many objects it takes longer than ``RESYNC_SECONDS``. Marking all of them at once every minute would be reconciles
that change nothing, ahead of the ended agents' reconciles. Events and timers drive the work; the resync is the net
for a lost event (controller-runtime's default is 10 hours)."""
KILLSWITCH_POLL_SECONDS: Final = 2.0
STALL_SECONDS: Final = 60.0
THREADS: Final = 64
"""Threads of the default executor (``startup.py``): every reconcile and admission in flight may wait on the API,
plus git work of the merge queues and the killswitch poll."""
ORDER: Final = ("AgentTask", "MergeJob", "Queue", "BuildRequest", "BuildSchedule")
"""The controllers, in the order a hand-driven turn (``tests/driving.py``) processes them."""
WORKERS: Final = {"AgentTask": 16, "MergeJob": 8, "Queue": 4, "BuildRequest": 8, "BuildSchedule": 2}
"""Each controller's workers (reconciles in flight at once); ``THREADS`` covers them and the admissions."""
STALLS: Final = {"AgentTask": 60.0, "MergeJob": 60.0, "Queue": 300.0, "BuildRequest": 60.0, "BuildSchedule": 60.0}
"""A reconcile running longer than this is wedged (every API and git call is bounded; a merge queue's git work
takes the longest)."""
DEADLINES: Final = {"AgentTask": 45.0, "MergeJob": 45.0, "BuildRequest": 45.0, "BuildSchedule": 45.0}
"""A reconcile (its reads and decision) running longer than this is cancelled and retried with backoff
(``Controller.deadline``): shorter than the stall limit, so that waiting on one tenant's slow server fails that
tenant's object and not the liveness probe. The merge queues' reconciles have their git work's own timeouts."""
MIN_INTERVAL: Final = {"BuildRequest": 1.0}
"""Seconds between two reconciles of one reference (``WorkQueue.min_interval``): a build is enqueued by every change
of any of its tasks and its reconcile reads all of them, so a burst of task events is one build reconcile, not one
each (a 10,000-task build's reconcile costs 100-200 ms: at most one a second keeps it under a fifth of the loop)."""
DUTY: Final = {"BuildRequest": 0.25}
"""The share of the time one reference's reconciles may take (``WorkQueue.duty``): after a reconcile, a build waits
three times as long as it took (and at least ``MIN_INTERVAL``). A reconcile of a 10,000-task build with a thousand
agents took 0.6 s, so one a second was a third of the event loop; the build's status now follows every 2 s or so."""
TENANTS: Final = frozenset({"AgentTask", "MergeJob", "BuildRequest", "BuildSchedule"})
"""Kinds whose work queues cap each namespace's reconciles in flight (``Settings.tenant_share`` of the kind's
workers; ``core.lanes``). A merge queue's references are the repository's, not one namespace's."""
DETACHED: Final = frozenset({"Queue"})
"""Kinds whose reconciles a hand-driven turn (``tests/driving.py``) starts without waiting for them, as their workers
would (git work)."""
DETACHED_STALL_SECONDS: Final = STALLS["Queue"]
STEP_FAILURES_UNHEALTHY: Final = 10
"""Housekeeping turns in a row that raised: the loop turns but does nothing useful."""
SHUTDOWN_GRACE_SECONDS: Final = 10.0
"""On stop, how long the reconciles and the admission in flight may take to finish before they are cancelled."""


class Manager:
    def __init__(self, k: kube.KubeAPI, settings: config.Settings, *,
                 client: kube.ApiClient | None = None,
                 clock: Callable[[], datetime] = timeutil.utcnow, rand: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.cache = cachemod.Cache()
        urgent: dict[str, Callable[[workqueue.Ref], bool]] = {"AgentTask": self._delivery_task}
        queues = {kind: workqueue.WorkQueue[workqueue.Ref](
            clock, min_interval=MIN_INTERVAL.get(kind, 0.0), duty=DUTY.get(kind, 1.0), urgent=urgent.get(kind),
            tenant=_namespace, tenant_cap=lanes.cap(WORKERS[kind], settings.tenant_share) if kind in TENANTS else None,
            workers=WORKERS[kind])
            for kind in ORDER}
        self.queue = workqueue.Queues(queues)
        """Every controller's queue behind one facade (a reference goes to its kind's)."""
        self.ctx = ctxmod.Context(cache=self.cache, kube=k, settings=settings, queue=self.queue, clock=clock, rand=rand)
        self.ctx.egress = gd.for_policy(settings.egress_policy(), settings.proxies())
        self.ctx.preflight = functools.partial(preflight.check, guard=self.ctx.egress,
                                               runtime_class=settings.agent_runtime_class)
        self.executor = ex.Executor(k, self.cache, self.queue, clock)
        self.tasks = tasksc.TaskReconciler(self.ctx)
        self.builds = buildsc.BuildReconciler(self.ctx)
        self.ctx.workspaces = mqc.Workspaces(self.ctx)  # shared: merge queue, roadmap intake, best-of-N gates
        self.queues = mqc.QueueReconciler(self.ctx, self.ctx.workspaces, monotonic=monotonic)
        self.schedules = schedulesc.ScheduleReconciler(self.ctx)
        self.reconcilers: Mapping[str, Callable[[str, str], Any]] = {
            "AgentTask": lambda ns, n: self.tasks.reconcile((ns, n)),
            "BuildRequest": lambda ns, n: self.builds.reconcile((ns, n)),
            "MergeJob": lambda ns, n: self.queues.job(ns, n),  # routed to its queue: the one MergeJob writer
            "Queue": lambda ns, n: self.queues.reconcile(n),
            "BuildSchedule": lambda ns, n: self.schedules.reconcile((ns, n)),
        }
        """What each controller reconciles with, by kind (looked up at every reconcile: tests replace entries)."""
        self.controllers: dict[str, ctl.Controller] = {
            kind: ctl.Controller(kind, functools.partial(self._reconcile, kind), self.executor, queues[kind],
                                 workers=WORKERS[kind], stall_seconds=STALLS[kind], deadline=DEADLINES.get(kind),
                                 monotonic=monotonic,
                                 after=self._reconciled)
            for kind in ORDER}
        self.dispatcher = dsp.Dispatcher(self.ctx, self.tasks, self.executor, queues["AgentTask"], clock=clock,
                                         monotonic=monotonic)
        self.cache.on_delivery_task = functools.partial(self.dispatcher.hurry, "a delivery task was created")
        self.leadership: leadership.Leadership | None = None
        if client is not None:
            self.leadership = leadership.Leadership(client, settings, shards=self.cache.shards,
                                                    on_change=self._leadership_changed, clock=clock)
            self.ctx.owns = self.leadership.holds
            if settings.network_policy:
                self.ctx.network_policy = lambda namespace: netpol.ensure(client, namespace, settings)
        self.capacity: capacity.Reader | None = None
        """Lists the Nodes, the Pods on them and the ResourceQuotas for admission by capacity (``admission_capacity``
        ``auto``; an explicit capacity reads the Pods and the quotas alone)."""
        if client is not None and settings.capacity_mode() in ("auto", "explicit"):
            self.capacity = capacity.Reader(client, nodes=settings.capacity_mode() == "auto")
        self._next_capacity = 0.0
        self.heartbeat = monotonic()
        self.step_failures = 0
        """Housekeeping turns in a row that raised (reset by one that did not)."""
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_resync = 0.0
        self._resync: list[cachemod.Ref] = []
        """What the resync's pass in progress has not marked yet."""
        self._resync_turn: float | None = None
        self._next_killswitch = 0.0

    @property
    def reconciles(self) -> int:
        return sum(c.reconciles for c in self.controllers.values())

    @property
    def failures(self) -> int:
        return sum(c.failures for c in self.controllers.values())

    # --- input -------------------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        if kind == "Pod" and _ended(body):
            meta = body.get("metadata") or {}
            before = self.cache.pods.get(cachemod.pod_key(meta))
            if before is None or not before.ended:
                self.dispatcher.pod_ended()  # a worker slot came free now (dispatch.slot_freed)
        refs = self.cache.observe(kind, event_type, body)
        for r in refs:
            if r[0] == "BuildSchedule" and self.leadership is not None:
                schedule = self.cache.schedules.get((r[1], r[2]))
                if schedule is not None and not self.leadership.knows(cachemod.schedule_shard(schedule)):
                    self.leadership.poke()  # a schedule of a new repository: its shard is taken now
            if r[0] == "BuildRequest":
                build = self.cache.builds.get((r[1], r[2]))
                if self.leadership is not None and build is not None and not self.leadership.knows(
                        self.cache.shard_of(build)):
                    self.leadership.poke()  # a new repository: its shard is taken now, not at the next poll
        self.queue.add_all(refs)
        if refs:
            self.dispatcher.poke(f"a {kind} changed")

    def webhook(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """A webhook delivery (a worker thread of the webhook server): ``controllers.standing.delivery``; the poll it
        asks for is scheduled on the event loop."""
        loop = self._loop
        if loop is None:
            return 503, "the operator is starting"

        def schedule(key: tuple[str, str]) -> None:
            loop.call_soon_threadsafe(self.builds.standing.poll_now, key)

        return standingc.delivery(self.ctx, schedule, path, headers, body)

    def _delivery_task(self, ref: workqueue.Ref) -> bool:
        """A gate, review, sweep or final task that has not finished: the merge queue or the build's finalization
        waits for its end, so its reconciles go ahead of the workers' (``WorkQueue``'s urgent tier), a resync's
        too. A finished one waits in its tier: nothing waits for it."""
        task = self.cache.tasks.get((ref[1], ref[2]))
        return task is not None and task.status.phase not in core_tasks.TERMINAL and cachemod.purpose(task) is not None

    def _reconcile(self, kind: str, ref: workqueue.Ref) -> Any:
        return self.reconcilers[kind](ref[1], ref[2])

    def _reconciled(self, ref: workqueue.Ref) -> None:
        """After any reconcile: what it wrote may free a slot or ready a task (no plan when nothing changed)."""
        self.dispatcher.poke(f"a {ref[0]} was reconciled")

    def _leadership_changed(self) -> None:
        self.queue.add_low(self.cache.all_refs())
        self.dispatcher.replan("this replica's shards changed")

    # --- the loop ----------------------------------------------------------------------------------

    def healthy(self) -> bool:
        if self.monotonic() - self.heartbeat > STALL_SECONDS or self.step_failures >= STEP_FAILURES_UNHEALTHY:
            return False
        if not all(c.healthy() for c in self.controllers.values()) or not self.dispatcher.healthy():
            return False
        return self.leadership is None or self.leadership.healthy()

    def ready(self) -> bool:
        """Readiness (``/readyz``): the manager runs and is healthy."""
        return self._loop is not None and self.healthy()

    async def run(self) -> None:
        """Every controller's workers, the dispatcher and housekeeping, until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        log.info("manager started as %s (operator-wide limit %d workers; controllers: %s)", self.settings.identity,
                 self.settings.max_workers, ", ".join(f"{k} x{WORKERS[k]}" for k in ORDER))
        loops = [asyncio.create_task(c.run(), name=f"{kind} controller") for kind, c in self.controllers.items()]
        loops.append(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
        if self.leadership is not None:
            loops.append(asyncio.create_task(self.leadership.run(), name="leadership"))
        try:
            while not self._stopping.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=KILLSWITCH_POLL_SECONDS)
            # a graceful stop: nothing new is handed out, and what is in flight (a status write, an admission)
            # finishes, for at most SHUTDOWN_GRACE_SECONDS (controller-runtime's graceful shutdown)
            for c in self.controllers.values():
                c.queue.shut_down()
            self.dispatcher.queue.shut_down()
            workers = [t for t in loops if t.get_name() != "leadership"]
            await asyncio.wait(workers, timeout=SHUTDOWN_GRACE_SECONDS)
        finally:
            for t in loops:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*loops, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> None:
        """One turn of housekeeping (the run loop's, every ``KILLSWITCH_POLL_SECONDS``): it never raises."""
        try:
            await self._housekeeping()
        except Exception:  # a bug must not stop the loop; health says so when it keeps happening
            self.step_failures += 1
            log.exception("manager housekeeping failed")
        else:
            self.step_failures = 0

    async def _housekeeping(self) -> None:
        self.heartbeat = now = self.monotonic()
        if now >= self._next_killswitch:
            self._next_killswitch = now + KILLSWITCH_POLL_SECONDS
            await self._poll_killswitch()
        if self.capacity is not None and now >= self._next_capacity:
            self._next_capacity = now + self.settings.admission_refresh_seconds
            await self._read_capacity(self.capacity)
        self._resync_step(now)
        self._gauges()

    def _resync_step(self, now: float) -> None:
        """The resync's share of this housekeeping turn: a new pass when the last one is done and ``RESYNC_SECONDS``
        have gone by since it began, then up to ``RESYNC_PER_SECOND`` objects for each second since the last turn
        (at low priority: behind every event)."""
        if not self._resync and now >= self._next_resync:
            self._next_resync = now + RESYNC_SECONDS
            self._resync = list(self.cache.all_refs())
            self.dispatcher.replan("resync")
        elapsed = now - self._resync_turn if self._resync_turn is not None else KILLSWITCH_POLL_SECONDS
        self._resync_turn = now
        if not self._resync:
            return
        n = max(1, math.ceil(RESYNC_PER_SECOND * min(max(elapsed, 0.0), RESYNC_SECONDS)))
        share, self._resync = self._resync[:n], self._resync[n:]
        self.queue.add_low(share)

    async def _read_capacity(self, reader: capacity.Reader) -> None:
        """List the Nodes and the Pods on them (a thread); when what admission reads changed, plan again."""
        try:
            facts: capacity.ClusterFacts | None = await asyncio.to_thread(reader.read)
            error = ""
        except capacity.Unavailable as e:
            facts, error = None, str(e)
        if facts == self.ctx.cluster and error == self.ctx.cluster_error:
            return
        self.ctx.cluster, self.ctx.cluster_error = facts, error
        self.cache.version += 1  # a plan reads it: the next one is made, even where the last found all full
        self.cache.freeing += 1
        self.dispatcher.poke("the cluster's capacity changed")

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
            self.dispatcher.poke("the killswitch changed")

    def _gauges(self) -> None:
        held = self.leadership.held() if self.leadership is not None else {"*"}
        metrics.set_role(leader=bool(held))
        depth = sum(1 for j in self.cache.jobs.values() if j.status.phase in (None, mj.QUEUED, mj.TESTING))
        metrics.MERGE_QUEUE_DEPTH.set(depth)
        for kind, c in self.controllers.items():
            metrics.WORKQUEUE_DEPTH.labels(kind).set(c.queue.pending())
            metrics.WORKQUEUE_LONGEST_RUNNING.labels(kind).set(c.longest_running())
        metrics.WORKQUEUE_DEPTH.labels("Dispatch").set(self.dispatcher.queue.pending())
        mine = [b for b in self.cache.builds.values() if self.ctx.owns_build(b)]
        metrics.set_builds(
            (builds.waiting_for_a_person(ctxmod.conditions_of(b)) for b in mine),
            (builds.budget_used(b.spec.budget.max_tokens, b.spec.budget.max_cost, b.status.usage.tokens,
                                b.status.usage.cost)
             for b in mine if b.status.completion_time is None))


def _namespace(ref: workqueue.Ref) -> str:
    """A reference's tenant: its namespace."""
    return ref[1]


def _ended(body: Mapping[str, Any]) -> bool:
    return str((body.get("status") or {}).get("phase") or "") in ("Succeeded", "Failed")

