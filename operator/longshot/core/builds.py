"""The BuildRequest decider: ``decide(state, event, *, now) -> (state, effects)``.

Same style as :mod:`longshot.core.tasks`: pure, transitions in one table (:data:`TRANSITIONS`), missing
pairs raise :class:`InvalidTransition`, effects are plain data carried out by the shell, and the shell
writes ``new_state.to_status()`` plus the conditions in one patch.

Phases: ``Pending`` -> ``Planning`` (the planner AgentTask runs) -> ``Working`` (tasks run) ->
``Finalizing`` (placeholder: a later issue drains the merge queue and runs the final sweep; ``Merging``
is reserved likewise) -> ``Succeeded`` / ``Failed``. ``Suspended`` and ``Halted`` are overlays shown by
:attr:`BuildState.display_phase` while the build is not finished; they never change the phase.

The phase is derived from the conditions (:func:`phase_from_conditions`), so the state is rebuilt from
the resource after a restart without trusting ``status.phase`` (which is for display).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

from longshot.api import conditions as c
from longshot.api.handoff import PlannedTask
from longshot.core import plan
from longshot.core.effects import EmitEvent, SetCondition

BuildPhase = Literal["Pending", "Planning", "Working", "Merging", "Finalizing", "Succeeded", "Failed"]
PENDING: Final = "Pending"
PLANNING: Final = "Planning"
WORKING: Final = "Working"
MERGING: Final = "Merging"
FINALIZING: Final = "Finalizing"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
DONE: Final = frozenset({SUCCEEDED, FAILED})


class InvalidTransition(RuntimeError):
    """The event cannot happen in this phase."""


@dataclass(frozen=True)
class TaskCounts:
    """AgentTasks of the build by state (``status.tasks``); ``progress`` is ``finished/total``."""

    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def progress(self) -> str:
        return f"{self.finished}/{self.total}"

    @property
    def all_terminal(self) -> bool:
        return self.total > 0 and self.pending == 0 and self.running == 0

    @classmethod
    def from_phases(cls, phases: Iterable[str | None]) -> TaskCounts:
        """Counts of AgentTask ``status.phase`` values (Backoff and unset count as pending)."""
        n = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        total = 0
        for p in phases:
            total += 1
            key = {"Running": "running", "Succeeded": "succeeded", "Failed": "failed",
                   "Cancelled": "cancelled"}.get(p or "", "pending")
            n[key] += 1
        return cls(total=total, **n)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None) -> TaskCounts:
        d = data or {}
        return cls(**{k: int(d.get(k, 0)) for k in
                      ("total", "pending", "running", "succeeded", "failed", "cancelled")})

    def to_wire(self) -> dict[str, Any]:
        return {"total": self.total, "pending": self.pending, "running": self.running,
                "succeeded": self.succeeded, "failed": self.failed, "cancelled": self.cancelled,
                "progress": self.progress}


def phase_from_conditions(conditions: Iterable[Mapping[str, Any]] | None, planner_task: str | None) -> str:
    """The decider's phase implied by the conditions (the source of truth after a restart)."""
    conds = list(conditions or ())
    ready = c.find(conds, c.READY)
    if ready is not None and ready.get("status") == c.TRUE:
        return SUCCEEDED if ready.get("reason") in ("Completed", "Passed") else FAILED
    planned = c.find(conds, c.PLANNED)
    if planned is not None and planned.get("status") == c.FALSE:
        return FAILED
    if planned is not None and planned.get("status") == c.TRUE:
        progressing = c.find(conds, c.PROGRESSING) or {}
        if progressing.get("status") == c.FALSE and progressing.get("reason") == "Idle":
            return FINALIZING  # every task finished, the build is not Ready yet
        return WORKING
    return PLANNING if planner_task else PENDING


