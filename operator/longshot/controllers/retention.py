"""Finished agent Pods of a build deleted beyond ``spec.retention.finishedPods`` (``core.retention`` decides).

The build reconciler calls :func:`actions` on every reconcile of a build it owns: from the cache it gathers the
build's finished Pods, when each one's attempt was recorded in its task's status, and whether a planner's plan was
taken in; the returned deletions are idempotent (a Pod already being deleted is left alone, NotFound is fine).
"""

from __future__ import annotations

from collections.abc import Sequence

from longshot.api import conditions as cond
from longshot.api import objects
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import plan, retention


def finished_pods(ctx: ctxmod.Context, build: objects.BuildRequest,
                  tasks: Sequence[objects.AgentTask]) -> list[retention.FinishedPod]:
    planned = any(c.type == cond.PLANNED and c.status == cond.TRUE for c in build.status.conditions)
    parents = {t.spec.parent_task for t in tasks if t.spec.parent_task}
    out: list[retention.FinishedPod] = []
    for t in tasks:
        pods = [p for p in ctx.cache.pods_of(t.key) if p.ended and not p.deleting]
        if not pods:
            continue
        attempts = {a.pod: a for a in t.status.attempts}
        planner = t.spec.role == "planner"
        if not planner:
            taken = True
        elif plan.PLAN_NAME_ANNOTATION in t.metadata.annotations:  # a subplanner: its tasks exist
            taken = t.name in parents
        else:  # the build's planner: the build is planned, or another planner replaced it
            taken = planned or t.name != build.status.planner_task
        for p in pods:
            a = attempts.get(p.name)
            out.append(retention.FinishedPod(p.name, a.end_time if a is not None else None, planner, taken,
                                             a.start_time if a is not None else None))
    return out


def actions(ctx: ctxmod.Context, build: objects.BuildRequest,
            tasks: Sequence[objects.AgentTask]) -> list[ex.Action]:
    gone = retention.to_delete(finished_pods(ctx, build, tasks), build.spec.retention.finished_pods)
    return [ex.DeletePod(build.namespace, name, 0) for name in gone]
