"""Validate a planner's task list and turn it into AgentTask manifests.

The shell calls :func:`build_tasks` with the planner's ``Handoff.tasks`` and a :class:`PlanContext`
(from :func:`context_for`). The answer is either :class:`Accepted` (manifests to create, in plan order,
with deterministic names so that creating them again after a restart only yields ``AlreadyExists``) or
:class:`Rejected` (reason ``PlanRejected``, a ``problem`` code and a message naming the offending task,
fit for a condition and for the re-planning prompt).

Depth: the top-level plan's tasks have ``depth`` 0 and no ``parentTask``. A task with ``decompose: true``
becomes a (sub)planner when its depth is below ``planner.maxDepth``, else a worker (listed in
``Accepted.downgraded``). The plan a subplanner at depth ``d`` returns has depth ``d + 1``, and its tasks
carry ``parentTask`` = the subplanner. A plan deeper than ``maxDepth`` is rejected.

Names: a top-level task is ``<build>-<name>``, a subplan task ``<subplanner>-<name>``, both shortened
with a hash to 63 characters (see :mod:`longshot.core.names`). A plan whose names would collide with
AgentTasks that already exist in the build (``existing``) is rejected rather than silently merged.

Models and personas: a task may name one of the build's models (``model``) and personas (``persona``) by name
(``core.personas``); the AgentTask carries them as ``spec.model`` and ``spec.persona``. A plan that names one the
build does not list is rejected (``UnknownModel``, ``UnknownPersona``; the message lists the names), so the planner
plans again with the list in its feedback, bounded by ``planner.maxReplans`` like every rejection.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from longshot.api import keys
from longshot.api.handoff import PlannedTask
from longshot.core import manifests, names, personas

PLAN_REJECTED: Final = "PlanRejected"
"""Condition reason of every rejection (``api.conditions.REASONS``)."""

# Problem codes, for events, metrics labels and tests.
EMPTY: Final = "Empty"
TOO_MANY: Final = "TooManyTasks"
TOO_MANY_TOTAL: Final = "TooManyTotalTasks"
DUPLICATE: Final = "DuplicateName"
UNKNOWN_DEPENDENCY: Final = "UnknownDependency"
SELF_DEPENDENCY: Final = "SelfDependency"
CYCLE: Final = "Cycle"
TOO_DEEP: Final = "TooDeep"
NAME_COLLISION: Final = "NameCollision"
UNKNOWN_MODEL: Final = personas.UNKNOWN_MODEL
"""A task names a model that ``spec.agent.models`` does not list (the plan is refused and re-planned)."""
UNKNOWN_PERSONA: Final = personas.UNKNOWN_PERSONA

PLAN_NAME_ANNOTATION: Final = keys.PLAN_NAME
"""Annotation holding a planned task's plan-local name (absent on the build's own planner task)."""
BUILD_LABEL: Final = keys.BUILD
ROLE_LABEL: Final = keys.ROLE
TASK_LABEL: Final = keys.TASK
PARENT_LABEL: Final = keys.PARENT_TASK
ITERATION_LABEL: Final = keys.ITERATION
"""On every planned task and on the build's planners: the planning iteration that created it (from 1)."""
REPLAN_LABEL: Final = keys.REPLAN
"""On a re-plan's planner task: which re-plan it is (from 1)."""
RESERVED_NAME: Final = re.compile(r"^planner(-i[0-9]+)?(-[0-9]+)?$")
"""Plan-local names the build's own planner tasks use (``<build>-planner``, ``-planner-2``, ``-planner-i2``)."""
RESERVED: Final = "ReservedName"


label_value = manifests.label_value
task_labels = manifests.task_labels


@dataclass(frozen=True)
class BuildRef:
    """The owning BuildRequest."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_resource(cls, build: Mapping[str, Any]) -> BuildRef:
        meta = build.get("metadata") or {}
        return cls(name=meta["name"], namespace=meta.get("namespace", ""), uid=meta.get("uid", ""))

    def owner_reference(self) -> dict[str, Any]:
        return manifests.owned_by_build(self.name, self.uid)


@dataclass(frozen=True)
class PlanContext:
    """Where a plan comes from and the limits it must respect."""

    build: BuildRef
    max_tasks: int = 50
    max_depth: int = 2
    depth: int = 0
    """Depth of the plan's tasks: 0 for the build's planner, subplanner depth + 1 otherwise."""
    parent: str | None = None
    """The subplanner task that returned the plan; None for the build's planner."""
    existing: frozenset[str] = frozenset()
    """Names of AgentTasks that already exist in the build's namespace (collisions are rejected)."""
    max_total_tasks: int = 500
    """``planner.maxTotalTasks``: most AgentTasks the whole build may have."""
    total_tasks: int = 0
    """How many AgentTasks the build has now (every role); the plan's tasks come on top."""
    iteration: int = 1
    """The planning iteration the plan belongs to (label ``longshot.dev/iteration`` of its tasks)."""
    catalog: personas.Catalog = field(default_factory=personas.Catalog)
    """The build's named models and personas: a task may name only these (``PlannedTask.model``/``.persona``)."""


