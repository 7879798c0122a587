"""Finished agent Pods of a build deleted beyond ``spec.retention.finishedPods`` (``core.retention`` decides), and
its attempts' ledger entries beyond ``spec.retention.ledger`` (``core.ledger.to_delete`` decides).

The build reconciler calls :func:`actions` on every reconcile of a build it owns: from the cache it gathers the
build's finished Pods, when each one's attempt was recorded in its task's status, and whether a planner's plan was
taken in; the returned deletions are idempotent (a Pod already being deleted is left alone, NotFound is fine). The
Pods of one attempt number go in one collection delete by label (``executor.DeletePods``); a Pod whose name is not
its task's ``<task>-a<N>`` is deleted by name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from longshot.api import conditions as cond
from longshot.api import keys, objects, timeutil
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import ledger, names, plan, retention

log = logging.getLogger("longshot.retention")

LEDGER_SWEEP: Final = timedelta(minutes=5)
"""How often a build's ledger entries are listed (metadata only) and held to ``spec.retention.ledger``."""


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
            a = attempts.get(p.key[1])  # a claimed warm Pod is its attempt's under the cold Pod's name
            out.append(retention.FinishedPod(p.key[1], a.end_time if a is not None else None, planner, taken,
                                             a.start_time if a is not None else None))
    return out


def actions(ctx: ctxmod.Context, build: objects.BuildRequest,
            tasks: Sequence[objects.AgentTask]) -> list[ex.Action]:
    gone = retention.to_delete(finished_pods(ctx, build, tasks), build.spec.retention.finished_pods)
    if not gone:
        return []
    pods = []
    for name in gone:
        pod = ctx.cache.pods.get((build.namespace, name))
        task = pod.task if pod is not None and pod.task else ""
        pods.append((task, (names.attempt_of(name, task) or 0) if task else 0, pod.name if pod is not None else name))
    return [ex.DeletePods(build.namespace, build.name, tuple(pods), 0)]


def ledger_selector(build: str) -> str:
    """The label selector of a build's ledger entries."""
    return f"{ledger.LABEL}=true,{keys.BUILD}={names.fit(build)}"


def ledger_actions(ctx: ctxmod.Context, build: objects.BuildRequest, now: datetime) -> list[ex.Action]:
    """At most once every :data:`LEDGER_SWEEP` per build: one executor action that lists the build's ledger entries
    (metadata only) and deletes, oldest first, those beyond ``spec.retention.ledger`` (``core.ledger.to_delete``
    decides). It runs in the executor, not here: the build's reconcile reads nothing more and never waits on it (its
    decision stays one turn of the event loop). A list or delete that fails is logged and tried at the next sweep:
    retention never holds up the build."""
    last = ctx.ledger_swept.get(build.key)
    if last is not None and now - last < LEDGER_SWEEP:
        return []
    ctx.ledger_swept[build.key] = now
    policy = build.spec.retention.ledger
    k, ns, name = ctx.kube, build.namespace, build.name

    def sweep() -> None:
        try:
            metas = k.list_configmap_metadata(ns, ledger_selector(name))
            entries = [ledger.Entry(str(m.get("name")), _time(m.get("creationTimestamp")) or now,
                                    _time((m.get("annotations") or {}).get(ledger.ENDED_ANNOTATION)))
                       for m in metas if m.get("name")]
            task_of = {str(m.get("name")): str((m.get("labels") or {}).get(keys.TASK) or "") for m in metas}
            gone = ledger.to_delete(entries, max_entries=policy.max_entries, ttl_seconds=policy.ttl_seconds, now=now)
            alone, selectors = ex.collection_selectors(ledger_selector(name), [
                (task_of[g], names.attempt_of(g.removesuffix(ledger.SUFFIX), task_of[g]) or 0, g) for g in gone])
            for selector in selectors:  # those of one attempt number in one request, by their labels
                k.delete_configmaps(ns, selector)
            for one in alone:
                k.delete_configmap(ns, one)
        except Exception as e:
            log.warning("build %s/%s: ledger retention failed, tried again in %s: %s", ns, name, LEDGER_SWEEP, e)

    return [ex.Call(sweep, f"ledger retention of {ns}/{name}")]


def _time(value: object) -> datetime | None:
    try:
        return timeutil.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None
