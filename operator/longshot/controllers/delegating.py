"""Delegation, the shell (``core.delegation`` decides): for every task of a build whose agent asked for children
(``status.delegation.requests``, written by longshot-gateway), create the children the decider allows and write
the parent's ``status.children``. Called from the build's reconcile, which every task and MergeJob change of the
build triggers; both writes are idempotent (the create by name, the status only when it differs, fenced on the
parent's resourceVersion).
"""

from __future__ import annotations

from collections.abc import Sequence

from longshot.api import keys, objects
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import delegation as dl
from longshot.core import names


def actions(ctx: ctxmod.Context, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]) -> list[ex.Action]:
    asking = [t for t in ts if (t.status.delegation is not None and t.status.delegation.requests)
              or t.status.children]
    if not asking:
        return []
    views = ctx.views(build.key).deps
    by_name = {t.name: t for t in ts}
    existing = frozenset(n for (ns, n) in ctx.cache.tasks if ns == build.namespace)
    spec = build.model_dump(by_alias=True, mode="json", exclude_none=True).get("spec") or {}
    total = len(ts)
    out: list[ex.Action] = []
    for parent in asking:
        requests = parent.status.delegation.requests if parent.status.delegation is not None else []
        reqs = [dl.Request(r.name, r.prompt, tuple(r.scope)) for r in requests]
        children: dict[str, dl.Child] = {}
        for r in reqs:
            name = dl.child_task_name(parent.name, r.name)
            t = by_name.get(name)
            view = views.get(name)
            if t is not None and view is not None:
                children[name] = dl.Child(task=name, parent=t.metadata.labels.get(dl.PARENT_LABEL, ""), view=view,
                                          summary=t.status.handoff.summary if t.status.handoff is not None
                                          and t.status.handoff.summary else "")
        limits = dl.Limits.from_spec(spec, total_tasks=total, budget_spent=ctx.budget_spent(build))
        who = dl.Parent(name=parent.name, namespace=parent.namespace, build=build.name, build_uid=build.metadata.uid,
                        role=parent.spec.role, phase=parent.status.phase or "Pending",
                        depth=dl.depth_of(parent.metadata.annotations), priority=parent.spec.priority,
                        labels=dict(parent.metadata.labels), scope=tuple(parent.spec.scope))
        previous = [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in parent.status.children]
        decision = dl.decide(who, reqs, limits, children, previous, existing)
        out.extend(ex.CreateObject(m) for m in decision.create)
        total += len(decision.create)
        if list(decision.children) != previous:
            out.append(ex.WriteStatus("AgentTask", parent.namespace, parent.name, parent.metadata.resource_version,
                                      {"children": list(decision.children)}))
    return out


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

