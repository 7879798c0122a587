"""The MergeJob reconciler, and the translation of ``core.mergejobs`` effects into actions (shared with the
merge-queue reconciler, which feeds most of a job's events).

A MergeJob's own reconcile writes its first conditions (``Observed``) and notices that the fixer that took its
branch over has merged (``FixerLanded``); everything else happens in its repository's queue
(``controllers/mergequeue.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from longshot.api import conditions as cond
from longshot.api import mergejob, objects, timeutil
from longshot.api.buildrequest import GateStep
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import effects as fx
from longshot.core import gates, manifests, scheduler
from longshot.core import mergejobs as mj
from longshot.core.effects import EmitEvent, SetCondition

log = logging.getLogger("longshot.mergejobs")


def job_state(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest) -> mj.JobState:
    s = job.status
    batch = None
    if s.batch is not None:
        batch = mj.BatchRef(s.batch.id, s.batch.position, s.batch.base, s.batch.commit)
    phase = s.phase if s.phase in mj.PHASES else mj.QUEUED
    task = ctx.cache.tasks.get((job.namespace, job.task_name))
    return mj.JobState(
        name=job.name, task=job.task_name, branch=job.spec.branch, phase=phase,  # type: ignore[arg-type]
        checks=s.checks if s.checks in ("pending", "passed", "failed") else "pending",  # type: ignore[arg-type]
        conflicts=s.conflicts, conflict_base=s.conflict_base, conflicting_files=tuple(s.conflicting_files),
        errors=s.errors, not_before=s.not_before, batch=batch, merged_commit=s.merged_commit, fixer=s.fixer,
        priority=job.spec.priority, fix_depth=cachemod.fix_depth(task),
        max_conflict_retries=build.spec.merge.max_conflict_retries,
        fixers_left=max(0, build.spec.merge.max_fixers - ctx.views(build.key).fixers),
        needs_approval=build.spec.merge.require_approval and not job.spec.approved,
        waiting=next((x.message or "" for x in s.conditions
                      if x.type == cond.QUEUED and x.reason == mj.WAITING_FOR_DEPENDENCIES), ""),
        task_scope=tuple(task.spec.scope) if task is not None else (), enforce_scope=build.spec.scope.enforce)


def gate_steps(build: objects.BuildRequest) -> tuple[GateStep, ...]:
    """The quality gate's named steps for the build's profile, in the order they run (``core.gates.steps_of``)."""
    return gates.steps_of(build.spec.quality_gate, build.spec.reconciler.command)


def gate_parts(build: objects.BuildRequest) -> list[str]:
    """The quality gate's commands for the build's profile, in the order they run."""
    return gates.parts_of(gate_steps(build))


def gate_command(build: objects.BuildRequest) -> str:
    """The quality gate's command for the build's profile (``&&``-joined), or "" when there is none."""
    return gates.command_of(gate_steps(build))


def tester_manifest(build: objects.BuildRequest, name: str, *, branch: str, command: str, purpose: str,
                    description: str, priority: int, annotations: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None, role: str = "tester",
                    commit: str | None = None) -> dict[str, Any]:
    """A tester or reviewer of ``build`` (``core.manifests.tester``)."""
    return manifests.tester(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                            branch=branch, command=command, purpose=purpose, description=description,
                            priority=priority, annotations=annotations, labels=labels, role=role, commit=commit)


def fixer_manifest(build: objects.BuildRequest, name: str, *, branch: str, description: str,
                   scope: Sequence[str], priority: int, fix_depth: int, fixes: str) -> dict[str, Any]:
    """A fixer of ``build`` (``core.manifests.fixer``; its scope bounded as the CRD requires)."""
    return manifests.fixer(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                           branch=branch, description=description, scope=scheduler.bounded_scope(scope),
                           priority=priority, fix_depth=fix_depth, fixes=fixes)


def decide(job: objects.MergeJob, state: mj.JobState, events: Sequence[mj.Event],
           now: datetime) -> tuple[mj.JobState, list[mj.Effect]]:
    state, effects, invalid = fx.fold(lambda s, e: mj.decide(s, e, now=now), state, events)
    for err in invalid:
        log.error("%s", err)
    return state, effects


def actions(job: objects.MergeJob, build: objects.BuildRequest, state: mj.JobState,
            effects: Sequence[mj.Effect], now: datetime, queue: str) -> list[ex.Action]:
    """The actions of a MergeJob decision: fixers, Events, timers, then the status (fenced)."""
    if not effects:
        return []
    conds = cond.since_creation(ctxmod.conditions_of(job), job.metadata.creation_timestamp)
    tries = [a.model_dump(by_alias=True, mode="json", exclude_none=True) for a in job.status.attempts]
    out: list[ex.Action] = []
    for e in effects:
        match e:
            case SetCondition():
                conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now)
            case mj.RecordTry():
                tries.append({"time": timeutil.rfc3339(now), "result": e.result, "message": e.message[:4096]})
            case mj.CreateFixer():
                out.append(ex.CreateObject(fixer_manifest(build, e.name, branch=e.branch, description=e.description,
                                                          scope=e.scope, priority=e.priority, fix_depth=e.fix_depth,
                                                          fixes=e.fixes)))
            case mj.ScheduleRetry():
                out.append(ex.Requeue(("Queue", "", queue), e.at))
            case EmitEvent():
                out.append(ex.RecordEvent(job.ref(), e.type, e.reason, e.message))
            case _:
                assert_never(e)
    status: dict[str, Any] = {**state.to_status(), "conditions": ex.stamp_generation(conds, job.generation),
                              "attempts": tries[-50:], "observedGeneration": job.generation}
    if state.phase != mj.QUEUED or state.batch is None:
        status["queuePosition"] = None if state.phase != mj.QUEUED else job.status.queue_position
    out.append(ex.WriteStatus("MergeJob", job.namespace, job.name, job.metadata.resource_version, status))
    return out


class MergeJobReconciler:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        job = self.ctx.cache.jobs.get(key)
        if job is None or job.metadata.deleting:
            return []
        build = self.ctx.cache.build_of(job)
        if build is None or not self.ctx.owns_build(build):
            return []
        now = self.ctx.clock()
        state = job_state(self.ctx, job, build)
        events: list[mj.Event] = []
        if not mergejob.seen(job.status):  # none, or the CRD's default status (api.mergejob.initial_status)
            events.append(mj.Observed())
        if state.fixer and state.phase in (mj.FAILED, mj.CONFLICTED):
            fixer_job = self.ctx.cache.jobs.get((job.namespace, state.fixer))
            if fixer_job is not None and fixer_job.status.phase in mj.DELIVERED and fixer_job.status.merged_commit:
                events.append(mj.FixerLanded(fixer_job.status.merged_commit))
        if not events:
            return []
        state, effects = decide(job, state, events, now)
        queue = cachemod.queue_name(build, job.spec.target)
        return actions(job, build, state, effects, now, queue)