@dataclass(frozen=True)
class BuildState:
    """What the decider knows about one BuildRequest."""

    ref: plan.BuildRef
    request: str = ""
    phase: BuildPhase = "Pending"
    planner_task: str | None = None
    replans: int = 0
    max_replans: int = 2
    finalization_enabled: bool = True
    suspended: bool = False
    budget_exceeded: bool = False
    halted: bool = False
    counts: TaskCounts = field(default_factory=TaskCounts)
    deleted: bool = False

    @property
    def display_phase(self) -> str:
        """``status.phase``: the phase, or the overlay (Halted, Suspended) while not finished."""
        if self.phase not in DONE:
            if self.halted:
                return "Halted"
            if self.suspended:
                return "Suspended"
        return self.phase

    @classmethod
    def from_resource(cls, build: Mapping[str, Any]) -> BuildState:
        spec = build.get("spec") or {}
        status = build.get("status") or {}
        conds = status.get("conditions") or []
        planner_task = status.get("plannerTask")
        return cls(
            ref=plan.BuildRef.from_resource(build),
            request=spec.get("request", ""),
            phase=phase_from_conditions(conds, planner_task),  # type: ignore[arg-type]
            planner_task=planner_task,
            replans=int(status.get("replans", 0)),
            max_replans=int((spec.get("planner") or {}).get("maxReplans", 2)),
            finalization_enabled=bool((spec.get("finalization") or {}).get("enabled", True)),
            suspended=c.is_true(conds, c.SUSPENDED),
            budget_exceeded=c.is_true(conds, c.BUDGET_EXCEEDED),
            halted=c.is_true(conds, c.HALTED),
            counts=TaskCounts.from_wire(status.get("tasks")),
        )

    def to_status(self) -> dict[str, Any]:
        """Status fields this state owns (conditions come from the effects)."""
        return {"phase": self.display_phase, "plannerTask": self.planner_task, "replans": self.replans,
                "tasks": self.counts.to_wire()}


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """The operator saw the BuildRequest for the first time (or again after a restart)."""


@dataclass(frozen=True)
class PlannerFinished:
    """A planner task succeeded with ``tasks``; ``context`` is ``plan.context_for(build, planner, existing)``
    (its ``parent`` is None for the build's own planner, the subplanner's name otherwise)."""

    tasks: Sequence[PlannedTask]
    context: plan.PlanContext


@dataclass(frozen=True)
class PlanInvalid:
    """The build's planner produced nothing usable (its handoff was invalid or it failed for good)."""

    message: str


@dataclass(frozen=True)
class TaskCountsChanged:
    counts: TaskCounts


@dataclass(frozen=True)
class SuspendChanged:
    suspended: bool


@dataclass(frozen=True)
class BudgetChanged:
    """Whether the token or cost budget is spent (``scheduler.BuildView.budget_spent``)."""

    exceeded: bool


@dataclass(frozen=True)
class Killswitch:
    engaged: bool


@dataclass(frozen=True)
class Deleted:
    """The BuildRequest is being deleted; owner references garbage-collect its tasks and Pods."""


@dataclass(frozen=True)
class FinalizationStarted:
    """Finalization attempt ``attempt`` (from 1) begins: drain the queue, retry unmerged, final sweep."""

    attempt: int
    max_attempts: int


@dataclass(frozen=True)
class FinalizationFinished:
    """The last finalization attempt ended: ``passed``, or not with ``reason`` (a documented reason such as
    ``TestsFailed``, ``BuildFailed``, ``UnmergedBranches``) and ``message``."""

    passed: bool
    reason: str
    message: str
    attempt: int


Event = (Created | PlannerFinished | PlanInvalid | TaskCountsChanged | SuspendChanged | BudgetChanged
         | Killswitch | Deleted | FinalizationStarted | FinalizationFinished)

# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePlannerTask:
    """Create this planner AgentTask manifest (AlreadyExists is fine)."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class CreateTasks:
    """Create these AgentTask manifests, in order (AlreadyExists is fine)."""

    manifests: tuple[Mapping[str, Any], ...]


Effect = CreatePlannerTask | CreateTasks | SetCondition | EmitEvent
Result = tuple[BuildState, list[Effect]]
Handler = Callable[[BuildState, Any, datetime], Result]

# --- handlers ----------------------------------------------------------------------------------------


def _ignore(state: BuildState, event: Any, now: datetime) -> Result:
    return state, []


def _finalized_condition(state: BuildState) -> SetCondition:
    if state.finalization_enabled:
        return SetCondition(c.FINALIZED, c.UNKNOWN, "Pending", "finalization runs when no work is left")
    return SetCondition(c.FINALIZED, c.UNKNOWN, "Disabled", "spec.finalization.enabled is false")


def _create(state: BuildState, event: Created, now: datetime) -> Result:
    manifest = plan.planner_task_manifest(state.ref, state.request)
    name = manifest["metadata"]["name"]
    new = replace(state, phase=PLANNING, planner_task=name)
    return new, [
        CreatePlannerTask(manifest),
        SetCondition(c.PLANNED, c.UNKNOWN, "Pending", f"waiting for the planner task {name}"),
        SetCondition(c.PROGRESSING, c.TRUE, "InProgress", "planning"),
        SetCondition(c.MERGED, c.UNKNOWN, "Pending", "nothing to merge yet"),
        _finalized_condition(state),
        SetCondition(c.READY, c.FALSE, "InProgress", "the build is being planned"),
        EmitEvent("Normal", "Planning", f"created planner task {name}"),
    ]


def _reject(state: BuildState, message: str) -> Result:
    if state.replans < state.max_replans:
        n = state.replans + 1
        manifest = plan.planner_task_manifest(state.ref, state.request, replan=n, feedback=message)
        name = manifest["metadata"]["name"]
        new = replace(state, replans=n, planner_task=name)
        text = f"plan rejected: {message}; re-planning ({n} of {state.max_replans}) with {name}"
        return new, [
            CreatePlannerTask(manifest),
            SetCondition(c.PLANNED, c.UNKNOWN, "PlanRejected", text),
            EmitEvent("Warning", "PlanRejected", text),
        ]
    text = f"plan rejected: {message}; planner.maxReplans={state.max_replans} re-plans used, giving up"
    new = replace(state, phase=FAILED)
    return new, [
        SetCondition(c.PLANNED, c.FALSE, "PlanRejected", text),
        SetCondition(c.PROGRESSING, c.FALSE, "PlanRejected", text),
        SetCondition(c.READY, c.TRUE, "PlanRejected", text),
        EmitEvent("Warning", "PlanRejected", text),
    ]


def _planner_finished(state: BuildState, event: PlannerFinished, now: datetime) -> Result:
    ctx = event.context
    if ctx.parent is not None:
        return _subplan(state, event, now)
    if state.phase != PLANNING:
        return state, []  # the same plan delivered again after it was accepted: nothing to do
    result = plan.build_tasks(event.tasks, ctx)
    if isinstance(result, plan.Rejected):
        return _reject(state, result.message)
    text = f"{len(result.manifests)} tasks planned"
    effects: list[Effect] = [
        CreateTasks(result.manifests),
        SetCondition(c.PLANNED, c.TRUE, "PlanAccepted", text),
        SetCondition(c.PROGRESSING, c.TRUE, "TasksRunning", text),
        EmitEvent("Normal", "PlanAccepted", text),
    ]
    if result.downgraded:
        effects.append(EmitEvent("Normal", "DecomposeLimited",
                                 "planner.maxDepth reached; run as workers: " + ", ".join(result.downgraded)))
    return replace(state, phase=WORKING), effects


def _subplan(state: BuildState, event: PlannerFinished, now: datetime) -> Result:
    if state.phase in DONE:
        return state, []
    result = plan.build_tasks(event.tasks, event.context)
    if isinstance(result, plan.Rejected):
        return state, [EmitEvent("Warning", "PlanRejected",
                                 f"subplan of {event.context.parent} rejected: {result.message}")]
    return state, [
        CreateTasks(result.manifests),
        EmitEvent("Normal", "PlanAccepted",
                  f"subplan of {event.context.parent}: {len(result.manifests)} tasks"),
    ]


def _plan_invalid(state: BuildState, event: PlanInvalid, now: datetime) -> Result:
    return _reject(state, event.message)


def _counts(state: BuildState, event: TaskCountsChanged, now: datetime) -> Result:
    counts = event.counts
    new = replace(state, counts=counts)
    if state.phase in (PENDING, PLANNING):
        return new, []
    if not counts.all_terminal:
        if state.phase == WORKING:
            return new, []
        # A finished build got work again (a task was retried).
        return replace(new, phase=WORKING), [
            SetCondition(c.PROGRESSING, c.TRUE, "TasksRunning", f"tasks {counts.progress}"),
            SetCondition(c.READY, c.FALSE, "InProgress", "tasks are running again"),
            EmitEvent("Normal", "Resumed", "tasks are running again"),
        ]
    if state.phase in DONE:
        return new, []  # finished (or given up on its plan): new counts change nothing
    summary = (f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.cancelled} cancelled "
               f"of {counts.total}")
    if state.finalization_enabled:
        if state.phase == FINALIZING:
            return new, []
        return replace(new, phase=FINALIZING), [
            SetCondition(c.PROGRESSING, c.FALSE, "Idle", f"all tasks finished: {summary}"),
            SetCondition(c.READY, c.FALSE, "Pending", "waiting for finalization"),
            EmitEvent("Normal", "TasksFinished", summary),
        ]
    phase = SUCCEEDED if counts.failed == 0 else FAILED
    if state.phase == phase:
        return new, []
    return replace(new, phase=phase), [
        SetCondition(c.PROGRESSING, c.FALSE, "Idle", f"all tasks finished: {summary}"),
        SetCondition(c.READY, c.TRUE, "Completed" if phase == SUCCEEDED else "Failed", summary),
        EmitEvent("Normal" if phase == SUCCEEDED else "Warning", phase, summary),
    ]


def _progressing(state: BuildState) -> SetCondition | None:
    """Progressing after an overlay changed (None when the build is not working)."""
    if state.phase not in (PLANNING, WORKING):
        return None
    if state.halted:
        return SetCondition(c.PROGRESSING, c.FALSE, "Killswitch", "the operator killswitch is engaged")
    if state.suspended:
        return SetCondition(c.PROGRESSING, c.FALSE, "Suspended", "spec.suspend is true")
    if state.budget_exceeded:
        return SetCondition(c.PROGRESSING, c.FALSE, "BudgetExceeded", "the token or cost budget is spent")
    what = "planning" if state.phase == PLANNING else "tasks are running"
    return SetCondition(c.PROGRESSING, c.TRUE, "InProgress" if state.phase == PLANNING else "TasksRunning",
                        what)


def _overlay(state: BuildState, new: BuildState, cond: SetCondition, event: EmitEvent) -> Result:
    if new == state:
        return state, []
    effects: list[Effect] = [cond]
    p = _progressing(new)
    if p is not None:
        effects.append(p)
    effects.append(event)
    return new, effects


def _suspend(state: BuildState, event: SuspendChanged, now: datetime) -> Result:
    new = replace(state, suspended=event.suspended)
    if event.suspended:
        return _overlay(state, new, SetCondition(c.SUSPENDED, c.TRUE, "Suspended", "spec.suspend is true"),
                        EmitEvent("Normal", "Suspended", "no new agent Pods start"))
    return _overlay(state, new, SetCondition(c.SUSPENDED, c.FALSE, "InProgress", "spec.suspend is false"),
                    EmitEvent("Normal", "Resumed", "agent Pods start again"))


def _budget(state: BuildState, event: BudgetChanged, now: datetime) -> Result:
    new = replace(state, budget_exceeded=event.exceeded)
    if event.exceeded:
        return _overlay(state, new, SetCondition(c.BUDGET_EXCEEDED, c.TRUE, "BudgetExceeded",
                                                 "the token or cost budget is spent; raise spec.budget"),
                        EmitEvent("Warning", "BudgetExceeded", "no new agent Pods start"))
    return _overlay(state, new, SetCondition(c.BUDGET_EXCEEDED, c.FALSE, "InProgress",
                                             "the budget allows more work"),
                    EmitEvent("Normal", "BudgetRaised", "agent Pods start again"))


def _killswitch(state: BuildState, event: Killswitch, now: datetime) -> Result:
    new = replace(state, halted=event.engaged)
    if event.engaged:
        return _overlay(state, new, SetCondition(c.HALTED, c.TRUE, "Killswitch",
                                                 "the operator killswitch is engaged"),
                        EmitEvent("Warning", "Killswitch", "every agent Pod was stopped"))
    return _overlay(state, new, SetCondition(c.HALTED, c.FALSE, "InProgress", "the killswitch is released"),
                    EmitEvent("Normal", "KillswitchReleased", "agent Pods start again"))


def _deleted(state: BuildState, event: Deleted, now: datetime) -> Result:
    return replace(state, deleted=True), []


def _finalization_started(state: BuildState, event: FinalizationStarted, now: datetime) -> Result:
    text = f"finalization attempt {event.attempt} of {event.max_attempts}: draining the merge queue"
    return state, [
        SetCondition(c.FINALIZED, c.UNKNOWN, "InProgress", text),
        EmitEvent("Normal", "Finalizing", text),
    ]


def _finalization_finished(state: BuildState, event: FinalizationFinished, now: datetime) -> Result:
    if event.passed:
        text = f"finalization passed on attempt {event.attempt}: everything merged and the final sweep passed"
        return replace(state, phase=SUCCEEDED), [
            SetCondition(c.FINALIZED, c.TRUE, "Passed", text),
            SetCondition(c.PROGRESSING, c.FALSE, "Idle", "the build is finished"),
            SetCondition(c.READY, c.TRUE, "Completed", text),
            EmitEvent("Normal", "Finalized", text),
        ]
    text = f"{event.message} (after {event.attempt} finalization attempts)"
    return replace(state, phase=FAILED), [
        SetCondition(c.FINALIZED, c.FALSE, event.reason, text),
        SetCondition(c.PROGRESSING, c.FALSE, "Idle", "the build is finished"),
        SetCondition(c.READY, c.TRUE, "Failed", text),
        EmitEvent("Warning", "FinalizationFailed", text),
    ]


# --- the table ---------------------------------------------------------------------------------------

_ANY_PHASE: dict[type, Handler] = {
    TaskCountsChanged: _counts,
    SuspendChanged: _suspend,
    BudgetChanged: _budget,
    Killswitch: _killswitch,
    Deleted: _deleted,
}


def _rows(phase: str, extra: Mapping[type, Handler]) -> dict[tuple[str, type], Handler]:
    return {(phase, ev): h for ev, h in {**_ANY_PHASE, **extra}.items()}


_LATE: Final[Mapping[type, Handler]] = {Created: _ignore, PlannerFinished: _planner_finished,
                                        PlanInvalid: _ignore}
_FINISHED: Final[Mapping[type, Handler]] = {Created: _ignore, PlannerFinished: _ignore, PlanInvalid: _ignore}

TRANSITIONS: Final[Mapping[tuple[str, type], Handler]] = {
    **_rows(PENDING, {Created: _create}),
    **_rows(PLANNING, {Created: _ignore, PlannerFinished: _planner_finished, PlanInvalid: _plan_invalid}),
    **_rows(WORKING, _LATE),
    **_rows(MERGING, _LATE),
    **_rows(FINALIZING, {**_LATE, FinalizationStarted: _finalization_started,
                         FinalizationFinished: _finalization_finished}),
    **_rows(SUCCEEDED, _FINISHED),
    **_rows(FAILED, _FINISHED),
}
"""(phase, event type) -> handler. Impossible: ``PlannerFinished`` and ``PlanInvalid`` in ``Pending``
(there is no planner yet)."""


def decide(state: BuildState, event: Event, *, now: datetime) -> Result:
    """The new state and the effects for ``event`` in ``state``; raises :class:`InvalidTransition`."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"build {state.ref.name}: {type(event).__name__} is impossible in phase "
                                f"{state.phase}")
    return handler(state, event, now)
