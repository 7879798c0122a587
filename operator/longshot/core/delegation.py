"""Delegation: a worker's agent spawns child tasks at run time and awaits them (docs/planning.md, Delegation). Pure.

The agent asks through longshot-gateway (``spawn_task``; the gateway records the request in the parent's
``status.delegation.requests``, it never creates a task). The build's reconciler gives :func:`decide` the parent,
its requests, the limits and the children that exist, and carries out the answer: create these child AgentTasks
(idempotent by name, ``<parent>-<child>``), write this ``status.children``. Each request, in the order asked:

====================================================  ==============================================================
a request whose ...                                   becomes
====================================================  ==============================================================
child AgentTask exists (a label names this parent)    its summary: phase, done, merged, reason, handoff summary
was refused before (``status.children``: Refused)     Refused, same reason (a refusal is final: no flapping)
build has ``spec.delegation.enabled`` false           Refused: names ``spec.delegation.enabled``
parent is not a worker                                Refused: only workers delegate
parent is not Running                                 Refused: the parent ended before the child was made
child would be deeper than ``maxDepth``               Refused: names ``spec.delegation.maxDepth``
is past ``maxChildren`` of this parent                Refused: names ``spec.delegation.maxChildren``
build already has ``maxTotalTasks`` AgentTasks        Refused: names ``spec.planner.maxTotalTasks``
build's budget is spent                               Refused: names ``spec.budget``
scope is not within the parent's (scopes enforced)    Refused: names the child's scope and ``spec.scope.enforce``
model is not one of the build's ``spec.agent.models``  Refused: names the model and lists the build's models
name is taken by a task that is not this child        Refused: the name collides
otherwise                                             Create the child (a worker, owned by the build); Pending
====================================================  ==============================================================

A child is *done* for ``await_tasks`` when it was refused, failed or was cancelled, or succeeded with its branch on
the target (or with nothing to merge): :func:`child_done` over ``core.dependencies``' view of the task. The
parent's own MergeJob waits until every child it made is done (:func:`merge_wait`): children merge first.

A child's ``model`` is the name of one of the build's models (``core.personas``), written on the child as
``spec.model``; without one the child's model is chosen as any task's (its persona's, its role's, the build's).

Under ``spec.scope.enforce`` a scoped parent's child is scoped within it: every entry of the child's scope must be
covered by the parent's (:func:`longshot.core.scope.uncovered`; ``**`` under a scoped parent is refused), and a
child that asks for no scope gets the parent's. An unscoped parent's children are as free as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from longshot.api import keys
from longshot.core import dependencies, manifests, names, personas
from longshot.core import scope as scopemod

PARENT_LABEL: Final = keys.PARENT
DEPTH_ANNOTATION: Final = keys.DELEGATION_DEPTH
REFUSED: Final = "Refused"
MAX_REASON: Final = 1024
MAX_SUMMARY: Final = 2048


def depth_of(annotations: Mapping[str, str]) -> int:
    """A task's delegation depth (annotation ``longshot.dev/delegation-depth``; 0 when absent or not a number)."""
    try:
        return max(0, int(annotations.get(DEPTH_ANNOTATION, "0")))
    except ValueError:
        return 0


def may_delegate(role: str, settings: Mapping[str, Any], depth: int) -> bool:
    """Whether a task of ``role`` at ``depth`` gets the delegation tools, given ``spec.delegation`` (wire form)."""
    return role == "worker" and settings.get("enabled") is True and depth + 1 <= int(settings.get("maxDepth", 2))


@dataclass(frozen=True)
class Limits:
    """The build's limits, as they are now."""

    enabled: bool = False
    max_depth: int = 2
    max_children: int = 5
    max_total_tasks: int = 500
    total_tasks: int = 0
    """AgentTasks the build has now (every role)."""
    budget_spent: bool = False
    enforce_scope: bool = False
    """``spec.scope.enforce``: a child's scope must be within its parent's."""
    catalog: personas.Catalog = field(default_factory=personas.Catalog)
    """The build's named models: a child may choose one of them and no other."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, total_tasks: int, budget_spent: bool) -> Limits:
        """The limits of a BuildRequest spec (wire form)."""
        d = spec.get("delegation") or {}
        return cls(enabled=d.get("enabled") is True, max_depth=int(d.get("maxDepth", 2)),
                   max_children=int(d.get("maxChildren", 5)),
                   max_total_tasks=int((spec.get("planner") or {}).get("maxTotalTasks", 500)),
                   total_tasks=total_tasks, budget_spent=budget_spent,
                   enforce_scope=(spec.get("scope") or {}).get("enforce") is True,
                   catalog=personas.Catalog.from_agent(spec.get("agent") or {}))


@dataclass(frozen=True)
class Parent:
    """The task that asked."""

    name: str
    namespace: str
    build: str
    build_uid: str
    role: str = "worker"
    phase: str = "Running"
    depth: int = 0
    priority: int = 5
    labels: Mapping[str, str] = field(default_factory=dict)
    scope: tuple[str, ...] = ()
    """The parent's ``spec.scope``."""


@dataclass(frozen=True)
class Request:
    name: str
    prompt: str
    scope: tuple[str, ...] = ()
    model: str | None = None
    """The name of one of the build's models, chosen by the spawning agent (None: not chosen)."""


@dataclass(frozen=True)
class Child:
    """A child AgentTask that exists, as the decision needs it."""

    task: str
    parent: str
    """Its ``longshot.dev/parent`` label."""
    view: dependencies.DepView
    summary: str = ""


@dataclass(frozen=True)
class Decision:
    create: tuple[dict[str, Any], ...]
    children: tuple[dict[str, Any], ...]
    """The parent's ``status.children`` (wire form)."""


