"""The BuildRequest reconciler: observe a build and its tasks, ask ``core.builds`` (and, when every task is
finished, ``core.finalization``), return the actions.

Observed: first sight (``Created``), ``spec.suspend``, the killswitch, the budget (``core`` usage of its tasks),
the configuration check (``runtime.preflight``, once per spec generation and again every minute while it fails),
plans returned by planner tasks, a failed planner, the task counts and the tasks that need attention (stopped
for a person, waiting for an answer or an approval, retrying, failed, blocked). While working, sweeps run the
reconciler command on the target after new merges; a failing sweep gets a fixer. The status is written once,
last, fenced on the build's resourceVersion.

Iterations and intake (docs/planning.md): when every task of an iteration ended and the build's MergeJobs and
fixers are done, the decider gets ``IterationEnded`` and plans the next iteration. For ``spec.planner.source``
``roadmap`` the plan is read from the roadmap file at the target tip (``controllers.intake``); for ``issues``
from the tracker (token from the Secret, in a thread; a rate limit is retried at its reset). Tasks of an earlier
iteration are not planned again. For an issue-driven build each issue's task gets a comment with its result when
it merged or failed for good (once: an annotation records it, and the tracker client skips a comment whose
marker is there already).

The reconciler keeps the build's decision and its status; three parts of it live in modules of their own, each an
object it owns: the sweeps and the reads of the target tip (``controllers/sweeping.py``), the finalization views
and carrying out ``core.finalization``'s decision (``controllers/finalizing.py``), and the intake from a roadmap or
a tracker with its comments on issues (``controllers/intake.py``). Side effects that are not writes to the API run
in threads in those parts, where their answer decides what comes next: reading the roadmap at the target tip,
reading and commenting on the tracker, reading the target tip (``docs/controller.md``).

A BuildRequest with ``spec.intake`` is a standing intake: none of the above runs for it (no preflight, planner,
tasks or finalization); its reconcile is ``controllers/standing.py``'s, which polls the tracker and starts child
BuildRequests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, assert_never

from longshot import metrics, tracing
from longshot.api import conditions as cond
from longshot.api import handoff as ho
from longshot.api import keys, objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import cleanup as cleanupc
from longshot.controllers import context as ctxmod
from longshot.controllers import delegating, finalizing, intake, standing, sweeping
from longshot.controllers import executor as ex
from longshot.controllers import retention as retentionc
from longshot.core import builds, delivery, names, plan, tasks
from longshot.core import effects as fx
from longshot.core import mergejobs as mj
from longshot.core.effects import EmitEvent, SetCondition
from longshot.runtime import handoffs

log = logging.getLogger("longshot.builds")

SWEEP, FINAL = "sweep", "final"
MERGED_COUNT_ANNOTATION = keys.MERGED_COUNT
COMMENTED_ANNOTATION = keys.ISSUE_COMMENT
"""On an issue-driven task: the result already commented on the issue (``merged`` or ``failed``)."""
PREFLIGHT_RETRY = timedelta(seconds=60)
INTAKE_RETRY = timedelta(seconds=30)
"""When a failed read of the roadmap or tracker is tried again (a person's fix, or a passing outage)."""
MAX_COMMENTS = 10
"""Issue comments posted per reconcile; the rest wait for the next one."""


@dataclass
class _Checked:
    generation: int
    error: str | None
    at: datetime


INTAKE_SOURCES: Final = ("roadmap", "issues")
"""``spec.planner.source`` values whose plan the reconcile reads itself (``controllers.intake``), not a planner."""


@dataclass
class Pass:
    """One reconcile of a build as it goes through the stages: what was observed, the decider's state so far, and
    what is to be done. The status is written once, at the end, from ``state``, ``effects``, ``extra`` and
    ``counts``."""

    build: objects.BuildRequest
    now: datetime
    state: builds.BuildState
    ts: list[objects.AgentTask]
    """The build's tasks, as the cache has them at the start of the reconcile."""
    work: list[objects.AgentTask] = field(default_factory=list)
    """The tasks that count as the build's work (no gate, sweep or refused planner)."""
    events: list[builds.Event] = field(default_factory=list)
    """Observed, not decided yet (the first stages observe; ``plans`` decides them in order)."""
    effects: list[builds.Effect] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Status fields beyond the decider's (iterations, finalization's)."""
    counts: list[metrics.Increment] = field(default_factory=list)
    """Counted by the executor once the build's status write succeeded."""
    out: list[ex.Action] = field(default_factory=list)

    def decide(self, event: builds.Event) -> None:
        self.state, more, invalid = fx.fold(lambda s, e: builds.decide(s, e, now=self.now), self.state, [event])
        for err in invalid:
            log.error("%s", err)
        self.effects.extend(more)

    def creates(self) -> bool:
        """Whether this reconcile creates tasks (a planner, a plan's): they count from the next one on."""
        return any(isinstance(e, builds.CreatePlannerTask | builds.CreateTasks) for e in self.effects)


