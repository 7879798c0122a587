"""The reconcile engine: the imperative shell around ``longshot.core``.

kopf's event handlers (``controllers/agenttask.py`` & co.) only *observe*: they put the latest version of
each BuildRequest, AgentTask, MergeJob and agent Pod into this engine's caches and mark what needs a look.
One asyncio loop then works through the marked objects:

1. each marked AgentTask: turn what is observed (its Pod finished or vanished, ``spec.cancel``, a new
   ``spec.retryToken``, a backoff elapsed, the killswitch) into events for ``core.tasks.decide``, carry
   out the effects (create/delete Pods, create MergeJobs, record attempts, Events) and write the status
   once;
2. each marked BuildRequest: the same with ``core.builds.decide`` (planner task, plan validation, task
   creation, counts, suspend, budget, killswitch);
3. dispatch: ``core.scheduler.select`` over every pending task of every build, with the per-build and
   operator-wide limits, and admit the chosen tasks (each admission is one Pod create and one status
   patch, run concurrently).

Why one engine instead of a kopf handler per object: admission is a global decision (fairness across
builds, an operator-wide limit, scope overlaps), and per-object kopf handlers would each keep progress
annotations on 10,000 AgentTasks. Everything the engine knows is rebuilt from the API on start-up (kopf
lists every object first), so a restarted operator carries on: Pod names are deterministic per attempt
and creation is idempotent, so nothing is created twice and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from longshot import config, metrics
from longshot.api import conditions as cond
from longshot.api import handoff as ho
from longshot.api.handoff import PlannedTask
from longshot.controllers import delivery
from longshot.core import builds, failures, plan, scheduler, tasks
from longshot.core.effects import EmitEvent, SetCondition
from longshot.runtime import handoffs, kube, leader, pods

log = logging.getLogger("longshot.engine")

Key = tuple[str, str]  # (namespace, name)
KILLSWITCH_POLL_SECONDS = 2.0
DISPATCH_BATCH_SECONDS = 0.05
CONCURRENCY = 32
CONTROLLER_LEASE = "longshot-operator"
"""Only the holder of this Lease reconciles and dispatches; other replicas watch and stand by. Merge
queues have a Lease each (``runtime.leader.lease_name_for``)."""


@dataclass(frozen=True)
class _PodMissing:
    """The attempt's Pod is not in the cache: ask the API before calling it vanished (the watch may lag)."""

    attempt: int


