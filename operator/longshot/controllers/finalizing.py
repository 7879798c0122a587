"""The build's finalization: the views of its tasks and MergeJobs that ``core.finalization`` decides on, the early
final sweep that runs beside the last planner, and carrying out the decision (attempts, MergeJobs tried again, the
final sweep and its fixer, the outcome). Part of the BuildRequest reconciler (``controllers/builds.py``), which owns
one :class:`Finalizer`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from longshot import metrics
from longshot.api import conditions as cond
from longshot.api import keys, objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import sweeping
from longshot.core import builds, delivery, finalization, manifests, names, plan, tasks
from longshot.core import mergejobs as mj
from longshot.core import sweeps as sweepsc

FINAL = sweeping.FINAL


class Finalizer:
    def __init__(self, ctx: ctxmod.Context, sweeps: sweeping.Sweeps) -> None:
        self.ctx = ctx
        self.sweeps = sweeps

    def early_sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], state: builds.BuildState,
                     out: list[ex.Action]) -> objects.AgentTask | None:
        """The early final sweep that still tests the tip the build ends with (``core.sweeps.early_sweep_kept``), if
        any and not adopted yet; every other early sweep still running is cancelled."""
        if state.iteration < 2:  # early sweeps begin with the second iteration: no scan of a one-plan build's tasks
            return None
        kept: objects.AgentTask | None = None
        merged: int | None = None
        for t in self.sweeps.of_kind(ts, FINAL):
            raw = t.metadata.annotations.get(keys.SWEEP_ITERATION)
            if raw is None or not raw.isdigit():
                continue  # a final sweep of an attempt
            if merged is None:
                merged = self.sweeps.merged(build)
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

    def final_sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask],
                     attempt: int) -> objects.AgentTask | None:
        """The final sweep of ``attempt``: ``<build>-final-<attempt>``, or the early sweep that attempt adopted."""
        if not attempt:
            return None
        final = self.ctx.cache.tasks.get((build.namespace, names.child_name(build.name, f"final-{attempt}")))
        if final is None:  # an adopted early sweep or gate run
            final = next((t for t in self.sweeps.of_kind(ts, FINAL) + self.sweeps.of_kind(ts, manifests.GATE)
                          if t.metadata.annotations.get(keys.FINAL_ATTEMPT) == str(attempt)), None)
        return final

    async def finalize(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], out: list[ex.Action],
                        extra: dict[str, Any], counts: list[metrics.Increment], now: datetime,
                        early: objects.AgentTask | None = None) -> list[builds.Event]:
        spec = build.spec
        attempt = build.status.finalization_attempts
        final = self.final_sweep(build, ts, attempt)
        snapshot = finalization.Snapshot(
            build=build.name, enabled=spec.finalization.enabled, attempt=attempt,
            max_attempts=spec.finalization.max_attempts, tasks=self.task_views(build, ts),
            jobs=self.job_views(build, ts),
            final_sweep=None if final is None else sweeping.sweep_view(final),
            early_sweep=None if early is None or attempt else sweeping.sweep_view(early),
            sweep_fixers_left=max(0, spec.merge.max_fixers - self.ctx.views(build.key).fixers))
        decided = finalization.decide(snapshot)
        if any(isinstance(e, finalization.StartFinalSweep) for e in decided) and not attempt and \
                not any(isinstance(e, finalization.RequeueJobs) for e in decided):
            # the first final sweep would run: unless a gate already ran its command on the tip (read only now)
            tested = await self.sweeps.tested_tip(build, ts)
            if tested is not None:
                decided = finalization.decide(dataclasses.replace(snapshot, tested_tip=sweeping.sweep_view(tested)))
        events: list[builds.Event] = []
        for e in decided:
            event = self._carry_out(e, build, out, extra, counts)
            if event is not None:
                events.append(event)
        return events

    def _carry_out(self, e: finalization.Effect, build: objects.BuildRequest, out: list[ex.Action],
                   extra: dict[str, Any], counts: list[metrics.Increment]) -> builds.Event | None:
        """One effect of finalization's decision carried out; the build's event, if it has one."""
        spec = build.spec
        match e:
            case finalization.BeginAttempt():
                extra["finalizationAttempts"] = e.attempt
                counts.append(metrics.Increment(metrics.FINALIZATION_ATTEMPTS))
                return builds.FinalizationStarted(e.attempt, spec.finalization.max_attempts)
            case finalization.RequeueJobs():
                out += self.ask_retry(build, e.names, extra.get("finalizationAttempts"))
            case finalization.StartFinalSweep():
                out.append(ex.CreateObject(self.sweeps.sweep_manifest(
                    build, names.child_name(build.name, f"final-{e.attempt}"), FINAL, self.sweeps.merged(build))))
            case finalization.AdoptEarlySweep():
                out.append(ex.PatchObject("AgentTask", build.namespace, e.sweep, {
                    "metadata": {"annotations": {keys.FINAL_ATTEMPT: str(e.attempt)}}}))
            case finalization.FixFailingSweep():
                sweep = self.ctx.cache.tasks.get((build.namespace, e.sweep))
                if sweep is not None:
                    self.sweeps.sweep_fixer(build, sweep, e.message, out)
            case finalization.Finish():
                counts.append(metrics.Increment(metrics.FINALIZATIONS, labels=(("outcome", e.reason),)))
                return builds.Finished(e.passed, e.reason, e.message, e.attempt)
            case finalization.Wait():
                pass  # nothing to do until what it waits for happens (its reconcile comes then)
            case _:
                assert_never(e)
        return None

    def ask_retry(self, build: objects.BuildRequest, jobs: Sequence[str], attempt: object) -> list[ex.Action]:
        """Ask the merge queue, the only writer of MergeJob status, to try these jobs again: an annotation on each
        (``finalization.RETRY_ASKED``) that the queue answers (it tries the job again, then takes it away)."""
        return [ex.PatchObject("MergeJob", build.namespace, n,
                               {"metadata": {"annotations": {finalization.RETRY_ASKED: str(attempt or "")}}})
                for n in jobs if (build.namespace, n) in self.ctx.cache.jobs]

    def task_views(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                    ) -> tuple[finalization.TaskView, ...]:
        out = []
        for t in ts:
            if cachemod.purpose(t) is not None or (t.spec.role == "planner"
                                                   and plan.PLAN_NAME_ANNOTATION not in t.metadata.annotations):
                continue
            readiness, why = self.ctx.readiness(t, build) if t.status.phase in (None, tasks.PENDING) else ("", "")
            out.append(finalization.TaskView(
                name=t.name, phase=t.status.phase or tasks.PENDING, role=t.spec.role, failure=sweeping.last_failure(t),
                blocked=why if readiness == "blocked" else "",
                fixes=t.metadata.annotations.get(cachemod.FIXES_ANNOTATION)))
        return tuple(out)

    def job_views(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                   ) -> tuple[finalization.JobView, ...]:
        out: list[finalization.JobView] = []
        jobs = {j.name: j for j in self.ctx.cache.jobs_of(build.key)}
        for j in jobs.values():
            delivered = self.ctx.delivered(j)
            finished, carried_by = delivery.job_outcome(ctxmod.job_facts(j), self.ctx.undeliverable(j))
            finished = finished and finalization.RETRY_ASKED not in j.metadata.annotations  # the queue retries it
            ready = cond.find(ctxmod.conditions_of(j), cond.READY) or {}
            out.append(finalization.JobView(
                name=j.name, phase=j.status.phase or mj.QUEUED, finished=finished, delivered=delivered,
                carried_by=carried_by,
                retryable=finished and not delivered and j.status.checks != "failed",
                message=str(ready.get("message") or "")))
        for t in ts:
            if cachemod.purpose(t) is not None:
                continue  # a best-of-N candidate: only its task's winner is merged
            if t.spec.role in tasks.MERGING_ROLES and t.status.phase == tasks.SUCCEEDED \
                    and (t.status.merge_job or t.name) not in jobs \
                    and t.status.handoff is not None and t.status.handoff.commit:
                out.append(finalization.JobView(t.name, "Missing"))
        return tuple(out)