def context_for(
    build: Mapping[str, Any],
    planner_task: Mapping[str, Any] | None = None,
    existing: Collection[str] = (),
    total_tasks: int = 0,
) -> PlanContext:
    """The context of the plan returned by ``planner_task`` (an AgentTask dict) of ``build`` (a dict).

    A planner task created from a plan (it has the ``longshot.dev/plan-name`` annotation) is a
    subplanner: its plan gets its depth + 1 and it becomes the tasks' ``parentTask``. ``total_tasks`` is
    the number of AgentTasks the build has now (``planner.maxTotalTasks`` bounds it plus the plan).
    """
    planner = ((build.get("spec") or {}).get("planner")) or {}
    ctx = PlanContext(
        build=BuildRef.from_resource(build),
        max_tasks=int(planner.get("maxTasks", 50)),
        max_depth=int(planner.get("maxDepth", 2)),
        existing=frozenset(existing),
        max_total_tasks=int(planner.get("maxTotalTasks", 500)),
        total_tasks=total_tasks,
        catalog=personas.Catalog.from_build(build),
    )
    if planner_task is not None:
        meta = planner_task.get("metadata") or {}
        iteration = iteration_of(meta)
        if iteration:
            ctx = dataclasses.replace(ctx, iteration=iteration)
        if PLAN_NAME_ANNOTATION in (meta.get("annotations") or {}):
            depth = int((planner_task.get("spec") or {}).get("depth", 0)) + 1
            ctx = dataclasses.replace(ctx, depth=depth, parent=meta["name"])
    return ctx


def _label_number(meta: Mapping[str, Any], key: str) -> int:
    try:
        return max(0, int((meta.get("labels") or {}).get(key, "0")))
    except ValueError:
        return 0


def iteration_of(meta: Mapping[str, Any]) -> int:
    """The iteration label of an object's ``metadata`` (0 when absent or not a number)."""
    return _label_number(meta, ITERATION_LABEL)


def replan_of(meta: Mapping[str, Any]) -> int:
    """The re-plan label of a planner task's ``metadata`` (0 when absent or not a number)."""
    return _label_number(meta, REPLAN_LABEL)


@dataclass(frozen=True)
class Rejected:
    """The plan cannot be used; ``message`` says which task and why."""

    problem: str
    message: str
    reason: str = PLAN_REJECTED


@dataclass(frozen=True)
class Accepted:
    """The plan is valid: create ``manifests`` (in this order)."""

    manifests: tuple[dict[str, Any], ...]
    names: Mapping[str, str] = field(default_factory=dict)
    """Plan-local name -> AgentTask name."""
    downgraded: tuple[str, ...] = ()
    """Plan-local names that asked for ``decompose`` beyond ``maxDepth`` and became workers."""


