"""A MergeJob's state as ``core.mergejobs`` reads it, and its decision turned into actions: the one place that writes
a MergeJob's status (every step of the queue package writes through :func:`write`; the status-writers test holds
that nothing outside the package does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from longshot.api import conditions as cond
from longshot.api import objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import effects as fx
from longshot.core import manifests
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
    pr = s.pull_request
    pull = (mj.PullRef(pr.number, pr.url or "", pr.head or "", pr.status_posted, pr.auto_merge) if pr is not None
            else None)
    waiting_on_forge = next((x.message or "" for x in s.conditions if x.type == cond.AWAITING_FORGE), "") \
        if phase == mj.AWAITING_FORGE else ""
    return mj.JobState(
        name=job.name, task=job.task_name, branch=job.spec.branch, phase=phase,  # type: ignore[arg-type]
        checks=s.checks if s.checks in ("pending", "passed", "failed") else "pending",  # type: ignore[arg-type]
        conflicts=s.conflicts, conflict_base=s.conflict_base, conflicting_files=tuple(s.conflicting_files),
        errors=s.errors, not_before=s.not_before, batch=batch, merged_commit=s.merged_commit, fixer=s.fixer,
        pull=pull, tested=s.tested_commit, message=waiting_on_forge,
        priority=job.spec.priority, fix_depth=cachemod.fix_depth(task),
        max_conflict_retries=build.spec.merge.max_conflict_retries,
        fixers_left=max(0, build.spec.merge.max_fixers - len(ctx.cache.fixers_by_build.get(build.key, ()))),
        needs_approval=build.spec.merge.require_approval and not job.spec.approved,
        waiting=next((x.message or "" for x in s.conditions
                      if x.type == cond.QUEUED and x.reason == mj.WAITING_FOR_DEPENDENCIES), ""),
        task_scope=tuple(task.spec.scope) if task is not None else (), enforce_scope=build.spec.scope.enforce)


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
                out.append(ex.CreateObject(manifests.fixer_of(
                    build, e.name, branch=e.branch, description=e.description, scope=e.scope, priority=e.priority,
                    fix_depth=e.fix_depth, fixes=e.fixes)))
            case mj.ScheduleRetry():
                out.append(ex.Requeue(("Queue", "", queue), e.at))
            case EmitEvent():
                out.append(ex.RecordEvent(job.ref(), e.type, e.reason, e.message,
                                          budget=f"{build.namespace}/{build.name}" if e.routine else None))
            case _:
                assert_never(e)
    out.append(ex.WriteStatus("MergeJob", job.namespace, job.name, job.metadata.resource_version,
                              _status(job, state, conds, tries)))
    return out


def _status(job: objects.MergeJob, state: mj.JobState, conds: list[dict[str, Any]],
            tries: list[dict[str, Any]]) -> dict[str, Any]:
    status: dict[str, Any] = {**state.to_status(), "conditions": ex.stamp_generation(conds, job.generation),
                              "attempts": tries[-50:], "observedGeneration": job.generation}
    if state.phase != mj.QUEUED or state.batch is None:
        status["queuePosition"] = None if state.phase != mj.QUEUED else job.status.queue_position
    return status


def write(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest, events: Sequence[mj.Event],
          now: datetime, queue: str) -> list[ex.Action]:
    """``events`` of ``job`` as read, decided and turned into actions (its one status write, fixers, Events,
    timers)."""
    state, effects = decide(job, job_state(ctx, job, build), events, now)
    return actions(job, build, state, effects, now, queue)
