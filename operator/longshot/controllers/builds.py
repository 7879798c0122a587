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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from longshot import metrics, tracing
from longshot.api import conditions as cond
from longshot.api import handoff as ho
from longshot.api import keys, objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import intake
from longshot.controllers import mergejobs as mjc
from longshot.controllers import mergequeue as mqc
from longshot.controllers import retention as retentionc
from longshot.core import builds, finalization, names, plan, tasks
from longshot.core import mergejobs as mj
from longshot.core import sweeps as sweepsc
from longshot.core.effects import EmitEvent, SetCondition
from longshot.runtime import handoffs, trackers
from longshot.vcs import speculate

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
class _Intake:
    iteration: int
    generation: int
    error: tuple[str, str] | None
    retry_at: datetime | None


@dataclass
class _Checked:
    generation: int
    error: str | None
    at: datetime


TIP_READ_SECONDS: Final = 10.0
"""The periodic sweep's check of the target tip (is it a commit the gate tested?) is made at most this often."""


class BuildReconciler:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.checked: dict[cachemod.Key, _Checked] = {}
        self.intakes: dict[cachemod.Key, _Intake] = {}
        self.comment_after: dict[cachemod.Key, datetime] = {}
        self.tip_read: dict[cachemod.Key, datetime] = {}
        self.tip_tested: dict[cachemod.Key, int] = {}
        """Per build: the branches merged when its target tip was found to be a commit its gate tested (covering
        the reconciler command): no periodic sweep until more merges (``core.sweeps.next_sweep``)."""

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        build = self.ctx.cache.builds.get(key)
        if build is None or build.metadata.deleting:
            self.ctx.plans.pop(key, None)
            self.ctx.forget(key)
            self.checked.pop(key, None)
            self.intakes.pop(key, None)
            self.comment_after.pop(key, None)
            self.tip_tested.pop(key, None)
            self.tip_read.pop(key, None)
            return []
        if not self.ctx.owns_build(build):
            return []
        now = self.ctx.clock()
        out_first: list[ex.Action] = []
        if self.ctx.network_policy is not None and build.namespace not in self.ctx.policed:
            out_first.append(ex.Call(self._police(build.namespace), f"agent NetworkPolicy of {build.namespace}"))
        state = builds.BuildState.from_build(build)
        events: list[builds.Event] = []
        out: list[ex.Action] = out_first
        if state.phase == builds.PENDING:
            events.append(builds.Created())
        events.append(builds.SuspendChanged(build.spec.suspend))
        events.append(builds.Killswitch(self.ctx.killswitch))
        events.append(builds.BudgetChanged(self.ctx.budget_spent(build)))
        events.append(builds.DispatchChecked(self.ctx.dispatch_errors.get(key)))
        if state.phase not in builds.DONE:
            events.append(builds.ConfigurationChecked(await self._preflight(build, now, out)))
        events.extend(await self._plans(build, state))
        if self.ctx.plans.get(key):  # more plans wait: the next reconcile takes the next one
            out.append(ex.Requeue(("BuildRequest", *key), now))
        ts = list(self.ctx.cache.tasks_of(key))
        out += retentionc.actions(self.ctx, build, ts)  # finished Pods beyond spec.retention
        refused = builds.refused_planners(_top_planners(ts), state.iteration, state.planner_task)
        work = [t for t in ts if cachemod.purpose(t) is None and t.name not in refused]

        effects: list[builds.Effect] = []
        extra: dict[str, Any] = {}
        counts: list[metrics.Increment] = []  # counted by the executor once the build's status write succeeded
        for event in events:
            state, more = self._decide(state, event, now)
            effects.extend(more)
        if state.phase == builds.PLANNING and state.source in ("roadmap", "issues"):
            for event in await self._intake(build, state, now, out):
                state, more = self._decide(state, event, now)
                effects.extend(more)
        if state.iteration:
            extra["iterations"] = self._iterations(build, ts, state.iteration)
        if any(isinstance(e, builds.CreatePlannerTask | builds.CreateTasks) for e in effects):
            # the tasks being created count from the next reconcile on (their creation triggers it)
            return [*out, *self._actions(build, state, effects, extra, now, counts)]
        for event in (builds.TaskCountsChanged(self._counts(build, work)),
                      builds.IssuesChanged(self._issues(build, work))):
            state, more = self._decide(state, event, now)
            effects.extend(more)
        if state.phase == builds.WORKING and not (state.suspended or state.halted):
            await self._sweep(build, ts, now, out)
        if state.phase == builds.WORKING and not state.planning_done and state.counts.all_terminal \
                and self._drained(build, ts):
            state, more = self._decide(state, builds.IterationEnded(), now)
            effects.extend(more)
            if state.phase == builds.PLANNING:
                out.append(ex.Requeue(("BuildRequest", *build.key), now))
        if state.source == "issues":
            await self._comment(build, ts, now, out)
        early = self._early_sweep(build, ts, state, out)
        if state.phase in (builds.FINALIZING, builds.MERGING):
            for event in await self._finalize(build, ts, out, extra, counts, now, early):
                state, more = self._decide(state, event, now)
                effects.extend(more)
        return [*out, *self._actions(build, state, effects, extra, now, counts)]

    def _police(self, namespace: str) -> Any:
        ensure = self.ctx.network_policy
        assert ensure is not None

        def run() -> None:
            ensure(namespace)
            self.ctx.policed.add(namespace)

        return run

    def _decide(self, state: builds.BuildState, event: builds.Event,
                now: datetime) -> tuple[builds.BuildState, list[builds.Effect]]:
        try:
            return builds.decide(state, event, now=now)
        except builds.InvalidTransition as e:
            log.error("%s", e)
            return state, []

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
            ctx = plan.context_for(_wire(build), _wire(planner), existing | _names_in_namespace(self.ctx, build),
                                   total_tasks=len(self.ctx.cache.tasks_by_build.get(build.key, ())))
            events.append(builds.PlannerFinished(planned, ctx, done))
        planner = self.ctx.cache.tasks.get((build.namespace, state.planner_task or ""))
        if planner is not None and state.phase == builds.PLANNING and not stashed:
            last = planner.status.attempts[-1] if planner.status.attempts else None
            stopped = last is not None and last.failure_class in tasks.PERSON_FAILURES
            if planner.status.phase == tasks.FAILED and not stopped:  # a stop waits for a person, not a re-plan
                events.append(builds.PlanInvalid(_last_failure(planner)))
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
                got = await asyncio.to_thread(handoffs.fetch, self.ctx.kube, _wire(build), parsed,
                                              guard=self.ctx.egress)
                if isinstance(got, ho.HandoffError):
                    raise got
                parsed = got
        except Exception as e:
            return builds.PlanInvalid(f"the plan could not be read again: {e}")
        names_now = set(self.ctx.cache.tasks_by_build.get(build.key, ())) | _names_in_namespace(self.ctx, build)
        mine = _planned_by(self.ctx, build, plan.iteration_of({"labels": planner.metadata.labels}))
        ctx = plan.context_for(_wire(build), _wire(planner), names_now - mine,
                               total_tasks=len(self.ctx.cache.tasks_by_build.get(build.key, ())) - len(mine))
        return builds.PlannerFinished(parsed.tasks, ctx, parsed.done)

    # --- intake: roadmap and issues ----------------------------------------------------------------

    async def _intake(self, build: objects.BuildRequest, state: builds.BuildState, now: datetime,
                      out: list[ex.Action]) -> list[builds.Event]:
        """The plan of this iteration from the roadmap file or the issue tracker, or why it could not be read."""
        memo = self.intakes.get(build.key)
        if memo is not None and memo.iteration == state.iteration and memo.generation == build.generation \
                and memo.retry_at is not None and now < memo.retry_at:
            out.append(ex.Requeue(("BuildRequest", *build.key), memo.retry_at))
            return [builds.IntakeChecked(memo.error)]
        try:
            if state.source == "roadmap":
                w = await self.ctx.workspaces.get(build)
                planned = await asyncio.to_thread(intake.read_roadmap, w, build.spec.repository.base_branch,
                                                  build.spec.planner.roadmap_path)
            else:
                planned = await asyncio.to_thread(intake.read_issues, self.ctx.kube, build, guard=self.ctx.egress)
        except intake.IntakeError as e:
            retry_at = e.retry_at or now + INTAKE_RETRY
            self.intakes[build.key] = _Intake(state.iteration, build.generation, (e.failure_class, e.message),
                                              retry_at)
            out.append(ex.Requeue(("BuildRequest", *build.key), retry_at))
            log.warning("intake of %s/%s failed: %s", build.namespace, build.name, e.message)
            return [builds.IntakeChecked((e.failure_class, e.message))]
        self.intakes[build.key] = _Intake(state.iteration, build.generation, None, None)
        mine = {t.name: t for t in self.ctx.cache.tasks_of(build.key)}
        current = _planned_by(self.ctx, build, state.iteration)
        base = plan.context_for(_wire(build))
        earlier = {n for n, t in mine.items()
                   if n not in current and plan.PLAN_NAME_ANNOTATION in t.metadata.annotations}
        # what an earlier iteration attempted is not planned again (its merged work is on the target; a failed
        # one stays failed until someone retries it); dependencies on it are dropped
        fresh = [t for t in planned if plan.task_name(base, t.name) not in earlier]
        kept = {t.name for t in fresh}
        fresh = [t.model_copy(update={"depends_on": [d for d in t.depends_on if d in kept]}) for t in fresh]
        ctx = plan.context_for(_wire(build), None, _names_in_namespace(self.ctx, build) - current,
                               total_tasks=len(mine) - len(current))
        ctx = dataclasses.replace(ctx, iteration=max(1, state.iteration))
        return [builds.IntakeChecked(None), builds.PlannerFinished(fresh, ctx)]

    async def _comment(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], now: datetime,
                       out: list[ex.Action]) -> None:
        """Comment each issue whose task merged or failed for good, once."""
        source = build.spec.planner.issues
        after = self.comment_after.get(build.key)
        if source is None or not source.comment or (after is not None and now < after):
            return
        posts: list[tuple[int, str, str]] = []
        results: dict[int, tuple[str, str]] = {}
        for t in sorted(ts, key=lambda t: t.name):
            local = t.metadata.annotations.get(plan.PLAN_NAME_ANNOTATION)
            number = trackers.issue_number(local) if local else None
            if number is None or t.spec.parent_task or COMMENTED_ANNOTATION in t.metadata.annotations:
                continue
            result = self._issue_result(build, t)
            if result is None:
                continue
            merged, body = result
            posts.append((number, body, f"{build.name}/{t.name}"))
            results[number] = (t.name, "merged" if merged else "failed")
            if len(posts) >= MAX_COMMENTS:
                out.append(ex.Requeue(("BuildRequest", *build.key), now + timedelta(seconds=1)))
                break
        if not posts:
            return
        try:
            done = await asyncio.to_thread(intake.comment, self.ctx.kube, build, posts, guard=self.ctx.egress)
        except intake.IntakeError as e:
            done = e.done
            retry_at = e.retry_at or now + INTAKE_RETRY
            self.comment_after[build.key] = retry_at
            out.append(ex.Requeue(("BuildRequest", *build.key), retry_at))
            out.append(ex.RecordEvent(build.ref(), "Warning", "IssueCommentFailed", e.message[:1024]))
        for number in done:
            name, what = results[number]
            out.append(ex.PatchObject("AgentTask", build.namespace, name,
                                      {"metadata": {"annotations": {COMMENTED_ANNOTATION: what}}}))

    def _issue_result(self, build: objects.BuildRequest, t: objects.AgentTask) -> tuple[bool, str] | None:
        """``(merged, comment)`` once the task's result is final, else None."""
        job = self.ctx.cache.jobs.get(t.key)
        handoff = t.status.handoff
        summary = handoff.summary if handoff is not None else ""
        if job is not None and self.ctx.delivered(job):
            return True, trackers.result_comment(build=build.name, task=t.name, merged=True,
                                                 commit=job.status.merged_commit, summary=summary)
        last = t.status.attempts[-1] if t.status.attempts else None
        reason = ""
        if t.status.phase == tasks.FAILED and not (last is not None and last.failure_class in tasks.PERSON_FAILURES):
            reason = _last_failure(t) or "the task failed"
        elif t.status.phase == tasks.CANCELLED:
            reason = "the task was cancelled"
        elif job is not None and self.ctx.undeliverable(job):
            ready = cond.find(ctxmod.conditions_of(job), cond.READY) or {}
            reason = f"its branch could not be merged: {ready.get('message') or job.status.phase}"
        elif t.status.phase == tasks.SUCCEEDED and (handoff is None or not handoff.commit):
            reason = "the agent changed nothing"
        if not reason:
            return None
        return False, trackers.result_comment(build=build.name, task=t.name, merged=False, reason=reason[:2000],
                                              summary=summary)

    # --- iterations --------------------------------------------------------------------------------

    def _drained(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]) -> bool:
        """Every MergeJob of the build is finished (merged, or no try will happen by itself)."""
        return all(j.finished for j in self._job_views(build, ts))

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
            job = self.ctx.cache.jobs.get(t.key)
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
        return builds.TaskCounts.from_phases((t.status.phase for t in work), blocked=blocked, stopped=stopped)

    def _issues(self, build: objects.BuildRequest, work: Sequence[objects.AgentTask]) -> tuple[builds.TaskIssue, ...]:
        out: list[builds.TaskIssue] = []
        for t in sorted(work, key=lambda t: t.name):
            phase = t.status.phase or tasks.PENDING
            last = t.status.attempts[-1] if t.status.attempts else None
            reason = (last.exit_reason or "") if last is not None else ""
            if phase == tasks.FAILED and last is not None and last.failure_class in tasks.PERSON_FAILURES:
                out.append(builds.TaskIssue(t.name, "stopped", reason or str(last.failure_class)))
            elif phase == tasks.AWAITING_INPUT:
                out.append(builds.TaskIssue(t.name, "awaiting", (t.status.question or "")[:500]))
            elif phase == tasks.BACKOFF and last is not None:
                out.append(builds.TaskIssue(t.name, "retrying", f"attempt {last.number} failed "
                                                                f"({last.failure_class}): {reason}"))
            elif phase == tasks.FAILED:
                out.append(builds.TaskIssue(t.name, "failed", reason or "failed"))
            elif phase in (tasks.PENDING,) and self.ctx.readiness(t, build)[0] == "blocked":
                out.append(builds.TaskIssue(t.name, "blocked", self.ctx.readiness(t, build)[1]))
        for j in sorted(self.ctx.cache.jobs_of(build.key), key=lambda j: j.name):
            if j.status.phase == mj.AWAITING_APPROVAL:
                out.append(builds.TaskIssue(j.name, "approval", "waiting for spec.approved"))
        order = {"stopped": 0, "awaiting": 1, "approval": 1, "retrying": 2, "failed": 3, "blocked": 4}
        return tuple(sorted(out, key=lambda i: order[i.kind]))

    # --- sweeps ------------------------------------------------------------------------------------

    def _sweeps(self, ts: Sequence[objects.AgentTask], kind: str) -> list[objects.AgentTask]:
        return sorted((t for t in ts if cachemod.purpose(t) == kind),
                      key=lambda t: t.metadata.creation_timestamp or timeutil.EPOCH)

    def last_sweep(self, ts: Sequence[objects.AgentTask]) -> dict[str, Any] | None:
        adopted = [t for t in self._sweeps(ts, mqc.GATE) if keys.FINAL_ATTEMPT in t.metadata.annotations]
        done = [t for t in self._sweeps(ts, SWEEP) + self._sweeps(ts, FINAL) + adopted
                if t.status.phase in tasks.TERMINAL and t.status.phase != tasks.CANCELLED]  # cancelled: no result
        if not done:
            return None
        t = max(done, key=lambda t: _ended(t) or timeutil.EPOCH)
        passed = _sweep_passed(t)
        ended = _ended(t)
        return {"result": "Passed" if passed else "Failed", "time": timeutil.rfc3339(ended) if ended else None,
                "message": None if passed else _sweep_output(t)[-4096:],
                "commit": (t.status.handoff.commit if t.status.handoff is not None else None)}

    async def _sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], now: datetime,
                     out: list[ex.Action]) -> None:
        """The periodic sweep: decided by ``core.sweeps.next_sweep``. When it would start one, the target tip is
        read first: a tip the build's gate tested with the reconciler's command needs no sweep (it is remembered
        until the next merge, so the tip is read once per move of the target, not once per reconcile)."""
        merged = self._merged(build)
        sweeps = self._sweeps(ts, SWEEP)
        views = [sweepsc.SweepView(
            name=t.name, finished=t.status.phase in tasks.TERMINAL, passed=_sweep_passed(t),
            merged_at_start=cachemod.merged_count(t), ended=_ended(t),
            fixer_exists=(build.namespace, names.child_name(t.name, "fix")) in self.ctx.cache.tasks)
            for t in sweeps]
        settings = self._sweep_settings(build)
        decision = sweepsc.next_sweep(views, merged, settings, now, tip_tested_at=self.tip_tested.get(build.key))
        gates = self._covering_gates(build, ts, landed_only=False) if isinstance(decision, sweepsc.Start) else []
        if gates:
            # a batch's MergeJobs are marked Merged one write at a time: read the tip at most every few seconds
            # (a sweep waits that long at most) rather than at each of those writes
            read = self.tip_read.get(build.key)
            if read is not None and now < read + timedelta(seconds=TIP_READ_SECONDS):
                out.append(ex.Requeue(("BuildRequest", *build.key), read + timedelta(seconds=TIP_READ_SECONDS)))
                return
            self.tip_read[build.key] = now
            if await self._head_tested(build, gates, locked=False) is not None:
                self.tip_tested[build.key] = merged
                decision = sweepsc.next_sweep(views, merged, settings, now, tip_tested_at=merged)
        if isinstance(decision, sweepsc.WaitUntil):
            out.append(ex.Requeue(("BuildRequest", *build.key), decision.at))
        elif isinstance(decision, sweepsc.Start):
            name = names.child_name(build.name, f"sweep-{decision.number}")
            out.append(ex.CreateObject(self._sweep_manifest(build, name, SWEEP, decision.merged)))
            if decision.fix is not None:
                last = sweeps[-1]
                out.append(self._fixer_of(build, last, _sweep_output(last)))

    def _sweep_manifest(self, build: objects.BuildRequest, name: str, kind: str, merged: int,
                        iteration: int | None = None) -> dict[str, Any]:
        command = build.spec.reconciler.command
        base = build.spec.repository.base_branch
        annotations = {MERGED_COUNT_ANNOTATION: str(merged)}
        if iteration is not None:  # an early final sweep (core.builds.StartEarlySweep)
            annotations[keys.SWEEP_ITERATION] = str(iteration)
        m = mqc.tester_manifest(build, name, branch=base, command=command, purpose=kind, priority=9,
                                annotations=annotations,
                                description=f"Sweep: run `{command}` on {base} and report whether it passes.")
        return m

    def _sweep_fixer(self, build: objects.BuildRequest, sweep: objects.AgentTask, output: str,
                     out: list[ex.Action]) -> bool:
        """A fixer for the failed final sweep ``sweep``, when ``core.sweeps.may_fix`` allows one."""
        exists = (build.namespace, names.child_name(sweep.name, "fix")) in self.ctx.cache.tasks
        if not sweepsc.may_fix(self._sweep_settings(build), exists):
            return False
        out.append(self._fixer_of(build, sweep, output))
        return True

    def _sweep_settings(self, build: objects.BuildRequest) -> sweepsc.Settings:
        rec = build.spec.reconciler
        return sweepsc.Settings(
            enabled=rec.enabled, interval_seconds=rec.interval_seconds, max_fixers_per_sweep=rec.max_fixers_per_sweep,
            fixers_left=max(0, build.spec.merge.max_fixers - self.ctx.views(build.key).fixers))

    def _fixer_of(self, build: objects.BuildRequest, sweep: objects.AgentTask, output: str) -> ex.CreateObject:
        name = names.child_name(sweep.name, "fix")
        base = build.spec.repository.base_branch
        command = build.spec.reconciler.command
        return ex.CreateObject(mjc.fixer_manifest(
            build, name, branch=names.task_branch(build.namespace, build.name, name), scope=(), priority=9,
            fix_depth=1, fixes=sweep.name,
            description=(f"`{command}` fails on {base}:\n```\n{output[-3000:]}\n```\nFind the cause and fix it on "
                         "your branch; the tests must pass.")))

    # --- finalization ------------------------------------------------------------------------------

    def _merged(self, build: objects.BuildRequest) -> int:
        return sum(1 for j in self.ctx.cache.jobs_of(build.key) if j.status.phase == mj.MERGED)

    def _early_sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], state: builds.BuildState,
                     out: list[ex.Action]) -> objects.AgentTask | None:
        """The early final sweep that still tests the tip the build ends with (``core.sweeps.early_sweep_kept``), if
        any and not adopted yet; every other early sweep still running is cancelled."""
        if state.iteration < 2:  # early sweeps begin with the second iteration: no scan of a one-plan build's tasks
            return None
        kept: objects.AgentTask | None = None
        merged: int | None = None
        for t in self._sweeps(ts, FINAL):
            raw = t.metadata.annotations.get(keys.SWEEP_ITERATION)
            if raw is None or not raw.isdigit():
                continue  # a final sweep of an attempt
            if merged is None:
                merged = self._merged(build)
            view = sweepsc.EarlySweep(name=t.name, iteration=int(raw), merged_at_start=cachemod.merged_count(t),
                                      adopted=keys.FINAL_ATTEMPT in t.metadata.annotations)
            if sweepsc.early_sweep_kept(view, iteration=state.iteration, planning=state.phase == builds.PLANNING,
                                        request_met=state.request_met,
                                        attempt=build.status.finalization_attempts, merged=merged):
                if not view.adopted and t.status.phase != tasks.CANCELLED and not t.spec.cancel:
                    kept = t
            elif t.status.phase not in tasks.TERMINAL and not t.spec.cancel:
                out.append(ex.PatchObject("AgentTask", build.namespace, t.name, {"spec": {"cancel": True}}))
        return kept

    def _final_sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask],
                     attempt: int) -> objects.AgentTask | None:
        """The final sweep of ``attempt``: ``<build>-final-<attempt>``, or the early sweep that attempt adopted."""
        if not attempt:
            return None
        final = self.ctx.cache.tasks.get((build.namespace, names.child_name(build.name, f"final-{attempt}")))
        if final is None:  # an adopted early sweep or gate run
            final = next((t for t in self._sweeps(ts, FINAL) + self._sweeps(ts, mqc.GATE)
                          if t.metadata.annotations.get(keys.FINAL_ATTEMPT) == str(attempt)), None)
        return final

    async def _finalize(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], out: list[ex.Action],
                        extra: dict[str, Any], counts: list[metrics.Increment], now: datetime,
                        early: objects.AgentTask | None = None) -> list[builds.Event]:
        spec = build.spec
        attempt = build.status.finalization_attempts
        final = self._final_sweep(build, ts, attempt)
        snapshot = finalization.Snapshot(
            build=build.name, enabled=spec.finalization.enabled, attempt=attempt,
            max_attempts=spec.finalization.max_attempts, tasks=self._task_views(build, ts),
            jobs=self._job_views(build, ts),
            final_sweep=None if final is None else _sweep_view(final),
            early_sweep=None if early is None or attempt else _sweep_view(early),
            sweep_fixers_left=max(0, spec.merge.max_fixers - self.ctx.views(build.key).fixers))
        decided = finalization.decide(snapshot)
        if any(isinstance(e, finalization.StartFinalSweep) for e in decided) and not attempt and \
                not any(isinstance(e, finalization.RequeueJobs) for e in decided):
            # the first final sweep would run: unless a gate already ran its command on the tip (read only now)
            tested = await self._tested_tip(build, ts)
            if tested is not None:
                decided = finalization.decide(dataclasses.replace(snapshot, tested_tip=_sweep_view(tested)))
        events: list[builds.Event] = []
        for e in decided:
            if isinstance(e, finalization.BeginAttempt):
                extra["finalizationAttempts"] = e.attempt
                counts.append(metrics.Increment(metrics.FINALIZATION_ATTEMPTS))
                events.append(builds.FinalizationStarted(e.attempt, spec.finalization.max_attempts))
            elif isinstance(e, finalization.RequeueJobs):
                for n in e.names:
                    job = self.ctx.cache.jobs.get((build.namespace, n))
                    if job is None:
                        continue
                    st, effs = mjc.decide(job, mjc.job_state(self.ctx, job, build),
                                          [mj.Retry(f"finalization attempt {extra.get('finalizationAttempts')} "
                                                    "tries it again")], now)
                    out += mjc.actions(job, build, st, effs, now, cachemod.queue_name(build,
                                                                                      job.spec.target))
            elif isinstance(e, finalization.StartFinalSweep):
                out.append(ex.CreateObject(self._sweep_manifest(
                    build, names.child_name(build.name, f"final-{e.attempt}"), FINAL, self._merged(build))))
            elif isinstance(e, finalization.AdoptEarlySweep):
                out.append(ex.PatchObject("AgentTask", build.namespace, e.sweep, {
                    "metadata": {"annotations": {keys.FINAL_ATTEMPT: str(e.attempt)}}}))
            elif isinstance(e, finalization.FixFailingSweep):
                sweep = self.ctx.cache.tasks.get((build.namespace, e.sweep))
                if sweep is not None:
                    self._sweep_fixer(build, sweep, e.message, out)
            elif isinstance(e, finalization.Finish):
                counts.append(metrics.Increment(metrics.FINALIZATIONS, labels=(("outcome", e.reason),)))
                events.append(builds.Finished(e.passed, e.reason, e.message, e.attempt))
        return events

    async def _tested_tip(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                          ) -> objects.AgentTask | None:
        """The build's passed quality-gate run on the commit the target tip is now, when its gate covers the
        reconciler command (``core.sweeps.gate_covers``): the merge queue landed exactly that commit. None when
        there is none, or the tip cannot be read now (the final sweep then runs)."""
        return await self._head_tested(build, self._covering_gates(build, ts), locked=True)

    def _covering_gates(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], *,
                        landed_only: bool = True) -> list[objects.AgentTask]:
        """The build's passed quality-gate runs whose command covers the reconciler command, on a commit the queue
        landed (``landed_only``; the periodic sweep takes any: the tip is compared with each after a batch's
        landing, while its MergeJobs are still being marked Merged one by one). Empty without workspaces."""
        if self.ctx.workspaces is None or not sweepsc.gate_covers(mjc.gate_parts(build),
                                                                  build.spec.reconciler.command):
            return []
        landed = {j.status.merged_commit for j in self.ctx.cache.jobs_of(build.key)
                  if j.status.phase == mj.MERGED and j.status.merged_commit} if landed_only else set()
        command = mjc.gate_command(build)  # what the gate runs now, and what each run ran (its annotation)
        return [t for t in ts if cachemod.purpose(t) == mqc.GATE and _sweep_passed(t)
                and t.metadata.annotations.get(keys.TEST_COMMAND) == command
                and t.status.handoff is not None and (not landed_only or t.status.handoff.commit in landed)]

    async def _head_tested(self, build: objects.BuildRequest, gates: Sequence[objects.AgentTask], *,
                           locked: bool) -> objects.AgentTask | None:
        """The one of ``gates`` that tested the commit the target tip is now (read now), or None (also when the tip
        cannot be read). ``locked=False`` asks the server (``ls-remote``) instead of fetching in the workspace: the
        build reconcile does not wait for the merge queue's git work there."""
        if not gates:
            return None
        try:
            w = await self.ctx.workspaces.get(build)
            read = speculate.head_of if locked else speculate.remote_head
            head = await asyncio.to_thread(read, w, build.spec.repository.base_branch)
        except Exception as e:  # the sweep runs instead
            log.info("the tip of %s for %s/%s could not be read: %s", build.spec.repository.base_branch,
                     build.namespace, build.name, e)
            return None
        return next((t for t in gates if t.status.handoff is not None and t.status.handoff.commit == head), None)

    def _task_views(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                    ) -> tuple[finalization.TaskView, ...]:
        out = []
        for t in ts:
            if cachemod.purpose(t) is not None or (t.spec.role == "planner"
                                                   and plan.PLAN_NAME_ANNOTATION not in t.metadata.annotations):
                continue
            readiness, why = self.ctx.readiness(t, build) if t.status.phase in (None, tasks.PENDING) else ("", "")
            out.append(finalization.TaskView(
                name=t.name, phase=t.status.phase or tasks.PENDING, role=t.spec.role, failure=_last_failure(t),
                blocked=why if readiness == "blocked" else "",
                fixes=t.metadata.annotations.get(cachemod.FIXES_ANNOTATION)))
        return tuple(out)

    def _job_views(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                   ) -> tuple[finalization.JobView, ...]:
        out: list[finalization.JobView] = []
        jobs = {j.name: j for j in self.ctx.cache.jobs_of(build.key)}
        for j in jobs.values():
            delivered = self.ctx.delivered(j)
            terminal = ctxmod.job_terminal(j)
            undeliverable = self.ctx.undeliverable(j)
            fixer = j.status.fixer
            finished = delivered or (terminal and (not fixer or undeliverable))
            ready = cond.find(ctxmod.conditions_of(j), cond.READY) or {}
            out.append(finalization.JobView(
                name=j.name, phase=j.status.phase or mj.QUEUED, finished=finished, delivered=delivered,
                carried_by=fixer if fixer and not undeliverable else None,
                retryable=finished and not delivered and j.status.checks != "failed",
                message=str(ready.get("message") or "")))
        for t in ts:
            if cachemod.purpose(t) is not None:
                continue  # a best-of-N candidate: only its task's winner is merged
            if t.spec.role in tasks.MERGING_ROLES and t.status.phase == tasks.SUCCEEDED and t.name not in jobs \
                    and t.status.handoff is not None and t.status.handoff.commit:
                out.append(finalization.JobView(t.name, "Missing"))
        return tuple(out)

    # --- acting ------------------------------------------------------------------------------------

    def _actions(self, build: objects.BuildRequest, state: builds.BuildState, effects: Sequence[builds.Effect],
                 extra: dict[str, Any], now: datetime, counts: Sequence[metrics.Increment] = ()) -> list[ex.Action]:
        ns, name = build.key
        status = build.status
        conds = cond.since_creation(ctxmod.conditions_of(build), build.metadata.creation_timestamp)
        out: list[ex.Action] = []
        counts = list(counts)
        completion: bool | None = None
        for e in effects:
            if isinstance(e, builds.CreatePlannerTask | builds.CreateTasks):
                # a new task is Pending with its conditions from its creation (the CRD's default status): one write
                manifests = [e.manifest] if isinstance(e, builds.CreatePlannerTask) else e.manifests
                out.extend(ex.CreateObject(m) for m in manifests)
            elif isinstance(e, builds.StartEarlySweep):
                out.append(ex.CreateObject(self._sweep_manifest(
                    build, names.child_name(build.name, f"final-i{e.iteration}"), FINAL, self._merged(build),
                    iteration=e.iteration)))
            elif isinstance(e, SetCondition):
                conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now)
            elif isinstance(e, EmitEvent):
                out.append(ex.RecordEvent(build.ref(), e.type, e.reason, e.message))
            elif isinstance(e, builds.SetCompletion):
                completion = e.done
        jobs = list(self.ctx.cache.jobs_of(build.key))
        if jobs:
            pending = sorted(j.name for j in jobs if not self.ctx.delivered(j))
            conds, _ = cond.set_condition(
                conds, cond.MERGED, cond.FALSE if pending else cond.TRUE,
                "BranchesPending" if pending else "AllMerged",
                f"not merged yet: {', '.join(pending[:10])}" if pending else f"{len(jobs)} branches merged", now=now)
        tokens, cost = self.ctx.usage(build)
        patch: dict[str, Any] = {**state.to_status(), **extra,
                                 "conditions": ex.stamp_generation(conds, build.generation),
                                 "observedGeneration": build.generation,
                                 "usage": {"tokens": tokens, "cost": cost},
                                 "merges": _merge_counts(jobs)}
        ts = list(self.ctx.cache.tasks_of(build.key))
        last = self.last_sweep(ts)
        if last is not None:
            patch["lastSweep"] = {k: v for k, v in last.items() if v is not None}
            old = status.last_sweep
            if old is None or (old.time and timeutil.rfc3339(old.time)) != last.get("time"):
                counts.append(metrics.Increment(metrics.SWEEPS, labels=(
                    ("result", "Passed" if last["result"] == "Passed" else "TestsFailed"),)))
        if status.start_time is None:
            patch["startTime"] = timeutil.rfc3339(now)
        if completion is True and status.completion_time is None:
            patch["completionTime"] = timeutil.rfc3339(now)
        elif completion is False or (state.phase not in builds.DONE and status.completion_time is not None):
            patch["completionTime"] = None
        spans: tuple[tracing.SpanRecord, ...] = ()
        if tracing.enabled():  # tracing: the build's trace ID, and its root span once Finalized is True or False
            patch["traceId"] = tracing.trace_id_hex(build.metadata.uid)
            if status.trace_id != patch["traceId"]:
                ui = self.ctx.settings.tracing_ui_base_url.rstrip("/")
                out.append(ex.RecordEvent(build.ref(), "Normal", "Traced", f"trace {patch['traceId']}" +
                                          (f": {ui}/{patch['traceId']}" if ui else "")))
            spans = tracing.build_records(
                build_uid=build.metadata.uid, build=name, namespace=ns, created=build.metadata.creation_timestamp,
                now=now, before=cond.find(ctxmod.conditions_of(build), cond.FINALIZED),
                after=cond.find(conds, cond.FINALIZED), finalization_attempts=int(
                    patch.get("finalizationAttempts") or status.finalization_attempts), usage=patch["usage"])
        if _unchanged(build, patch):
            return out
        out.append(ex.WriteStatus("BuildRequest", ns, name, build.metadata.resource_version, patch, tuple(counts),
                                  spans=spans))
        return out