async def _timed(stage: str, work: Awaitable[list[ex.Action]]) -> list[ex.Action]:
    began = time.monotonic()
    try:
        return await work
    finally:
        metrics.observe_build_stage(stage, time.monotonic() - began)


TIP_READ_SECONDS: Final = 10.0
"""The periodic sweep's check of the target tip (is it a commit the gate tested?) is made at most this often."""


class BuildReconciler:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.checked: dict[cachemod.Key, _Checked] = {}
        self.sweeps = sweeping.Sweeps(ctx)
        self.final = finalizing.Finalizer(ctx, self.sweeps)
        self.intake = intake.Intake(ctx)
        self.standing = standing.Standing(ctx)

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        """The routes first (a standing intake, a build gone or being deleted, another replica's, the clean-up's
        finalizer), then the pipeline's stages in order (:data:`STAGES`), then the status write."""
        build = self.ctx.cache.builds.get(key)
        routed = await self._route(key, build)
        if routed is not None or build is None:
            return routed or []
        p = Pass(build, self.ctx.clock(), builds.BuildState.from_build(build), list(self.ctx.cache.tasks_of(key)))
        for name, stage in STAGES:
            began = time.monotonic()
            go_on = await stage(self, p)
            metrics.observe_build_stage(name, time.monotonic() - began)
            if not go_on:
                break
        began = time.monotonic()
        status = self._actions(build, p.state, p.effects, p.extra, p.now, p.counts)
        metrics.observe_build_stage("status", time.monotonic() - began)
        return [*p.out, *status]

    async def _route(self, key: cachemod.Key, build: objects.BuildRequest | None) -> list[ex.Action] | None:
        """The actions when the build is not the pipeline's (None: it is)."""
        if build is not None and build.spec.intake is not None:
            # a standing intake (spec.intake): never planned, worked or finalized; its children are builds of their
            # own (controllers/standing.py)
            if build.metadata.deleting or not self.ctx.owns_build(build):
                self.standing.forget(key)
                return []
            return await _timed("standing", self.standing.reconcile(build))
        self.standing.forget(key)
        if build is None or build.metadata.deleting:
            self.ctx.plans.pop(key, None)
            self.ctx.forget(key)
            self.checked.pop(key, None)
            self.intake.forget(key)
            self.sweeps.forget(key)
            return [] if build is None else await _timed("cleanup", cleanupc.reconcile(self.ctx, build))
        if not self.ctx.owns_build(build):
            return []
        if cleanupc.needs_work(build):  # the first reconcile puts the clean-up's finalizer on, and only that
            return await _timed("cleanup", cleanupc.reconcile(self.ctx, build))
        return None

    # --- the stages, in order: each returns whether the pipeline goes on ------------------------------------

    async def _network_policy(self, p: Pass) -> bool:
        ns = p.build.namespace
        if self.ctx.network_policy is not None and ns not in self.ctx.policed:
            p.out.append(ex.Call(self._police(ns), f"agent NetworkPolicy of {ns}"))
        return True

    async def _observe(self, p: Pass) -> bool:
        """First sight, ``spec.suspend``, the killswitch, the budget, dispatch's configuration error; the tasks
        that count as the build's work (not a refused planner's), read before any event is decided."""
        build, key = p.build, p.build.key
        refused = builds.refused_planners(_top_planners(p.ts), p.state.iteration, p.state.planner_task)
        p.work = [t for t in p.ts if cachemod.purpose(t) is None and t.name not in refused]
        if p.state.phase == builds.PENDING:
            p.events.append(builds.Created())
        p.events += [builds.SuspendChanged(build.spec.suspend), builds.Killswitch(self.ctx.killswitch),
                     builds.BudgetChanged(self.ctx.budget_spent(build)),
                     builds.DispatchChecked(self.ctx.dispatch_errors.get(key))]
        return True

    async def _preflight_stage(self, p: Pass) -> bool:
        if p.state.phase not in builds.DONE:
            p.events.append(builds.ConfigurationChecked(await self._preflight(p.build, p.now, p.out)))
        return True

    async def _plans_stage(self, p: Pass) -> bool:
        p.events.extend(await self._plans(p.build, p.state))
        if self.ctx.plans.get(p.build.key):  # more plans wait: the next reconcile takes the next one
            p.out.append(ex.Requeue(("BuildRequest", *p.build.key), p.now))
        for event in p.events:
            p.decide(event)
        p.events.clear()
        return True

    async def _retention(self, p: Pass) -> bool:
        p.out += retentionc.actions(self.ctx, p.build, p.ts)  # finished Pods beyond spec.retention
        return True

    async def _ledger_retention(self, p: Pass) -> bool:
        p.out += retentionc.ledger_actions(self.ctx, p.build, p.now)  # ledger entries beyond spec.retention.ledger
        return True

    async def _delegation(self, p: Pass) -> bool:
        p.out += delegating.actions(self.ctx, p.build, p.ts)  # children the workers asked for (spawn_task)
        return True

    async def _intake_stage(self, p: Pass) -> bool:
        if p.state.phase == builds.PLANNING and p.state.source in INTAKE_SOURCES:
            for event in await self.intake.intake(p.build, p.state, p.now, p.out):
                p.decide(event)
        if p.state.iteration:
            p.extra["iterations"] = self._iterations(p.build, p.ts, p.state.iteration)
        # the tasks being created count from the next reconcile on (their creation triggers it)
        return not p.creates()

    async def _tasks_stage(self, p: Pass) -> bool:
        p.decide(builds.TaskCountsChanged(self._counts(p.build, p.work)))
        p.decide(builds.IssuesChanged(self._issues(p.build, p.work)))
        return True

    async def _sweeps_stage(self, p: Pass) -> bool:
        if p.state.phase == builds.WORKING and not (p.state.suspended or p.state.halted):
            await self.sweeps.sweep(p.build, p.ts, p.now, p.out)
        return True

    async def _iteration_end(self, p: Pass) -> bool:
        """Every task of the iteration ended and the build's MergeJobs are done: the next iteration is planned. Its
        tasks (a planner, or those read from a roadmap or a tracker in this reconcile) are made, and their creation
        brings the next reconcile: no requeue. When nothing is made, the build is reconciled again at once."""
        s = p.state
        if not (s.phase == builds.WORKING and not s.planning_done and s.counts.all_terminal
                and self._drained(p.build, p.ts)):
            return True
        p.decide(builds.IterationEnded())
        if p.state.phase != builds.PLANNING:
            return True
        await self._intake_stage(p)
        if not p.creates():  # nothing to create (nothing left, or the source failed): the rest on its answer
            p.out.append(ex.Requeue(("BuildRequest", *p.build.key), p.now))
        return False

    async def _comments(self, p: Pass) -> bool:
        if p.state.source == "issues":
            await self.intake.comment(p.build, p.ts, p.now, p.out)
        return True

    async def _finalization(self, p: Pass) -> bool:
        early = self.final.early_sweep(p.build, p.ts, p.state, p.out)
        if p.state.phase in (builds.FINALIZING, builds.MERGING):
            for event in await self.final.finalize(p.build, p.ts, p.out, p.extra, p.counts, p.now, early):
                p.decide(event)
        return True

    def _police(self, namespace: str) -> Any:
        ensure = self.ctx.network_policy
        assert ensure is not None

        def run() -> None:
            ensure(namespace)
            self.ctx.policed.add(namespace)

        return run

    # --- observing ---------------------------------------------------------------------------------

    async def _preflight(self, build: objects.BuildRequest, now: datetime, out: list[ex.Action]) -> str | None:
        last = self.checked.get(build.key)
        if last is not None and last.generation == build.generation and (
                last.error is None or now - last.at < PREFLIGHT_RETRY):
            return last.error
        try:
            error = await asyncio.to_thread(self.ctx.preflight, self.ctx.kube, build)
        except Exception as e:  # the check itself could not run: not the spec's fault
            log.warning("configuration check of %s/%s failed: %s", build.namespace, build.name, e)
            error = last.error if last is not None else None
        self.checked[build.key] = _Checked(build.generation, error, now)
        if error:
            out.append(ex.Requeue(("BuildRequest", *build.key), now + PREFLIGHT_RETRY))
        return error

    async def _plans(self, build: objects.BuildRequest, state: builds.BuildState) -> list[builds.Event]:
        events: list[builds.Event] = []
        # one returned plan per reconcile: a 10,000-task build holds one plan's manifests at a time, and the next
        # plan is checked against the tasks this one created
        waiting = self.ctx.plans.get(build.key, [])
        stashed, rest = waiting[:1], waiting[1:]
        if rest:
            self.ctx.plans[build.key] = rest
        else:
            self.ctx.plans.pop(build.key, None)
        existing = {n for n in self.ctx.cache.tasks_by_build.get(build.key, ())} if stashed else set()
        for planner_name, planned, done in stashed:
            planner = self.ctx.cache.tasks.get((build.namespace, planner_name))
            if planner is None:
                continue
            ctx = plan.context_for(intake.wire(build), intake.wire(planner),
                                   existing | intake.names_in_namespace(self.ctx, build),
                                   total_tasks=len(self.ctx.cache.tasks_by_build.get(build.key, ())))
            events.append(builds.PlannerFinished(planned, ctx, done, planner=planner_name))
        planner = self.ctx.cache.tasks.get((build.namespace, state.planner_task or ""))
        if planner is not None and state.phase == builds.PLANNING and not stashed:
            last = planner.status.attempts[-1] if planner.status.attempts else None
            stopped = last is not None and last.failure_class in tasks.PERSON_FAILURES
            if planner.status.phase == tasks.FAILED and not stopped:  # a stop waits for a person, not a re-plan
                events.append(builds.PlanInvalid(sweeping.last_failure(planner)))
            elif planner.status.phase == tasks.CANCELLED:  # by a person (spec.cancel): no plan is coming
                events.append(builds.PlanInvalid(f"the planner task {planner.name} was cancelled (spec.cancel)"))
            elif planner.status.phase == tasks.SUCCEEDED:
                recovered = await self._recover_plan(build, planner)
                if recovered is not None:
                    events.append(recovered)
        return events

    async def _recover_plan(self, build: objects.BuildRequest, planner: objects.AgentTask) -> builds.Event | None:
        """The planner succeeded but its plan was not taken in (the operator restarted in between): read it
        again from its Pod, or re-plan when it is gone."""
        attempt = max((a.number for a in planner.status.attempts), default=0)
        pod = self.ctx.cache.pods.get((build.namespace, cachemod.pod_name(planner.name, attempt))) if attempt else None
        message = pod.termination_message() if pod is not None else None
        if message is None:
            return builds.PlanInvalid("the plan was lost before it was taken in (its Pod is gone); planning again")
        try:
            parsed = ho.parse_termination_message(message)
            if isinstance(parsed, ho.HandoffPointer):
                got = await asyncio.to_thread(handoffs.fetch, self.ctx.kube, intake.wire(build), parsed,
                                              guard=self.ctx.egress)
                if isinstance(got, ho.HandoffError):
                    raise got
                parsed = got
        except Exception as e:
            return builds.PlanInvalid(f"the plan could not be read again: {e}")
        names_now = set(self.ctx.cache.tasks_by_build.get(build.key, ())) | intake.names_in_namespace(self.ctx, build)
        mine = intake.planned_by(self.ctx, build, plan.iteration_of({"labels": planner.metadata.labels}))
        ctx = plan.context_for(intake.wire(build), intake.wire(planner), names_now - mine,
                               total_tasks=len(self.ctx.cache.tasks_by_build.get(build.key, ())) - len(mine))
        return builds.PlannerFinished(parsed.tasks, ctx, parsed.done, planner=planner.name)

    # --- intake: roadmap and issues ----------------------------------------------------------------

    # --- iterations --------------------------------------------------------------------------------

    def _drained(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]) -> bool:
        """Every MergeJob of the build is finished (merged, or no try will happen by itself)."""
        return all(j.finished for j in self.final.job_views(build, ts))

    def _iterations(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask],
                    iteration: int) -> list[dict[str, Any]]:
        """``status.iterations``: per iteration, its planned tasks, how many merged and how many failed."""
        stats = {n: {"number": n, "tasks": 0, "merged": 0, "failed": 0} for n in range(1, min(iteration, 20) + 1)}
        for t in ts:
            if plan.PLAN_NAME_ANNOTATION not in t.metadata.annotations or t.spec.role == "planner":
                continue
            n = plan.iteration_of({"labels": t.metadata.labels}) or 1
            if n not in stats:
                continue
            stats[n]["tasks"] += 1
            job = self.ctx.cache.job_of_task(t)
            if job is not None and self.ctx.delivered(job):
                stats[n]["merged"] += 1
            elif t.status.phase == tasks.FAILED:
                stats[n]["failed"] += 1
        return [stats[n] for n in sorted(stats)]

    def _counts(self, build: objects.BuildRequest, work: Sequence[objects.AgentTask]) -> builds.TaskCounts:
        blocked = stopped = 0
        for t in work:
            phase = t.status.phase or tasks.PENDING
            if phase in (tasks.PENDING, tasks.BACKOFF) and self.ctx.readiness(t, build)[0] == "blocked":
                blocked += 1
            last = t.status.attempts[-1] if t.status.attempts else None
            if phase == tasks.FAILED and last is not None and last.failure_class in tasks.PERSON_FAILURES:
                stopped += 1
        attempts = sum(t.status.attempts[-1].number for t in work if t.status.attempts)
        return builds.TaskCounts.from_phases((t.status.phase for t in work), blocked=blocked, stopped=stopped,
                                             attempts=attempts)

    def _issues(self, build: objects.BuildRequest, work: Sequence[objects.AgentTask]) -> tuple[builds.TaskIssue, ...]:
        out = [i for t in sorted(work, key=lambda t: t.name) if (i := self._task_issue(build, t)) is not None]
        out += [i for j in sorted(self.ctx.cache.jobs_of(build.key), key=lambda j: j.name)
                if (i := _job_issue(j)) is not None]
        return tuple(sorted(out, key=lambda i: ISSUE_ORDER[i.kind]))

    def _task_issue(self, build: objects.BuildRequest, t: objects.AgentTask) -> builds.TaskIssue | None:
        """Why ``t`` needs attention (stopped for a person, waiting for an answer, retrying, failed, blocked)."""
        phase = t.status.phase or tasks.PENDING
        last = t.status.attempts[-1] if t.status.attempts else None
        reason = (last.exit_reason or "") if last is not None else ""
        if phase == tasks.FAILED and last is not None and last.failure_class in tasks.PERSON_FAILURES:
            return builds.TaskIssue(t.name, "stopped", reason or str(last.failure_class))
        if phase == tasks.AWAITING_INPUT:
            return builds.TaskIssue(t.name, "awaiting", (t.status.question or "")[:500])
        if phase == tasks.BACKOFF and last is not None:
            return builds.TaskIssue(t.name, "retrying",
                                    f"attempt {last.number} failed ({last.failure_class}): {reason}")
        if phase == tasks.FAILED:
            return builds.TaskIssue(t.name, "failed", reason or "failed")
        if phase == tasks.PENDING:
            readiness, message = self.ctx.readiness(t, build)
            if readiness == "blocked":
                return builds.TaskIssue(t.name, "blocked", message)
        return None

    # --- sweeps ------------------------------------------------------------------------------------

    # --- finalization ------------------------------------------------------------------------------

    # --- acting ------------------------------------------------------------------------------------

    def _actions(self, build: objects.BuildRequest, state: builds.BuildState, effects: Sequence[builds.Effect],
                 extra: dict[str, Any], now: datetime, counts: Sequence[metrics.Increment] = ()) -> list[ex.Action]:
        ns, name = build.key
        out: list[ex.Action] = []
        counts = list(counts)
        conds, completion = self._apply(build, effects, now, out)
        jobs = list(self.ctx.cache.jobs_of(build.key))
        merged = delivery.merged_condition({j.name: self.ctx.delivered(j) for j in jobs})
        if merged is not None:
            ok, reason, message = merged
            conds, _ = cond.set_condition(conds, cond.MERGED, cond.TRUE if ok else cond.FALSE, reason, message,
                                          now=now)
        tokens, cost = self.ctx.usage(build)
        patch: dict[str, Any] = {**state.to_status(), **extra,
                                 "conditions": ex.stamp_generation(conds, build.generation),
                                 "observedGeneration": build.generation,
                                 "usage": {"tokens": tokens, "cost": cost},
                                 "merges": _merge_counts(jobs)}
        self._last_sweep(build, patch, counts)
        _times(build, state, completion, now, patch)
        spans = self._trace(build, conds, now, patch, out)
        if _unchanged(build, patch):
            return out
        out.append(ex.WriteStatus("BuildRequest", ns, name, build.metadata.resource_version, patch, tuple(counts),
                                  spans=spans))
        return out

    def _apply(self, build: objects.BuildRequest, effects: Sequence[builds.Effect], now: datetime,
               out: list[ex.Action]) -> tuple[list[dict[str, Any]], bool | None]:
        """The decider's effects: actions into ``out``; returns the conditions and the completion they set."""
        conds = cond.since_creation(ctxmod.conditions_of(build), build.metadata.creation_timestamp)
        completion: bool | None = None
        for e in effects:
            match e:
                case builds.CreatePlannerTask() | builds.CreateTasks():
                    # a new task is Pending with its conditions from its creation (the CRD's default status): one write
                    manifests = [e.manifest] if isinstance(e, builds.CreatePlannerTask) else e.manifests
                    out.extend(ex.CreateObject(m) for m in manifests)
                case builds.StartEarlySweep():
                    out.append(ex.CreateObject(self.sweeps.sweep_manifest(
                        build, names.child_name(build.name, f"final-i{e.iteration}"), FINAL, self.sweeps.merged(build),
                        iteration=e.iteration)))
                case SetCondition():
                    conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now)
                case EmitEvent():
                    out.append(ex.RecordEvent(build.ref(), e.type, e.reason, e.message))
                case builds.SetCompletion():
                    completion = e.done
                case _:
                    assert_never(e)
        return conds, completion

    def _last_sweep(self, build: objects.BuildRequest, patch: dict[str, Any], counts: list[metrics.Increment]) -> None:
        """``status.lastSweep``, and a count of a sweep that is new there."""
        last = self.sweeps.last_sweep(list(self.ctx.cache.tasks_of(build.key)))
        if last is None:
            return
        patch["lastSweep"] = {k: v for k, v in last.items() if v is not None}
        old = build.status.last_sweep
        if old is None or (old.time and timeutil.rfc3339(old.time)) != last.get("time"):
            counts.append(metrics.Increment(metrics.SWEEPS, labels=(
                ("result", "Passed" if last["result"] == "Passed" else "TestsFailed"),)))

    def _trace(self, build: objects.BuildRequest, conds: list[dict[str, Any]], now: datetime, patch: dict[str, Any],
               out: list[ex.Action]) -> tuple[tracing.SpanRecord, ...]:
        """Tracing: the build's trace ID, and its root span once Finalized is True or False."""
        if not tracing.enabled():
            return ()
        status = build.status
        patch["traceId"] = tracing.trace_id_hex(build.metadata.uid)
        if status.trace_id != patch["traceId"]:
            ui = self.ctx.settings.tracing_ui_base_url.rstrip("/")
            out.append(ex.RecordEvent(build.ref(), "Normal", "Traced", f"trace {patch['traceId']}" +
                                      (f": {ui}/{patch['traceId']}" if ui else "")))
        return tracing.build_records(
            build_uid=build.metadata.uid, build=build.name, namespace=build.namespace,
            created=build.metadata.creation_timestamp, now=now,
            before=cond.find(ctxmod.conditions_of(build), cond.FINALIZED), after=cond.find(conds, cond.FINALIZED),
            finalization_attempts=int(patch.get("finalizationAttempts") or status.finalization_attempts),
            usage=patch["usage"])