def child_task_name(parent: str, child: str) -> str:
    return names.child_name(parent, child)


def child_done(view: dependencies.DepView) -> bool:
    """Whether a child reached its end for its parent: failed or cancelled, or succeeded and delivered."""
    return dependencies.status_of(view) != "waiting"


def _summary(request: Request, child: Child) -> dict[str, Any]:
    v = child.view
    failed = dependencies.status_of(v) == "failed"
    out: dict[str, Any] = {"name": request.name, "task": child.task, "phase": v.phase, "done": child_done(v),
                           "merged": v.delivered}
    if failed:
        out["reason"] = (v.failure or ("its branch cannot merge" if v.undeliverable else f"it is {v.phase}"))[
            :MAX_REASON]
    if child.summary:
        out["summary"] = child.summary[:MAX_SUMMARY]
    return out


def _refusal(request: Request, reason: str) -> dict[str, Any]:
    return {"name": request.name, "phase": REFUSED, "done": True, "merged": False, "reason": reason[:MAX_REASON]}


def child_scope(parent: Parent, request: Request, limits: Limits) -> tuple[str, ...]:
    """The child's scope: the one asked for, or under ``spec.scope.enforce`` the parent's when none is asked."""
    return request.scope or (parent.scope if limits.enforce_scope else ())


def scope_refusal(parent: Parent, request: Request, limits: Limits, field: str) -> str | None:
    """Why the child's scope is refused (not within the parent's under ``spec.scope.enforce``), or None."""
    if not limits.enforce_scope:
        return None
    outside = scopemod.uncovered(request.scope, parent.scope)
    return scopemod.child_refusal(field, parent.scope, outside) if outside else None


def _why_not(parent: Parent, request: Request, limits: Limits, index: int, made: int, taken: bool) -> str | None:
    if not limits.enabled:
        return "delegation is off for this build: set spec.delegation.enabled: true on the BuildRequest"
    if parent.role != "worker":
        return f"only worker tasks may delegate; this task is a {parent.role}"
    if parent.phase != "Running":
        return f"the parent task is {parent.phase}, not Running: children are made only while it runs"
    if parent.depth + 1 > limits.max_depth:
        return (f"the child would be {parent.depth + 1} deep, past spec.delegation.maxDepth ({limits.max_depth}); "
                "do the work yourself")
    if index >= limits.max_children:
        return (f"this task already asked for spec.delegation.maxChildren ({limits.max_children}) children; "
                "do the rest yourself")
    if limits.total_tasks + made >= limits.max_total_tasks:
        return (f"the build has {limits.total_tasks + made} tasks, spec.planner.maxTotalTasks "
                f"({limits.max_total_tasks}); do the work yourself")
    if limits.budget_spent:
        return "the build's budget (spec.budget) is spent"
    refused = scope_refusal(parent, request, limits, f"the child's scope ({request.name})")
    if refused:
        return refused
    unknown = personas.spawn_problem(limits.catalog, request.name, request.model)
    if unknown:
        return unknown
    if taken:
        return "an AgentTask with this child's name exists and is not this task's child; choose another name"
    return None


def decide(parent: Parent, requests: Sequence[Request], limits: Limits, children: Mapping[str, Child],
           previous: Sequence[Mapping[str, Any]] = (), existing: frozenset[str] = frozenset()) -> Decision:
    """What to create and the parent's ``status.children``; see the module's table. ``children``: the child
    AgentTasks that exist, by task name; ``previous``: the parent's ``status.children``; ``existing``: the names of
    every AgentTask in the namespace."""
    refused = {str(c.get("name")): str(c.get("reason") or "") for c in previous if c.get("phase") == REFUSED}
    create: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, r in enumerate(requests):
        if r.name in seen:
            continue
        seen.add(r.name)
        task = child_task_name(parent.name, r.name)
        child = children.get(task)
        if child is not None and child.parent == names.fit(parent.name):
            out.append(_summary(r, child))
            continue
        if r.name in refused:
            out.append(_refusal(r, refused[r.name]))
            continue
        why = _why_not(parent, r, limits, index, len(create), taken=child is not None or task in existing)
        if why is not None:
            out.append(_refusal(r, why))
            continue
        create.append(child_manifest(parent, r, child_scope(parent, r, limits)))
        out.append({"name": r.name, "task": task, "phase": "Pending", "done": False, "merged": False})
    return Decision(tuple(create), tuple(out))


def child_manifest(parent: Parent, request: Request, scope: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The child AgentTask: a worker of the parent's build (and iteration), owned by the build like a planned task,
    labelled with its parent, one level deeper; its scope is ``scope`` (default: the one asked for)."""
    labels = {PARENT_LABEL: manifests.label_value(parent.name)}
    if keys.ITERATION in parent.labels:
        labels[keys.ITERATION] = parent.labels[keys.ITERATION]
    return manifests.agent_task(
        name=child_task_name(parent.name, request.name), namespace=parent.namespace, build=parent.build,
        role="worker", description=request.prompt, priority=parent.priority,
        owner=manifests.owned_by_build(parent.build, parent.build_uid), labels=labels,
        annotations={DEPTH_ANNOTATION: str(parent.depth + 1)},
        scope=list(request.scope if scope is None else scope) or None, model=request.model)


def merge_wait(children: Sequence[dependencies.DepView]) -> str | None:
    """Why the parent's branch may not merge yet (its children still on their way), or None."""
    waiting = sorted(v.name for v in children if not child_done(v))
    if not waiting:
        return None
    shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more" if len(waiting) > 10 else "")
    return f"waiting for delegated child task(s) {shown} to finish and merge first"