def _wire(obj: objects.Resource) -> dict[str, Any]:
    out: dict[str, Any] = obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


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


def _names_in_namespace(ctx: ctxmod.Context, build: objects.BuildRequest) -> set[str]:
    return {n for (ns, n) in ctx.cache.tasks if ns == build.namespace}


def _planned_by(ctx: ctxmod.Context, build: objects.BuildRequest, iteration: int) -> set[str]:
    """Tasks of the build's top-level plan of ``iteration`` (they exist when a plan was taken in before a
    restart)."""
    it = str(max(1, iteration))
    return {t.name for t in ctx.cache.tasks_of(build.key)
            if plan.PLAN_NAME_ANNOTATION in t.metadata.annotations and not t.spec.parent_task
            and t.metadata.labels.get(plan.ITERATION_LABEL, "1") == it}


def _last_failure(t: objects.AgentTask) -> str:
    last = t.status.attempts[-1] if t.status.attempts else None
    if last is not None and last.exit_reason and last.failure_class:
        return last.exit_reason
    succeeded = cond.find(ctxmod.conditions_of(t), cond.SUCCEEDED)
    return str((succeeded or {}).get("message") or "") if t.status.phase == tasks.FAILED else ""


def _ended(t: objects.AgentTask | None) -> datetime | None:
    if t is None or not t.status.attempts:
        return None
    return t.status.attempts[-1].end_time


def _sweep_view(t: objects.AgentTask) -> finalization.SweepView:
    return finalization.SweepView(t.name, t.status.phase in tasks.TERMINAL, _sweep_passed(t), _sweep_output(t))


def _sweep_passed(t: objects.AgentTask) -> bool:
    return t.status.phase == tasks.SUCCEEDED and t.status.handoff is not None and t.status.handoff.verdict == "passed"


def _sweep_output(t: objects.AgentTask) -> str:
    h = t.status.handoff
    if h is not None and (h.reasons or h.summary):
        return "\n".join(h.reasons[-2:]) or h.summary
    return _last_failure(t) or f"sweep {t.status.phase}"


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