@dataclass(frozen=True)
class _PodEnded:
    """The attempt's Pod ended: read its handoff (maybe from git), then it is a ``tasks.PodFinished``."""

    pod: Mapping[str, Any]
    attempt: int


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Engine:
    def __init__(self, k: kube.Kube, settings: config.Settings, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rand: Callable[[], float] = random.random) -> None:
        self.kube = k
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.builds: dict[Key, dict[str, Any]] = {}
        self.tasks: dict[Key, dict[str, Any]] = {}
        self.merge_jobs: dict[Key, dict[str, Any]] = {}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.tasks_by_build: dict[Key, set[Key]] = defaultdict(set)
        self.dirty_tasks: set[Key] = set()
        self.dirty_builds: set[Key] = set()
        self.dirty_merge_jobs: set[Key] = set()
        self.plans: dict[Key, list[tuple[dict[str, Any], tuple[PlannedTask, ...]]]] = defaultdict(list)
        self.timers: list[tuple[datetime, str, Key]] = []
        self.inflight: set[Key] = set()
        self.killswitch = settings.killswitch
        self.wake = asyncio.Event()
        self.sem = asyncio.Semaphore(CONCURRENCY)
        self.admitted_total = 0
        self._stopping = False
        self.delivery = delivery.Delivery(self)

    # --- observation (called by the kopf event handlers, on the loop) ---------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        obj = kube.slim(body)
        key = _key(obj)
        cache = {"BuildRequest": self.builds, "AgentTask": self.tasks, "MergeJob": self.merge_jobs,
                 "Pod": self.pods}[kind]
        if event_type == "DELETED":
            cache.pop(key, None)
            if kind == "AgentTask":
                self._index_task(key, obj, remove=True)
                self.dirty_builds.add(self._build_key(obj))
            elif kind == "Pod":
                task = self._task_key_of_pod(obj)
                if task:
                    self.dirty_tasks.add(task)
        else:
            old = cache.get(key)
            if old is not None and _rv(old) > _rv(obj):
                return  # an older version than what our own write returned
            cache[key] = obj
            if kind == "AgentTask":
                self._index_task(key, obj)
                self.dirty_tasks.add(key)
                self.dirty_builds.add(self._build_key(obj))
            elif kind == "BuildRequest":
                self.dirty_builds.add(key)
            elif kind == "Pod":
                task = self._task_key_of_pod(obj)
                if task:
                    self.dirty_tasks.add(task)
            elif kind == "MergeJob":
                build = (key[0], ((obj.get("spec") or {}).get("buildRef") or {}).get("name", ""))
                self.dirty_builds.add(build)
                if not (obj.get("status") or {}).get("conditions"):
                    self.dirty_merge_jobs.add(key)
        self.wake.set()

    def _index_task(self, key: Key, obj: Mapping[str, Any], remove: bool = False) -> None:
        build = self._build_key(obj)
        if remove:
            self.tasks_by_build[build].discard(key)
        else:
            self.tasks_by_build[build].add(key)

    @staticmethod
    def _build_key(task: Mapping[str, Any]) -> Key:
        return task["metadata"].get("namespace", ""), ((task.get("spec") or {}).get("buildRef") or {}).get("name", "")

    @staticmethod
    def _task_key_of_pod(pod: Mapping[str, Any]) -> Key | None:
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") == "AgentTask":
                return pod["metadata"].get("namespace", ""), ref["name"]
        return None

    # --- the loop -------------------------------------------------------------------------------------

    def _became_leader(self, leading: bool) -> None:
        log.warning("this replica (%s) is %s", self.settings.identity,
                    "now the LEADER: reconciling everything" if leading else "a follower: standing by")
        if leading:  # catch up on everything the previous leader may have left half done
            self.dirty_tasks.update(self.tasks)
            self.dirty_builds.update(self.builds)
            self.dirty_merge_jobs.update(k for k, j in self.merge_jobs.items()
                                         if not (j.get("status") or {}).get("conditions"))
        self.wake.set()

    async def run(self) -> None:
        log.info("engine started (operator-wide limit %d workers)", self.settings.max_workers)
        s = self.settings
        self.elector = leader.LeaderElector(
            self.kube.client, namespace=s.namespace, name=CONTROLLER_LEASE, identity=s.identity,
            lease_duration=s.lease_duration_seconds, renew_period=s.lease_renew_seconds,
            on_started_leading=lambda: self._became_leader(True),
            on_stopped_leading=lambda: self._became_leader(False))
        elector_task = asyncio.create_task(self.elector.run(), name="controller lease")
        try:
            await self._loop()
        finally:
            elector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await elector_task

    async def _loop(self) -> None:
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            timeout = KILLSWITCH_POLL_SECONDS
            if self.timers:
                timeout = min(timeout, max(0.0, (self.timers[0][0] - self.clock()).total_seconds()))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
                await asyncio.sleep(DISPATCH_BATCH_SECONDS)  # let a burst of watch events land first
            except TimeoutError:
                pass
            self.wake.clear()
            if not self.elector.is_leader:
                continue
            if loop.time() >= next_poll:
                next_poll = loop.time() + KILLSWITCH_POLL_SECONDS
                await self._poll_killswitch()
            try:
                await self.step()
            except Exception:  # keep the engine alive; the next event retries
                log.exception("engine step failed")
                await asyncio.sleep(1)

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def step(self) -> None:
        now = self.clock()
        while self.timers and self.timers[0][0] <= now:
            _, kind, key = heapq.heappop(self.timers)
            (self.dirty_tasks if kind == "task" else self.dirty_builds).add(key)
        dirty, self.dirty_tasks = self.dirty_tasks, set()
        await self._gather(self.reconcile_task(k) for k in dirty)
        dirty_m, self.dirty_merge_jobs = self.dirty_merge_jobs, set()
        await self._gather(self._init_merge_job(self.merge_jobs[k]) for k in dirty_m if k in self.merge_jobs)
        dirty_b, self.dirty_builds = self.dirty_builds, set()
        for b in dirty_b:  # serial: a build's plan and counts are decided one at a time
            await self.reconcile_build(b)
        await self.delivery.step()
        await self.dispatch()

    async def _gather(self, coros: Iterable[Any]) -> None:
        async def bounded(coro: Any) -> None:
            async with self.sem:
                try:
                    await coro
                except Exception:
                    log.exception("reconcile failed")

        await asyncio.gather(*(bounded(c) for c in coros))

    def schedule(self, at: datetime, key: Key) -> None:
        heapq.heappush(self.timers, (at, "task", key))

    def schedule_build(self, at: datetime, key: Key) -> None:
        heapq.heappush(self.timers, (at, "build", key))

    async def _poll_killswitch(self) -> None:
        engaged = self.settings.killswitch
        data = await asyncio.to_thread(self.kube.get_configmap, self.settings.namespace,
                                       self.settings.killswitch_configmap)
        if data is not None and str(data.get("engaged", "")).strip().lower() in ("true", "1", "yes"):
            engaged = True
        if engaged != self.killswitch:
            log.warning("killswitch %s", "ENGAGED: stopping every agent Pod" if engaged else "released")
            self.killswitch = engaged
            self.dirty_builds.update(self.builds)
            self.dirty_tasks.update(k for k, t in self.tasks.items() if self._phase(t) == tasks.RUNNING)

    # --- AgentTask ------------------------------------------------------------------------------------

    @staticmethod
    def _phase(task: Mapping[str, Any]) -> str:
        return (task.get("status") or {}).get("phase") or tasks.PENDING

    def _events_for_task(self, task: dict[str, Any], state: tasks.TaskState, now: datetime
                         ) -> list[Any]:
        ns = task["metadata"]["namespace"]
        spec = task.get("spec") or {}
        events: list[Any] = []
        if spec.get("cancel") and state.phase not in tasks.TERMINAL:
            return [tasks.CancelRequested()]
        token = spec.get("retryToken")
        if token and token != state.retry_token:
            events.append(tasks.RetryRequested(token))
        if state.phase == tasks.RUNNING:
            if self.killswitch:
                return [*events, tasks.Killswitch()]
            pod = self.pods.get((ns, state.pod or ""))
            finished = self._pod_finished_event(task, pod, state.attempt, now)
            if finished is not None:
                events.append(finished)
            elif pod is None:
                events.append(_PodMissing(state.attempt))
        elif state.phase == tasks.PENDING:
            # A Pod of the next attempt exists although the status says Pending: created just before a
            # restart. Adopt it instead of creating another.
            nxt = pods.pod_name(state.name, state.attempt + 1)
            pod = self.pods.get((ns, nxt))
            if pod is not None:
                finished = self._pod_finished_event(task, pod, state.attempt + 1, now)
                events.append(finished or tasks.Admitted(state.attempt + 1))
        elif state.phase == tasks.BACKOFF and state.next_attempt_time is not None:
            if state.next_attempt_time <= now:
                events.append(tasks.BackoffElapsed())
            else:
                self.schedule(state.next_attempt_time, _key(task))
        return events

    def _pod_finished_event(self, task: Mapping[str, Any], pod: Mapping[str, Any] | None, attempt: int,
                            now: datetime) -> _PodEnded | tasks.PodFinished | None:
        if pod is None:
            return None
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return _PodEnded(pod, attempt)
        created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or now
        if failures.stuck(status, created=created, now=now) is not None:
            return tasks.PodFinished(status, None, attempt)
        return None

    async def _read_handoff(self, task: Mapping[str, Any], pod: Mapping[str, Any]
                            ) -> ho.Handoff | ho.HandoffError | None:
        message = None
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == failures.AGENT_CONTAINER:
                message = ((cs.get("state") or {}).get("terminated") or {}).get("message")
        if message is None:
            return None
        try:
            parsed = ho.parse_termination_message(message)
        except ho.HandoffError as e:
            return e
        if isinstance(parsed, ho.Handoff):
            return parsed
        build = self.builds.get(self._build_key(task))
        if build is None:
            return ho.HandoffError("the handoff is stored in git but the BuildRequest is gone")
        return await asyncio.to_thread(handoffs.fetch, self.kube, build, parsed)

    async def reconcile_task(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is None or task["metadata"].get("deletionTimestamp"):
            return
        build = self.builds.get(self._build_key(task))
        if build is None or build["metadata"].get("deletionTimestamp"):
            return  # an orphan waits for its build (or for the garbage collector)
        now = self.clock()
        state = tasks.TaskState.from_resource(task, build)
        effects: list[Any] = []
        for event in self._events_for_task(task, state, now):
            if isinstance(event, _PodMissing):
                if await asyncio.to_thread(self.kube.get_pod, key[0], state.pod or "") is not None:
                    continue  # the watch is behind; the Pod exists
                event = tasks.PodVanished(event.attempt)
            elif isinstance(event, _PodEnded):
                event = tasks.PodFinished(event.pod.get("status") or {}, await self._read_handoff(task, event.pod),
                                          event.attempt)
            if isinstance(event, tasks.PodFinished) and event.handoff is None:
                outcome = failures.stuck(event.pod_status, created=now, now=now, grace_seconds=0)
                if outcome is not None and state.pod:
                    await asyncio.to_thread(self.kube.delete_pod, key[0], pods.pod_name(state.name,
                                            event.attempt or state.attempt), 0)
            try:
                state, more = tasks.decide(state, event, now=now, rand=self.rand)
            except tasks.InvalidTransition as e:
                log.error("task %s/%s: %s", key[0], key[1], e)
                continue
            effects.extend(more)
        needs_init = not (task.get("status") or {}).get("conditions")
        if effects or needs_init:
            await self.apply_task(task, build, state, effects, init=needs_init)

    async def admit(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        build = self.builds.get(self._build_key(task))
        if build is None:
            return
        state = tasks.TaskState.from_resource(task, build)
        if state.phase != tasks.PENDING:
            return
        now = self.clock()
        state, effects = tasks.decide(state, tasks.Admitted(), now=now, rand=self.rand)
        await self.apply_task(task, build, state, effects, init=not (task.get("status") or {}).get("conditions"))
        self.admitted_total += 1

    async def apply_task(self, task: dict[str, Any], build: dict[str, Any], state: tasks.TaskState,
                         effects: list[Any], *, init: bool = False) -> None:
        ns, name = _key(task)
        status = task.get("status") or {}
        now = self.clock()
        conds = list(status.get("conditions") or [])
        if init:
            for type_, st, reason, msg in ((cond.READY, cond.FALSE, "Pending", "waiting to run"),
                                           (cond.SUCCEEDED, cond.UNKNOWN, "Pending", "not run yet"),
                                           (cond.RUNNING, cond.FALSE, "Pending", "not run yet")):
                if cond.find(conds, type_) is None:
                    conds, _ = cond.set_condition(conds, type_, st, reason, msg, now=now,
                                                  observed_generation=task["metadata"].get("generation"))
        attempts = {a["number"]: dict(a) for a in status.get("attempts") or []}
        patch: dict[str, Any] = dict(state.to_status())
        for e in effects:
            if isinstance(e, tasks.CreatePod):
                manifest = pods.build_agent_pod(task, build, self.settings, e.attempt)
                created = await asyncio.to_thread(self.kube.create_pod, manifest)
                if not created:
                    log.info("pod %s/%s exists already (adopted)", ns, e.name)
            elif isinstance(e, tasks.DeletePod):
                if e.name:
                    await asyncio.to_thread(self.kube.delete_pod, ns, e.name)
            elif isinstance(e, SetCondition):
                conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now,
                                              observed_generation=task["metadata"].get("generation"))
            elif isinstance(e, tasks.RecordAttempt):
                attempts.setdefault(e.number, {}).update(e.to_wire())
                if e.failure_class:
                    metrics.POD_FAILURES.labels(failure_class=e.failure_class).inc()
            elif isinstance(e, tasks.UpdateUsage):
                attempts.setdefault(e.attempt, {"number": e.attempt, "pod": pods.pod_name(name, e.attempt)})
                attempts[e.attempt].update(tokens=e.tokens, cost=e.cost)
                metrics.TOKENS.inc(e.tokens)
                metrics.COST.inc(e.cost)
            elif isinstance(e, tasks.RecordHandoff):
                patch["handoff"] = dict(e.handoff)
            elif isinstance(e, tasks.ScheduleRetry):
                self.schedule(e.at, (ns, name))
            elif isinstance(e, EmitEvent):
                await asyncio.to_thread(self.kube.event, task, e.type, e.reason, e.message)
            elif isinstance(e, tasks.CreateMergeJob):
                await asyncio.to_thread(self.kube.create, self._merge_job_manifest(task, build, e))
            elif isinstance(e, tasks.PlanReturned):
                self.plans[self._build_key(task)].append((task, e.tasks))
                self.dirty_builds.add(self._build_key(task))
        patch["conditions"] = conds
        patch["attempts"] = [attempts[n] for n in sorted(attempts)][-20:]
        patch["observedGeneration"] = task["metadata"].get("generation")
        updated = await asyncio.to_thread(self.kube.patch_status, "AgentTask", ns, name, patch)
        if updated is not None:
            self.observe("AgentTask", "MODIFIED", updated)

    def _merge_job_manifest(self, task: Mapping[str, Any], build: Mapping[str, Any],
                            e: tasks.CreateMergeJob) -> dict[str, Any]:
        tmeta, tspec, bspec = task["metadata"], task.get("spec") or {}, build.get("spec") or {}
        return {
            "apiVersion": build.get("apiVersion", "longshot.dev/v1alpha1"),
            "kind": "MergeJob",
            "metadata": {
                "name": tmeta["name"],
                "namespace": tmeta["namespace"],
                "labels": {**plan.task_labels(build["metadata"]["name"], tspec.get("role", "worker")),
                           "app.kubernetes.io/component": "merge-job"},
                "ownerReferences": [{"apiVersion": task.get("apiVersion", "longshot.dev/v1alpha1"),
                                     "kind": "AgentTask", "name": tmeta["name"], "uid": tmeta.get("uid", ""),
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "buildRef": {"name": build["metadata"]["name"]},
                "taskRef": {"name": tmeta["name"]},
                "branch": e.branch,
                "commit": e.commit,
                "target": (bspec.get("repository") or {}).get("baseBranch", "main"),
                "strategy": (bspec.get("merge") or {}).get("strategy", "rebase"),
                "priority": int(tspec.get("priority", 5)),
            },
        }

    async def _init_merge_job(self, job: Mapping[str, Any]) -> None:
        ns, name = _key(job)
        now = self.clock()
        conds = cond.initial(cond.MERGE_JOB_TYPES, observed_generation=job["metadata"].get("generation"), now=now)
        conds, _ = cond.set_condition(conds, cond.QUEUED, cond.TRUE, "Queued", "waiting in the merge queue", now=now)
        updated = await asyncio.to_thread(self.kube.patch_status, "MergeJob", ns, name, {
            "conditions": conds, "phase": "Queued", "observedGeneration": job["metadata"].get("generation")})
        if updated is not None:
            self.merge_jobs[(ns, name)] = kube.slim(updated)

    # --- BuildRequest ---------------------------------------------------------------------------------

    def build_tasks(self, key: Key) -> list[dict[str, Any]]:
        return [self.tasks[k] for k in self.tasks_by_build.get(key, ()) if k in self.tasks]

    def usage_of(self, key: Key) -> tuple[int, float]:
        tokens, cost = 0, 0.0
        for t in self.build_tasks(key):
            for a in (t.get("status") or {}).get("attempts") or []:
                tokens += int(a.get("tokens", 0))
                cost += float(a.get("cost", 0.0))
        return tokens, round(cost, 6)

    def budget_spent(self, build: Mapping[str, Any], tokens: int, cost: float) -> bool:
        budget = (build.get("spec") or {}).get("budget") or {}
        return scheduler.BuildView(name="", tokens_used=tokens, max_tokens=budget.get("maxTokens"),
                                   cost_used=cost, max_cost=budget.get("maxCost")).budget_spent

    async def reconcile_build(self, key: Key) -> None:
        build = self.builds.get(key)
        if build is None or build["metadata"].get("deletionTimestamp"):
            self.plans.pop(key, None)
            return
        now = self.clock()
        spec, status = build.get("spec") or {}, build.get("status") or {}
        state = builds.BuildState.from_resource(build)
        events: list[Any] = []
        if state.phase == builds.PENDING:
            events.append(builds.Created())
        if bool(spec.get("suspend")) != state.suspended:
            events.append(builds.SuspendChanged(bool(spec.get("suspend"))))
        if self.killswitch != state.halted:
            events.append(builds.Killswitch(self.killswitch))
        tokens, cost = self.usage_of(key)
        if self.budget_spent(build, tokens, cost) != state.budget_exceeded:
            events.append(builds.BudgetChanged(not state.budget_exceeded))
        plans = self.plans.pop(key, [])
        # names a new plan must not collide with (only worth the scan when a plan arrived)
        existing = {k[1] for k in self.tasks if k[0] == key[0]} if plans else set()
        for planner_task, planned in plans:
            ctx = plan.context_for(build, planner_task, existing)
            events.append(builds.PlannerFinished(planned, ctx))
        planner = self.tasks.get((key[0], state.planner_task or ""))
        if planner is not None and self._phase(planner) == tasks.FAILED:
            events.append(builds.PlanInvalid(self._last_failure(planner)))

        effects: list[Any] = []
        for event in events:
            try:
                state, more = builds.decide(state, event, now=now)
            except builds.InvalidTransition as e:
                log.error("build %s/%s: %s", key[0], key[1], e)
                continue
            effects.extend(more)
            # tasks created by this event count in the next one
            for e in more:
                if isinstance(e, builds.CreatePlannerTask | builds.CreateTasks):
                    manifests = [e.manifest] if isinstance(e, builds.CreatePlannerTask) else list(e.manifests)
                    await self._create_tasks(manifests)
                    existing.update(m["metadata"]["name"] for m in manifests)
        # gate and sweep tasks belong to delivery, not to the build's work
        counts = builds.TaskCounts.from_phases(self._phase(t) for t in self.build_tasks(key)
                                               if delivery.purpose(t) is None)
        if counts != state.counts:
            state, more = builds.decide(state, builds.TaskCountsChanged(counts), now=now)
            effects.extend(more)
        more_events, extra = await self.delivery.build_step(key, build, state)
        for event in more_events:
            state, more = builds.decide(state, event, now=now)
            effects.extend(more)

        conds = list(status.get("conditions") or [])
        for type_ in cond.BUILD_REQUEST_TYPES:
            if cond.find(conds, type_) is None:
                conds, _ = cond.set_condition(conds, type_, cond.UNKNOWN, "Initializing",
                                              "The operator has not acted yet.", now=now,
                                              observed_generation=build["metadata"].get("generation"))
        for e in effects:
            if isinstance(e, SetCondition):
                conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now,
                                              observed_generation=build["metadata"].get("generation"))
            elif isinstance(e, EmitEvent):
                await asyncio.to_thread(self.kube.event, build, e.type, e.reason, e.message)
        patch: dict[str, Any] = dict(state.to_status())
        patch["conditions"] = conds
        patch["observedGeneration"] = build["metadata"].get("generation")
        patch["usage"] = {"tokens": tokens, "cost": cost}
        patch["merges"] = self._merge_counts(key)
        patch.update(extra)
        jobs = self.delivery.jobs_of(key)
        if jobs:
            pending = [j["metadata"]["name"] for j in jobs if not self.delivery.delivered(j)]
            conds, _ = cond.set_condition(
                conds, cond.MERGED, cond.FALSE if pending else cond.TRUE,
                "BranchesPending" if pending else "AllMerged",
                f"not merged yet: {', '.join(pending[:10])}" if pending else f"{len(jobs)} branches merged",
                now=now, observed_generation=build["metadata"].get("generation"))
            patch["conditions"] = conds
        if not status.get("startTime"):
            patch["startTime"] = kube.now_rfc3339()
        if cond.is_true(conds, cond.READY) and not status.get("completionTime"):
            patch["completionTime"] = kube.now_rfc3339()
        elif not cond.is_true(conds, cond.READY) and status.get("completionTime"):
            patch["completionTime"] = None
        if self._unchanged(status, patch):
            return
        updated = await asyncio.to_thread(self.kube.patch_status, "BuildRequest", key[0], key[1], patch)
        if updated is not None:
            self.builds[key] = kube.slim(updated)

    @staticmethod
    def _unchanged(status: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
        return all(status.get(k) == v for k, v in patch.items())

    @staticmethod
    def _last_failure(task: Mapping[str, Any]) -> str:
        for c in (task.get("status") or {}).get("conditions") or []:
            if c.get("type") == cond.SUCCEEDED:
                return str(c.get("message") or "the planner failed")
        return "the planner failed"

    def _merge_counts(self, key: Key) -> dict[str, int]:
        counts = {"queued": 0, "merged": 0, "conflicted": 0, "failed": 0}
        for job in self.delivery.jobs_of(key):
            phase = ((job.get("status") or {}).get("phase") or "Queued").lower()
            counts[phase if phase in counts else "queued"] += 1
        return counts

    async def _create_tasks(self, manifests: list[Mapping[str, Any]]) -> None:
        async def one(m: Mapping[str, Any]) -> None:
            created = await asyncio.to_thread(self.kube.create, m)
            if created is not None:
                self.observe("AgentTask", "ADDED", created)

        await self._gather(one(m) for m in manifests)

    # --- dispatch -------------------------------------------------------------------------------------

    def _succeeded(self) -> set[tuple[str, str]]:
        done: set[tuple[str, str]] = set()
        children: dict[Key, list[Key]] = defaultdict(list)
        for k, t in self.tasks.items():
            parent = (t.get("spec") or {}).get("parentTask")
            if parent:
                children[(k[0], parent)].append(k)
        for k, t in self.tasks.items():
            if self._phase(t) != tasks.SUCCEEDED:
                continue
            kids = children.get(k)
            # a decomposed task is done when everything it was split into is done
            if kids and any(self._phase(self.tasks[c]) != tasks.SUCCEEDED for c in kids if c in self.tasks):
                continue
            b = self._build_key(t)
            done.add((f"{b[0]}/{b[1]}", k[1]))
        return done

    def _task_metrics(self, candidates: list[scheduler.TaskView], running: list[scheduler.TaskView]) -> None:
        by_state: dict[str, int] = defaultdict(int)
        for t in self.tasks.values():
            by_state[self._phase(t)] += 1
        metrics.set_tasks_by_state(by_state)
        metrics.ACTIVE_WORKERS.set(len(running))
        metrics.PENDING_TASKS.set(len(candidates))

    async def dispatch(self) -> None:
        candidates: list[scheduler.TaskView] = []
        running: list[scheduler.TaskView] = []
        for k, t in self.tasks.items():
            phase = self._phase(t)
            if phase not in (tasks.PENDING, tasks.RUNNING) and k not in self.inflight:
                continue
            spec = t.get("spec") or {}
            if spec.get("cancel"):
                continue
            b = self._build_key(t)
            view = scheduler.TaskView(
                name=k[1], build=f"{b[0]}/{b[1]}", priority=int(spec.get("priority", 5)),
                created=_parse_time(t["metadata"].get("creationTimestamp")),
                depends_on=tuple(spec.get("dependsOn") or ()), scope=tuple(spec.get("scope") or ()),
                phase=tasks.RUNNING if k in self.inflight else phase)
            (running if view.phase == tasks.RUNNING else candidates).append(view)
        self._task_metrics(candidates, running)
        if not candidates:
            return
        views: dict[str, scheduler.BuildView] = {}
        for bk, b in self.builds.items():
            spec = b.get("spec") or {}
            budget = spec.get("budget") or {}
            tokens, cost = self.usage_of(bk)
            views[f"{bk[0]}/{bk[1]}"] = scheduler.BuildView(
                name=bk[1], max_workers=int((spec.get("workers") or {}).get("max", 4)),
                suspended=bool(spec.get("suspend")) or bool(b["metadata"].get("deletionTimestamp")),
                halted=self.killswitch, tokens_used=tokens, max_tokens=budget.get("maxTokens"),
                cost_used=cost, max_cost=budget.get("maxCost"))
        selection = scheduler.select(candidates, running, succeeded=self._succeeded(), builds=views,
                                     global_limit=self.settings.max_workers, killswitch=self.killswitch)
        for blocked in selection.budget_blocked:
            ns, name = blocked.split("/", 1)
            self.dirty_builds.add((ns, name))
        if not selection.start:
            return
        keys = [(t.build.split("/", 1)[0], t.name) for t in selection.start]
        self.inflight.update(keys)
        try:
            await self._gather(self.admit(k) for k in keys)
        finally:
            self.inflight.difference_update(keys)
        self.wake.set()  # more may be admissible now that counts changed