def task_name(ctx: PlanContext, local: str) -> str:
    """The AgentTask name of the plan-local task ``local``."""
    return names.child_name(ctx.parent or ctx.build.name, local)


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, ..., a]``, or None. Deterministic (plan order)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        path: list[str] = [root]
        stack = [iter(graph[root])]
        color[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                color[path.pop()] = black
                continue
            if nxt not in color:
                continue
            if color[nxt] == grey:
                return [*path[path.index(nxt):], nxt]
            if color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return None


def validate(tasks: Sequence[PlannedTask], ctx: PlanContext) -> Rejected | None:
    """The first problem of the plan, or None when it is valid."""
    if ctx.depth > ctx.max_depth:
        return Rejected(TOO_DEEP, f"a plan at depth {ctx.depth} exceeds planner.maxDepth={ctx.max_depth}"
                        + (f" (returned by {ctx.parent})" if ctx.parent else ""))
    if not tasks:
        return Rejected(EMPTY, "the plan has no tasks; return at least one task")
    if len(tasks) > ctx.max_tasks:
        return Rejected(TOO_MANY, f"the plan has {len(tasks)} tasks, more than planner.maxTasks="
                        f"{ctx.max_tasks}; merge tasks or mark large ones with decompose")
    if ctx.total_tasks + len(tasks) > ctx.max_total_tasks:
        room = max(0, ctx.max_total_tasks - ctx.total_tasks)
        return Rejected(TOO_MANY_TOTAL, f"the build has {ctx.total_tasks} tasks and the plan adds {len(tasks)}, "
                        f"more than planner.maxTotalTasks={ctx.max_total_tasks} in all"
                        + (f" (returned by {ctx.parent})" if ctx.parent else "")
                        + (f"; return at most {room} tasks" if room else "; no room is left for more tasks")
                        + " or raise spec.planner.maxTotalTasks")
    seen: set[str] = set()
    for t in tasks:
        if t.name in seen:
            return Rejected(DUPLICATE, f"task name {t.name!r} is used more than once; names must be unique")
        if ctx.parent is None and RESERVED_NAME.match(t.name):
            return Rejected(RESERVED, f"task name {t.name!r} is reserved for the build's planner tasks; choose "
                            "another name")
        seen.add(t.name)
    for t in tasks:
        for dep in t.depends_on:
            if dep == t.name:
                return Rejected(SELF_DEPENDENCY, f"task {t.name!r} depends on itself")
            if dep not in seen:
                return Rejected(UNKNOWN_DEPENDENCY,
                                f"task {t.name!r} depends on {dep!r}, which is not in the plan")
    cycle = find_cycle({t.name: t.depends_on for t in tasks})
    if cycle:
        return Rejected(CYCLE, "the dependencies form a cycle: " + " -> ".join(cycle))
    by_name: dict[str, str] = {}
    for t in tasks:
        full = task_name(ctx, t.name)
        if full in ctx.existing:
            return Rejected(NAME_COLLISION, f"task {t.name!r} would be AgentTask {full!r}, which already "
                            "exists in the build; choose another name")
        if full in by_name:
            return Rejected(NAME_COLLISION, f"tasks {by_name[full]!r} and {t.name!r} map to the same "
                            f"AgentTask name {full!r}; choose shorter, distinct names")
        by_name[full] = t.name
    for t in tasks:
        chosen = personas.plan_problem(ctx.catalog, t.name, t.model, t.persona)
        if chosen is not None:
            return Rejected(*chosen)
    return None


def build_tasks(tasks: Sequence[PlannedTask], ctx: PlanContext) -> Accepted | Rejected:
    """Validate the plan and build its AgentTask manifests (pure, deterministic)."""
    problem = validate(tasks, ctx)
    if problem is not None:
        return problem
    mapping = {t.name: task_name(ctx, t.name) for t in tasks}
    can_decompose = ctx.depth < ctx.max_depth
    made: list[dict[str, Any]] = []
    downgraded: list[str] = []
    for t in tasks:
        if t.decompose and not can_decompose:
            downgraded.append(t.name)
        role = "planner" if t.decompose and can_decompose else "worker"
        labels = {ITERATION_LABEL: str(ctx.iteration)}
        if ctx.parent is not None:
            labels[PARENT_LABEL] = label_value(ctx.parent)
        made.append(manifests.agent_task(
            name=mapping[t.name], namespace=ctx.build.namespace, build=ctx.build.name, role=role,
            description=t.description, priority=t.priority, owner=ctx.build.owner_reference(), labels=labels,
            annotations={PLAN_NAME_ANNOTATION: t.name}, dependsOn=[mapping[d] for d in t.depends_on],
            scope=list(t.scope), depth=ctx.depth, parentTask=ctx.parent, model=t.model, persona=t.persona))
    return Accepted(tuple(made), mapping, tuple(downgraded))


def planner_task_name(build: str, replan: int = 0, iteration: int = 1) -> str:
    """Name of the build's planner task: ``<build>-planner``, then ``<build>-planner-<n>`` for re-plans; from
    iteration 2 on ``<build>-planner-i<k>`` (and ``-i<k>-<n>``)."""
    local = "planner" if iteration <= 1 else f"planner-i{iteration}"
    return names.child_name(build, local if replan == 0 else f"{local}-{replan}")


def planner_task_manifest(build: BuildRef, request: str, *, replan: int = 0, feedback: str = "",
                          priority: int = 10, iteration: int = 1) -> dict[str, Any]:
    """The build's (top-level) planner AgentTask of ``iteration``. ``feedback`` explains why the previous plan
    was refused. Its task input gets the iteration, the limit and the last iteration's results."""
    description = request
    if feedback:
        description = (f"{request}\n\nYour previous plan was rejected: {feedback}\n"
                       "Return a corrected task list.")
    return manifests.agent_task(
        name=planner_task_name(build.name, replan, iteration), namespace=build.namespace, build=build.name,
        role="planner", description=description, priority=priority, owner=build.owner_reference(),
        labels={ITERATION_LABEL: str(max(1, iteration)), **({REPLAN_LABEL: str(replan)} if replan else {})},
        depth=0)