Stage = Callable[[BuildReconciler, Pass], Awaitable[bool]]
STAGES: Final[tuple[tuple[str, Stage], ...]] = (
    ("networkpolicy", BuildReconciler._network_policy),
    ("observe", BuildReconciler._observe),
    ("preflight", BuildReconciler._preflight_stage),
    ("plans", BuildReconciler._plans_stage),
    ("retention", BuildReconciler._retention),
    ("ledger", BuildReconciler._ledger_retention),
    ("delegation", BuildReconciler._delegation),
    ("intake", BuildReconciler._intake_stage),
    ("tasks", BuildReconciler._tasks_stage),
    ("sweeps", BuildReconciler._sweeps_stage),
    ("iteration", BuildReconciler._iteration_end),
    ("comments", BuildReconciler._comments),
    ("finalization", BuildReconciler._finalization),
)
"""The build's sub-reconcilers, in order (``longshot_build_stage_seconds{stage}``). A stage that returns False
ends the pipeline there: the build's status is written, and the rest waits for the next reconcile (that the
stage's own actions bring)."""
BUILD_STAGES: Final = ("standing", "cleanup", *(name for name, _ in STAGES), "status")


def _top_planners(ts: Sequence[objects.AgentTask]) -> list[builds.PlannerView]:
    """The build's own planner tasks (not a sub-planner, not planned by a plan)."""
    out = []
    for t in ts:
        if t.spec.role != "planner" or plan.PLAN_NAME_ANNOTATION in t.metadata.annotations:
            continue
        meta = {"labels": t.metadata.labels}
        created = t.metadata.creation_timestamp
        out.append(builds.PlannerView(name=t.name, iteration=plan.iteration_of(meta), replan=plan.replan_of(meta),
                                      created=timeutil.rfc3339(created) if created is not None else ""))
    return out


