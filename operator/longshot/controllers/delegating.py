"""Delegation, the shell (``core.delegation`` decides): for every task of a build whose agent asked for children
(``status.delegation.requests``, written by longshot-gateway), create the children the decider allows. Called from
the build's reconcile, which every task and MergeJob change of the build triggers, so that one reconcile decides
every parent of a build against its limits; the create is idempotent by name. The parent's ``status.children`` is
written by the task reconciler alone (``controllers.tasks``, from :func:`children_status`): the build's reconcile
enqueues the parent when what the decider says differs from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from longshot.api import keys, objects
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import delegation as dl
from longshot.core import names


def asking(ts: Sequence[objects.AgentTask]) -> list[objects.AgentTask]:
    """The tasks whose agent asked for children, or that have some."""
    return [t for t in ts if (t.status.delegation is not None and t.status.delegation.requests) or t.status.children]


def decision(ctx: ctxmod.Context, build: objects.BuildRequest, parent: objects.AgentTask,
             ts: Sequence[objects.AgentTask], total: int | None = None) -> dl.Decision:
    """``core.delegation.decide`` for ``parent`` as the cache has it: ``total``, the build's AgentTasks (default:
    ``ts``, every task of the build)."""
    requests = parent.status.delegation.requests if parent.status.delegation is not None else []
    reqs = [dl.Request(r.name, r.prompt, tuple(r.scope), r.model) for r in requests]
    views = ctx.views(build.key).deps
    by_name = {t.name: t for t in ts}
    children: dict[str, dl.Child] = {}
    for r in reqs:
        name = dl.child_task_name(parent.name, r.name)
        t = by_name.get(name)
        view = views.get(name)
        if t is not None and view is not None:
            children[name] = dl.Child(task=name, parent=t.metadata.labels.get(dl.PARENT_LABEL, ""), view=view,
                                      summary=t.status.handoff.summary if t.status.handoff is not None
                                      and t.status.handoff.summary else "")
    spec = build.model_dump(by_alias=True, mode="json", exclude_none=True).get("spec") or {}
    limits = dl.Limits.from_spec(spec, total_tasks=len(ts) if total is None else total,
                                 budget_spent=ctx.budget_spent(build))
    who = dl.Parent(name=parent.name, namespace=parent.namespace, build=build.name, build_uid=build.metadata.uid,
                    role=parent.spec.role, phase=parent.status.phase or "Pending",
                    depth=dl.depth_of(parent.metadata.annotations), priority=parent.spec.priority,
                    labels=dict(parent.metadata.labels), scope=tuple(parent.spec.scope))
    existing = frozenset(n for (ns, n) in ctx.cache.tasks if ns == build.namespace)
    return dl.decide(who, reqs, limits, children, previous_children(parent), existing)


def previous_children(parent: objects.AgentTask) -> list[dict[str, Any]]:
    """The parent's ``status.children`` (wire form)."""
    return [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in parent.status.children]


def actions(ctx: ctxmod.Context, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]) -> list[ex.Action]:
    """The children to create (one build's reconcile decides them all, so the build's limits hold across its
    parents), and a reconcile of each parent whose ``status.children`` no longer says what the decider says: the
    task reconciler writes it (:func:`children_status`)."""
    out: list[ex.Action] = []
    total = len(ts)
    for parent in asking(ts):
        decided = decision(ctx, build, parent, ts, total)
        out.extend(ex.CreateObject(m) for m in decided.create)
        total += len(decided.create)
        if list(decided.children) != previous_children(parent):
            out.append(ex.Requeue(("AgentTask", parent.namespace, parent.name), ctx.clock()))
    return out


def children_status(ctx: ctxmod.Context, task: objects.AgentTask, build: objects.BuildRequest
                    ) -> list[dict[str, Any]] | None:
    """The task's ``status.children`` when it should change (None: it says what the decider says, or the task
    never asked for a child). Written by the task reconciler, the one writer of an AgentTask's status."""
    if not asking([task]):
        return None
    children = list(decision(ctx, build, task, list(ctx.cache.tasks_of(build.key))).children)
    return children if children != previous_children(task) else None


def children_of(ctx: ctxmod.Context, task: objects.AgentTask) -> list[objects.AgentTask]:
    """The delegated children of ``task`` that exist (label ``longshot.dev/parent``, names ``<task>-<child>``)."""
    out = []
    for c in task.status.children:
        if c.task:
            t = ctx.cache.tasks.get((task.namespace, c.task))
            if t is not None and t.metadata.labels.get(keys.PARENT) == names.fit(task.name):
                out.append(t)
    return out


def merge_wait(ctx: ctxmod.Context, task: objects.AgentTask, build: objects.BuildRequest) -> str | None:
    """Why the branch of ``task`` may not merge yet: a child it delegated is still on its way (``core.delegation``)."""
    kids = children_of(ctx, task)
    if not kids:
        return None
    views = ctx.views(build.key).deps
    return dl.merge_wait([views[k.name] for k in kids if k.name in views])