ISSUE_ORDER: Final = {"stopped": 0, "awaiting": 1, "approval": 1, "retrying": 2, "failed": 3, "blocked": 4, "forge": 5}


def _job_issue(j: objects.MergeJob) -> builds.TaskIssue | None:
    """Why MergeJob ``j`` waits for a person (an approval) or the forge (a pull request)."""
    if j.status.phase == mj.AWAITING_APPROVAL:
        return builds.TaskIssue(j.name, "approval", "waiting for spec.approved")
    if j.status.phase == mj.AWAITING_FORGE:
        pr = j.status.pull_request
        return builds.TaskIssue(j.name, "forge", (pr.url or "") if pr is not None else "")
    return None


def _times(build: objects.BuildRequest, state: builds.BuildState, completion: bool | None, now: datetime,
           patch: dict[str, Any]) -> None:
    """``startTime`` once; ``completionTime`` when the build completes, cleared when it reopens."""
    status = build.status
    if status.start_time is None:
        patch["startTime"] = timeutil.rfc3339(now)
    if completion is True and status.completion_time is None:
        patch["completionTime"] = timeutil.rfc3339(now)
    elif completion is False or (state.phase not in builds.DONE and status.completion_time is not None):
        patch["completionTime"] = None


def _merge_counts(jobs: Sequence[objects.MergeJob]) -> dict[str, int]:
    counts = {"queued": 0, "testing": 0, "merged": 0, "conflicted": 0, "failed": 0, "superseded": 0}
    for j in jobs:
        phase = (j.status.phase or mj.QUEUED).lower()
        counts[phase if phase in counts else "queued"] += 1
    return counts


def _unchanged(build: objects.BuildRequest, patch: dict[str, Any]) -> bool:
    current = build.status.model_dump(by_alias=True, mode="json")
    for k, v in patch.items():
        have = current.get(k)
        if k == "conditions":
            have = [{kk: vv for kk, vv in c.items() if vv is not None} for c in have or []]
        if isinstance(v, dict) and isinstance(have, dict):
            if any(have.get(kk) != vv for kk, vv in v.items()):
                return False
        elif have != v:
            return False
    return True
