"""The BuildRequest decider: ``decide(state, event, *, now) -> (state, effects)``.

Same style as :mod:`longshot.core.tasks`: pure, transitions in one table (:data:`TRANSITIONS`), missing pairs
raise :class:`InvalidTransition`, effects are plain data carried out by the shell, which writes
``new_state.to_status()`` plus the conditions in one patch.

Phases: ``Pending`` -> ``Planning`` (the planner AgentTask runs) -> ``Working`` (tasks run) -> when every task
is finished: ``Finalizing`` (:mod:`longshot.core.finalization` drains the merge queue, retries unmerged
branches and runs the final sweep) or, with finalization disabled, ``Merging`` (the queue drains) -> ``Succeeded``
/ ``Failed``. ``Suspended`` and ``Halted`` are overlays shown by :attr:`BuildState.display_phase`; they never
change the phase. The phase is derived from the status (:func:`phase_from_status`), so a restarted operator
rebuilds it without trusting ``status.phase`` (which is for display).

**Iterations.** Planning runs in iterations (``spec.planner.maxIterations``). When every task of an iteration
has ended and its branches landed (the shell sends :class:`IterationEnded` once the build's merge queue has
drained), the next iteration is planned on the new target tip: a planner task ``<build>-planner-i<k>`` whose task
input has the last iteration's results, or, for ``spec.planner.source`` ``roadmap`` and ``issues``, the shell
reads the source again (no planner Pod). Planning stops when the planner answers ``done`` (or an iteration after
the first plans nothing, or an intake source has nothing left: ``Planned=True/RequestMet``) or after
``maxIterations`` iterations; only then does the build finalize. ``status.iteration`` is the iteration under way.

The summary conditions follow kstatus and the Kubernetes conventions and are recomputed after every event
(:func:`summary`): ``Ready`` is True only when the build succeeded; ``Stalled`` is True with a reason on a
terminal failure or when a person must act (configuration, credentials, budget); ``Reconciling`` is True while
the operator works; ``Progressing`` says whether tasks are being worked on. The Ready message follows the phase
and names the tasks that need attention (``task api: base branch 'release' does not exist``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

from longshot.api import conditions as c
from longshot.api.handoff import PlannedTask
from longshot.core import effects, plan
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

REQUEST_MET: Final = "RequestMet"
"""``Planned`` reason once no more iterations will be planned because the request is met."""

TERMINAL_REASONS: Final = frozenset({"TasksFailed", "TestsFailed", "UnmergedBranches", "PlanRejected"})
WAITING_REASONS: Final = ("Configuration", "AuthFailed", "BudgetExceeded", "TaskBlocked", "AwaitingInput",
                          "AwaitingApproval")
"""Reasons a build waits on a person (not a terminal failure): editing the spec, the credentials, the budget, an
answer or an approval lets the build go on. The first four are ``Stalled=True`` (something must be fixed); the
last two, :data:`PERSON_REASONS`, are ``Ready=False`` with ``Stalled=False``: a question or an approval is part of
the work, not a failure (kstatus: InProgress; Argo CD: Suspended, as a Rollout waiting for promotion)."""
PERSON_REASONS: Final = frozenset({"AwaitingInput", "AwaitingApproval"})
"""Reasons of ``Stalled=True`` that mean the build is finished (failed), not waiting on a person."""


InvalidTransition = effects.InvalidTransition


@dataclass(frozen=True)
class TaskCounts:
    """AgentTasks of the build by state (``status.tasks``); ``progress`` is ``finished/total``.

    ``blocked`` (pending tasks whose dependencies failed) is part of ``pending``; ``stopped`` (failed tasks
    waiting on a person: credentials, configuration, budget) is part of ``failed``."""

    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    blocked: int = 0
    stopped: int = 0
    attempts: int | None = None
    """Attempts the work tasks started (each task's newest attempt number, summed); None when not known (a status
    written before the field existed). A finished build reopens when it finds more than it recorded: a task ran
    again, relaunched and perhaps ended between two of the build's reconciles (a build coalesces its events, one
    reconcile a second at most), so its phases alone may never have shown it running."""

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def progress(self) -> str:
        return f"{self.finished}/{self.total}"

    @property
    def all_terminal(self) -> bool:
        """No task runs or can still start, and none waits on a person."""
        return self.total > 0 and self.running == 0 and self.pending == self.blocked and self.stopped == 0

    @classmethod
    def from_phases(cls, phases: Iterable[str | None], *, blocked: int = 0, stopped: int = 0,
                    attempts: int | None = None) -> TaskCounts:
        """Counts of AgentTask ``status.phase`` values (Backoff and unset count as pending)."""
        n = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        total = 0
        for p in phases:
            total += 1
            key = {"Running": "running", "Succeeded": "succeeded", "Failed": "failed",
                   "Cancelled": "cancelled"}.get(p or "", "pending")
            n[key] += 1
        return cls(total=total, blocked=blocked, stopped=stopped, attempts=attempts, **n)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | Any | None) -> TaskCounts:
        if data is None:
            return cls()
        d = data if isinstance(data, Mapping) else data.model_dump()
        attempts = d.get("attempts")
        return cls(**{k: int(d.get(k) or 0) for k in
                      ("total", "pending", "running", "succeeded", "failed", "cancelled", "blocked", "stopped")},
                   attempts=int(attempts) if attempts is not None else None)

    def to_wire(self) -> dict[str, Any]:
        return {"total": self.total, "pending": self.pending, "running": self.running,
                "succeeded": self.succeeded, "failed": self.failed, "cancelled": self.cancelled,
                "blocked": self.blocked, "stopped": self.stopped, "progress": self.progress,
                **({"attempts": self.attempts} if self.attempts is not None else {})}


@dataclass(frozen=True)
class TaskIssue:
    """A task that needs attention, for the build's summary conditions.

    ``kind``: ``stopped`` (waits on a person: Auth, Configuration, BudgetExceeded), ``awaiting`` (its agent
    asked a question, waiting for ``spec.answer``), ``approval`` (a MergeJob waits for ``spec.approved``;
    ``task`` is the MergeJob's name), ``retrying`` (failed an attempt, another is scheduled), ``failed`` (failed
    for good), ``blocked`` (a dependency failed), ``forge`` (a MergeJob waits on its pull request,
    ``spec.merge.delivery: pullRequest``; ``task`` is the MergeJob's name, ``message`` the pull request's address,
    "" until it is opened)."""

    task: str
    kind: Literal["stopped", "awaiting", "approval", "retrying", "failed", "blocked", "forge"]
    message: str


@dataclass(frozen=True)
class PlannerView:
    """A top-level planner task of the build, as :func:`refused_planners` needs it."""
    name: str
    iteration: int
    replan: int = 0
    created: str = ""  # creationTimestamp (RFC 3339): orders re-plans made before they were labelled


def refused_planners(planners: Iterable[PlannerView], iteration: int, current: str | None) -> frozenset[str]:
    """The top-level planners whose plan was refused (a re-plan of the same iteration replaced them): not part
    of the build's work or counts. In the current iteration every planner but ``current`` was replaced; in an
    earlier one, every planner but its last re-plan (the one whose plan the iteration carried out). An
    earlier iteration's accepted planner is work that was done and stays counted."""
    by_iteration: dict[int, list[PlannerView]] = {}
    for p in planners:
        by_iteration.setdefault(max(1, p.iteration), []).append(p)
    refused: set[str] = set()
    for k, ps in by_iteration.items():
        last = max(ps, key=lambda p: (p.replan, p.created, p.name)).name
        kept = current if k >= iteration else last
        refused.update(p.name for p in ps if p.name != kept)
    return frozenset(refused)


def phase_from_status(conditions: Iterable[Mapping[str, Any]] | None, counts: TaskCounts,
                      planner_task: str | None, finalization_enabled: bool, *, iteration: int = 0,
                      planning_done: bool = True) -> BuildPhase:
    """The decider's phase implied by the status (the source of truth after a restart). ``planning_done``: no
    more iterations will be planned (the request is met or ``maxIterations`` ran)."""
    conds = list(conditions or ())
    if c.is_true(conds, c.READY):
        return SUCCEEDED
    stalled = c.find(conds, c.STALLED)
    if stalled is not None and stalled.get("status") == c.TRUE and stalled.get("reason") in TERMINAL_REASONS:
        return FAILED
    planned = c.find(conds, c.PLANNED)
    if planned is not None and planned.get("status") == c.FALSE:
        return FAILED
    if planned is not None and planned.get("status") == c.TRUE:
        if planning_done and (counts.all_terminal or counts.total == 0):
            return FINALIZING if finalization_enabled else MERGING
        return WORKING
    return PLANNING if planner_task or iteration > 0 else PENDING


def waiting_for_a_person(conditions: Iterable[Mapping[str, Any]] | None) -> str | None:
    """The reason a build waits on a person (:data:`WAITING_REASONS`), else None (not waiting, or finished for
    good): ``Stalled=True`` with a fixable reason (configuration, credentials, budget), or ``Ready=False`` with
    :data:`PERSON_REASONS` while nothing else runs (``Reconciling`` not True): a question or an approval, which is
    not a failure and so not ``Stalled``."""
    conds = list(conditions or ())
    stalled = c.find(conds, c.STALLED)
    if stalled is not None and stalled.get("status") == c.TRUE and stalled.get("reason") in WAITING_REASONS:
        return str(stalled["reason"])
    ready, reconciling = c.find(conds, c.READY), c.find(conds, c.RECONCILING)
    if ready is not None and ready.get("status") == c.FALSE and ready.get("reason") in PERSON_REASONS \
            and (reconciling is None or reconciling.get("status") != c.TRUE):
        return str(ready["reason"])
    return None


def budget_used(max_tokens: int | None, max_cost: float | None, tokens: int, cost: float) -> float | None:
    """The share of its budget a build has used: the larger of tokens and cost (1.0 or more: spent); None when
    it has no budget."""
    shares = [used / limit for used, limit in ((tokens, max_tokens), (cost, max_cost)) if limit]
    if max_tokens == 0 or max_cost == 0:
        shares.append(1.0)  # a zero budget is spent from the start
    return max(shares) if shares else None


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
    configuration_error: str | None = None
    """A deterministic spec error found before any Pod (a missing Secret or key, base branch, bad URL)."""
    dispatch_error: str | None = None
    """The class of the error the build's part of the dispatch plan raised (``core.scheduler.Selection.failed``):
    its tasks start nothing until their data is fixed; every other build dispatches."""
    counts: TaskCounts = field(default_factory=TaskCounts)
    issues: tuple[TaskIssue, ...] = ()
    outcome: tuple[str, str] | None = None
    """``(reason, message)`` of the finished build."""
    deleted: bool = False
    iteration: int = 0
    """The planning iteration under way (``status.iteration``): 0 before planning, 1 for the first plan."""
    max_iterations: int = 1
    """``spec.planner.maxIterations``."""
    source: str = "llm"
    """``spec.planner.source``: ``llm`` (planner Pods), ``roadmap`` or ``issues`` (the shell reads them)."""
    request_met: bool = False
    """The planner answered done (or planned nothing after the first iteration; an intake source had nothing
    left): no more iterations."""
    intake_error: tuple[str, str] | None = None
    """``(failure class, message)`` of the last failed read of the roadmap or issue tracker."""

    @property
    def planning_done(self) -> bool:
        """No more iterations will be planned."""
        return self.request_met or max(self.iteration, 1) >= self.max_iterations

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
    def from_build(cls, build: Any) -> BuildState:
        """State of a typed BuildRequest (``api.objects.BuildRequest``)."""
        spec, status = build.spec, build.status
        conds = [x.model_dump(by_alias=True, mode="json") for x in status.conditions]
        counts = TaskCounts.from_wire(status.tasks)
        outcome = None
        ready = c.find(conds, c.READY)
        if ready is not None and status.completion_time is not None:
            outcome = (str(ready.get("reason")), str(ready.get("message")))
        planned = c.find(conds, c.PLANNED)
        iteration = status.iteration or (1 if planned is not None else 0)
        request_met = planned is not None and planned.get("reason") == REQUEST_MET
        max_iterations = spec.planner.max_iterations
        planning_done = request_met or (iteration > 0 and iteration >= max_iterations)
        phase = phase_from_status(conds, counts, status.planner_task, spec.finalization.enabled,
                                  iteration=iteration, planning_done=planning_done)
        return cls(
            ref=plan.BuildRef(name=build.metadata.name, namespace=build.metadata.namespace,
                              uid=build.metadata.uid),
            request=spec.request,
            phase=phase,
            planner_task=status.planner_task,
            replans=status.replans,
            max_replans=spec.planner.max_replans,
            finalization_enabled=spec.finalization.enabled,
            suspended=c.is_true(conds, c.SUSPENDED),
            budget_exceeded=c.is_true(conds, c.BUDGET_EXCEEDED),
            halted=c.is_true(conds, c.HALTED),
            dispatch_error=_dispatch_error(conds),
            counts=counts,
            outcome=outcome if phase in DONE else None,
            iteration=iteration,
            max_iterations=max_iterations,
            source=spec.planner.source,
            request_met=request_met,
        )

    def to_status(self) -> dict[str, Any]:
        """Status fields this state owns (conditions come from the effects)."""
        return {"phase": self.display_phase, "plannerTask": self.planner_task, "replans": self.replans,
                "tasks": self.counts.to_wire(), "iteration": self.iteration}


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """The operator saw the BuildRequest for the first time (or again after a restart)."""


@dataclass(frozen=True)
class PlannerFinished:
    """A planner task succeeded with ``tasks``; ``context`` is ``plan.context_for(...)`` (its ``parent`` is
    None for the build's own planner, the subplanner's name otherwise). For ``roadmap`` and ``issues`` sources
    the shell sends it with the tasks it read. ``done``: the planner said the request is met."""

    tasks: Sequence[PlannedTask]
    context: plan.PlanContext
    done: bool = False
    planner: str | None = None
    """The planner task that returned the plan (None: tasks the shell read from a roadmap or tracker). A plan of
    the build's planner other than ``BuildState.planner_task`` is one a re-plan replaced: ignored."""


@dataclass(frozen=True)
class IterationEnded:
    """Every task of the iteration has ended and the build's merge queue has drained (no MergeJob on its way,
    no fixer running): plan the next iteration, unless planning is done."""


@dataclass(frozen=True)
class IntakeChecked:
    """The shell's last read of the roadmap file or issue tracker: None when it worked, else ``(failure class,
    message)``: ``Auth`` and ``Configuration`` wait for a person, ``RateLimited`` and ``Infrastructure`` are
    retried by the shell."""

    error: tuple[str, str] | None


@dataclass(frozen=True)
class PlanInvalid:
    """The build's planner produced nothing usable (its handoff was invalid or it failed for good)."""

    message: str


@dataclass(frozen=True)
class TaskCountsChanged:
    counts: TaskCounts


@dataclass(frozen=True)
class IssuesChanged:
    """The tasks that need attention changed (``TaskIssue``s, most important first)."""

    issues: tuple[TaskIssue, ...]


@dataclass(frozen=True)
class ConfigurationChecked:
    """The shell's check of the spec (Secrets and keys exist, the repository and base branch answer): None
    when it passed, else the message naming the field and the fix."""

    error: str | None


@dataclass(frozen=True)
class DispatchChecked:
    """The class of the error the build's part of the last dispatch plan raised, or None."""

    error: str | None


@dataclass(frozen=True)
class SuspendChanged:
    suspended: bool


@dataclass(frozen=True)
class BudgetChanged:
    """Whether the token or cost budget is spent (``core.usage``)."""

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
class Finished:
    """The outcome (from :mod:`longshot.core.finalization`): ``passed``, or not with ``reason`` (a documented
    reason such as ``TasksFailed``, ``TestsFailed``, ``UnmergedBranches``) and ``message``. ``attempt`` is the
    finalization attempt (0 when finalization is disabled)."""

    passed: bool
    reason: str
    message: str
    attempt: int = 0


Event = (Created | PlannerFinished | PlanInvalid | TaskCountsChanged | IssuesChanged | ConfigurationChecked
         | DispatchChecked
         | SuspendChanged | BudgetChanged | Killswitch | Deleted | FinalizationStarted | Finished | IterationEnded
         | IntakeChecked)

# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePlannerTask:
    """Create this planner AgentTask manifest (AlreadyExists is fine)."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class CreateTasks:
    """Create these AgentTask manifests, in order (AlreadyExists is fine)."""

    manifests: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class StartEarlySweep:
    """Begin the final sweep beside iteration ``iteration``'s planner: the queue has drained and nothing can move the
    target before the planner answers, so when it answers done, finalization adopts this sweep instead of starting
    one after it (``core.sweeps.early_sweep_kept``); when it plans more, the shell cancels it."""

    iteration: int


@dataclass(frozen=True)
class SetCompletion:
    """Set (``done``) or clear ``status.completionTime``."""

    done: bool


Effect = CreatePlannerTask | CreateTasks | StartEarlySweep | SetCondition | EmitEvent | SetCompletion
Result = tuple[BuildState, list[Effect]]
Handler = Callable[[BuildState, Any, datetime], Result]

# --- handlers ----------------------------------------------------------------------------------------


def _ignore(state: BuildState, event: Any, now: datetime) -> Result:
    return state, []


_SOURCE_TEXT: Final[Mapping[str, str]] = {"roadmap": "the roadmap file", "issues": "the issue tracker"}


def _create(state: BuildState, event: Created, now: datetime) -> Result:
    finalized = (SetCondition(c.FINALIZED, c.UNKNOWN, "Pending", "finalization runs when no work is left")
                 if state.finalization_enabled else
                 SetCondition(c.FINALIZED, c.UNKNOWN, "Disabled", "spec.finalization.enabled is false"))
    if state.source in _SOURCE_TEXT:
        text = f"iteration 1: reading {_SOURCE_TEXT[state.source]} (spec.planner.source={state.source})"
        return replace(state, phase=PLANNING, iteration=1), [
            SetCondition(c.PLANNED, c.UNKNOWN, "Pending", text),
            SetCondition(c.MERGED, c.UNKNOWN, "Pending", "nothing to merge yet"),
            finalized,
            EmitEvent("Normal", "Planning", text),
        ]
    manifest = plan.planner_task_manifest(state.ref, state.request, iteration=1)
    name = manifest["metadata"]["name"]
    new = replace(state, phase=PLANNING, planner_task=name, iteration=1)
    return new, [
        CreatePlannerTask(manifest),
        SetCondition(c.PLANNED, c.UNKNOWN, "Pending", f"waiting for the planner task {name}"),
        SetCondition(c.MERGED, c.UNKNOWN, "Pending", "nothing to merge yet"),
        finalized,
        EmitEvent("Normal", "Planning", f"created planner task {name}"),
    ]


def _iteration_ended(state: BuildState, event: IterationEnded, now: datetime) -> Result:
    if state.planning_done or state.iteration < 1:
        return state, []
    k = state.iteration + 1
    of = f"iteration {k} of {state.max_iterations}"
    if state.source in _SOURCE_TEXT:
        text = f"{of}: reading {_SOURCE_TEXT[state.source]} again at the new target tip"
        return replace(state, phase=PLANNING, iteration=k), [
            SetCondition(c.PLANNED, c.UNKNOWN, "NextIteration", text),
            EmitEvent("Normal", "NextIteration", text),
        ]
    manifest = plan.planner_task_manifest(state.ref, state.request, iteration=k)
    name = manifest["metadata"]["name"]
    text = f"{of}: planner task {name} plans what is left on the new target tip"
    early: list[Effect] = [StartEarlySweep(k)] if state.finalization_enabled else []
    return replace(state, phase=PLANNING, iteration=k, planner_task=name), [
        CreatePlannerTask(manifest),
        *early,
        SetCondition(c.PLANNED, c.UNKNOWN, "NextIteration", text),
        EmitEvent("Normal", "NextIteration", text),
    ]


def _intake(state: BuildState, event: IntakeChecked, now: datetime) -> Result:
    if event.error == state.intake_error:
        return state, []
    new = replace(state, intake_error=event.error)
    if event.error is None:
        return new, [EmitEvent("Normal", "IntakeRead", f"{_SOURCE_TEXT.get(state.source, 'the source')} was read")]
    fc, message = event.error
    return new, [EmitEvent("Warning", "RateLimited" if fc == "RateLimited" else "IntakeFailed", message)]


def _reject(state: BuildState, message: str) -> Result:
    if state.source in _SOURCE_TEXT:
        # a roadmap or issue list that does not make a valid plan: a person must change the source
        text = f"iteration {state.iteration}: the tasks from {_SOURCE_TEXT[state.source]} are not a valid plan: " \
               f"{message}"
        new = replace(state, phase=FAILED, outcome=("PlanRejected", text))
        effects0: list[Effect] = [SetCondition(c.PLANNED, c.FALSE, "PlanRejected", text), SetCompletion(True),
                                  EmitEvent("Warning", "PlanRejected", text)]
        if state.finalization_enabled:
            effects0.insert(1, SetCondition(c.FINALIZED, c.FALSE, "PlanRejected", text))
        return new, effects0
    if state.replans < state.max_replans:
        n = state.replans + 1
        manifest = plan.planner_task_manifest(state.ref, state.request, replan=n, feedback=message,
                                              iteration=max(1, state.iteration))
        name = manifest["metadata"]["name"]
        new = replace(state, replans=n, planner_task=name)
        text = f"plan rejected: {message}; re-planning ({n} of {state.max_replans}) with {name}"
        return new, [
            CreatePlannerTask(manifest),
            SetCondition(c.PLANNED, c.UNKNOWN, "PlanRejected", text),
            EmitEvent("Warning", "PlanRejected", text),
        ]
    text = f"plan rejected: {message}; planner.maxReplans={state.max_replans} re-plans used, giving up"
    new = replace(state, phase=FAILED, outcome=("PlanRejected", text))
    effects: list[Effect] = [
        SetCondition(c.PLANNED, c.FALSE, "PlanRejected", text),
        SetCompletion(True),
        EmitEvent("Warning", "PlanRejected", text),
    ]
    if state.finalization_enabled:
        effects.insert(1, SetCondition(c.FINALIZED, c.FALSE, "PlanRejected", text))
    return new, effects


def _planner_finished(state: BuildState, event: PlannerFinished, now: datetime) -> Result:
    ctx = event.context
    if ctx.parent is not None:
        return _subplan(state, event, now)
    if state.phase != PLANNING:
        return state, []  # the same plan delivered again after it was accepted: nothing to do
    if event.planner is not None and state.planner_task is not None and event.planner != state.planner_task:
        return state, []  # a replaced planner's plan, delivered again after it was rejected: not this planning's
    iteration = max(1, state.iteration)
    if event.done or (not event.tasks and (iteration > 1 or state.source in _SOURCE_TEXT)):
        why = ("the planner says the request is met" if event.done or state.source not in _SOURCE_TEXT
               else f"{_SOURCE_TEXT[state.source]} has nothing left to do")
        text = f"iteration {iteration}: {why}; no more iterations"
        return replace(state, phase=WORKING, request_met=True, iteration=iteration), [
            SetCondition(c.PLANNED, c.TRUE, REQUEST_MET, text),
            EmitEvent("Normal", REQUEST_MET, text),
        ]
    result = plan.build_tasks(event.tasks, ctx)
    if isinstance(result, plan.Rejected):
        return _reject(state, result.message)
    text = f"{len(result.manifests)} tasks planned"
    if state.max_iterations > 1:
        text = f"iteration {iteration} of {state.max_iterations}: {text}"
    effects: list[Effect] = [
        CreateTasks(result.manifests),
        SetCondition(c.PLANNED, c.TRUE, "PlanAccepted", text),
        EmitEvent("Normal", "PlanAccepted", text),
    ]
    if result.downgraded:
        effects.append(EmitEvent("Normal", "DecomposeLimited",
                                 "planner.maxDepth reached; run as workers: " + ", ".join(result.downgraded)))
    return replace(state, phase=WORKING, iteration=iteration), effects


def _subplan(state: BuildState, event: PlannerFinished, now: datetime) -> Result:
    if state.phase in DONE:
        return state, []
    result = plan.build_tasks(event.tasks, event.context)
    if isinstance(result, plan.Rejected):
        return state, [EmitEvent("Warning", "PlanRejected",
                                 f"subplan of {event.context.parent} rejected: {result.message}")]
    return state, [
        CreateTasks(result.manifests),
        EmitEvent("Normal", "PlanAccepted", f"subplan of {event.context.parent}: {len(result.manifests)} tasks"),
    ]


def _plan_invalid(state: BuildState, event: PlanInvalid, now: datetime) -> Result:
    return _reject(state, event.message)


def _counts(state: BuildState, event: TaskCountsChanged, now: datetime) -> Result:
    counts = event.counts
    new = replace(state, counts=counts)
    if state.phase in (PENDING, PLANNING):
        return new, []
    if state.phase == FAILED and state.outcome is not None and state.outcome[0] == "PlanRejected":
        # a refused plan ends the build until a person changes it: the failed planner's last attempt, counted in
        # the same reconcile that saw it fail, is not a task that "ran again after the build finished"
        return new, []
    if not (counts.all_terminal or (counts.total == 0 and state.planning_done)):
        if state.phase == WORKING:
            return new, []
        # A finishing or finished build got work again (a task was retried or resumed).
        return replace(new, phase=WORKING, outcome=None), [
            SetCompletion(False),
            EmitEvent("Normal", "Resumed", "tasks are running again"),
        ]
    reopened: list[Effect] = []
    if (state.phase in DONE and state.counts.attempts is not None and counts.attempts is not None
            and counts.attempts > state.counts.attempts):
        # every task is terminal again, but one ran after the build finished (relaunched, and ended before the
        # build looked): its new work is not in the outcome, so the build finishes again from here
        new = replace(new, phase=WORKING, outcome=None)
        reopened = [SetCompletion(False),
                    EmitEvent("Normal", "Resumed", "a task ran again after the build finished: finishing again")]
    elif state.phase in (FINALIZING, MERGING) or state.phase in DONE:
        return new, []
    if not state.planning_done:
        return new, reopened  # the iteration ends when the merge queue has drained (IterationEnded)
    summary = (f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.cancelled} cancelled, "
               f"{counts.blocked} blocked of {counts.total}")
    phase: BuildPhase = FINALIZING if state.finalization_enabled else MERGING
    return replace(new, phase=phase), [*reopened, EmitEvent("Normal", "TasksFinished", summary)]


def _issues(state: BuildState, event: IssuesChanged, now: datetime) -> Result:
    return replace(state, issues=event.issues), []


def _configuration(state: BuildState, event: ConfigurationChecked, now: datetime) -> Result:
    if event.error == state.configuration_error:
        return state, []
    new = replace(state, configuration_error=event.error)
    if event.error:
        return new, [EmitEvent("Warning", "Configuration", event.error)]
    return new, [EmitEvent("Normal", "Resumed", "the spec passed its checks again")]


DISPATCH_FAILED: Final = "DispatchFailed"


def dispatch_failed_text(error: str) -> str:
    """The condition message of a build whose part of the dispatch plan raised ``error`` (a class name)."""
    return (f"the dispatch plan of this build's tasks failed ({error}): none of its tasks starts, every other "
            "build goes on; fix or cancel the tasks with bad data (for example an oversized spec.scope)")


def _dispatch_error(conds: list[Mapping[str, Any]]) -> str | None:
    stalled = c.find(conds, c.STALLED)
    if stalled is None or stalled.get("status") != c.TRUE or stalled.get("reason") != DISPATCH_FAILED:
        return None
    message = str(stalled.get("message") or "")
    start, end = message.find("("), message.find(")")
    return message[start + 1:end] if 0 <= start < end else "Error"


def _dispatch(state: BuildState, event: DispatchChecked, now: datetime) -> Result:
    if event.error == state.dispatch_error:
        return state, []
    new = replace(state, dispatch_error=event.error)
    if event.error:
        return new, [EmitEvent("Warning", DISPATCH_FAILED, dispatch_failed_text(event.error))]
    return new, [EmitEvent("Normal", "Resumed", "the build's tasks are planned for dispatch again")]


def _suspend(state: BuildState, event: SuspendChanged, now: datetime) -> Result:
    if event.suspended == state.suspended:
        return state, []
    new = replace(state, suspended=event.suspended)
    if event.suspended:
        return new, [SetCondition(c.SUSPENDED, c.TRUE, "Suspended", "spec.suspend is true"),
                     EmitEvent("Normal", "Suspended", "no new agent Pods start")]
    return new, [SetCondition(c.SUSPENDED, c.FALSE, "InProgress", "spec.suspend is false"),
                 EmitEvent("Normal", "Resumed", "agent Pods start again")]


def _budget(state: BuildState, event: BudgetChanged, now: datetime) -> Result:
    if event.exceeded == state.budget_exceeded:
        return state, []
    new = replace(state, budget_exceeded=event.exceeded)
    if event.exceeded:
        return new, [SetCondition(c.BUDGET_EXCEEDED, c.TRUE, "BudgetExceeded",
                                  "the token or cost budget is spent; raise spec.budget"),
                     EmitEvent("Warning", "BudgetExceeded", "no new agent Pods start")]
    return new, [SetCondition(c.BUDGET_EXCEEDED, c.FALSE, "InProgress", "the budget allows more work"),
                 EmitEvent("Normal", "BudgetRaised", "agent Pods start again")]


def _killswitch(state: BuildState, event: Killswitch, now: datetime) -> Result:
    if event.engaged == state.halted:
        return state, []
    new = replace(state, halted=event.engaged)
    if event.engaged:
        return new, [SetCondition(c.HALTED, c.TRUE, "Killswitch", "the operator killswitch is engaged"),
                     EmitEvent("Warning", "Killswitch", "every agent Pod was stopped")]
    return new, [SetCondition(c.HALTED, c.FALSE, "InProgress", "the killswitch is released"),
                 EmitEvent("Normal", "KillswitchReleased", "agent Pods start again")]


def _deleted(state: BuildState, event: Deleted, now: datetime) -> Result:
    return replace(state, deleted=True), []


def _finalization_started(state: BuildState, event: FinalizationStarted, now: datetime) -> Result:
    text = f"finalization attempt {event.attempt} of {event.max_attempts}: draining the merge queue"
    return state, [
        SetCondition(c.FINALIZED, c.UNKNOWN, "InProgress", text),
        EmitEvent("Normal", "Finalizing", text),
    ]


def _finished(state: BuildState, event: Finished, now: datetime) -> Result:
    effects: list[Effect] = [SetCompletion(True)]
    if event.passed:
        text = event.message or "every planned task succeeded and every branch merged"
        if state.finalization_enabled:
            text = f"finalization passed on attempt {event.attempt}: {text}"
            effects.append(SetCondition(c.FINALIZED, c.TRUE, "Passed", text))
        effects.append(EmitEvent("Normal", "Succeeded", text))
        return replace(state, phase=SUCCEEDED, outcome=("Succeeded", text)), effects
    text = event.message
    if state.finalization_enabled:
        if event.attempt:
            text = f"{text} (after {event.attempt} finalization attempts)"
        effects.append(SetCondition(c.FINALIZED, c.FALSE, event.reason, text))
    effects.append(EmitEvent("Warning", event.reason, text))
    return replace(state, phase=FAILED, outcome=(event.reason, text)), effects


# --- the summary conditions ---------------------------------------------------------------------------

_PHASE_TEXT: Final[Mapping[str, str]] = {
    PENDING: "the build waits for the operator",
    PLANNING: "the planner is splitting the request into tasks",
    WORKING: "tasks are running",
    MERGING: "every task finished; the merge queue lands the remaining branches",
    FINALIZING: "every task finished; finalization drains the queue and runs the final sweep",
}


AWAITING_FORGE: Final = "AwaitingForge"
"""The build's reason while only pull requests on the forge are left (``Reconciling=True``: kstatus InProgress)."""


def forge_waiting_text(waiting: Sequence[TaskIssue]) -> str:
    """"waiting for N pull request(s) on the forge (approvals, branch protection, the forge's merge); the first:
    <url>": ``waiting`` are the ``forge`` issues, one per MergeJob; jobs of one pull request (``per: build``) count
    once; a job whose pull request is not opened yet counts as one."""
    urls = list(dict.fromkeys(i.message for i in waiting if i.message))
    n = len(urls) + sum(1 for i in waiting if not i.message)
    text = (f"waiting for {n} pull request{'s' if n != 1 else ''} on the forge (approvals, branch protection, the "
            "forge's merge)")
    if urls:
        return f"{text}; the first: {urls[0][:500]}"
    return f"{text}; MergeJob {waiting[0].task} is opening its pull request"


def _first(issues: Sequence[TaskIssue], kind: str) -> list[TaskIssue]:
    return [i for i in issues if i.kind == kind]


def _issue_text(issues: Sequence[TaskIssue]) -> str:
    shown = "; ".join(f"task {i.task}: {i.message}" for i in issues[:3])
    return shown + (f" (and {len(issues) - 3} more)" if len(issues) > 3 else "")


Triple = tuple[str, str, str]
"""A condition's (status, reason, message)."""


def _conds(ready: Triple, stalled: Triple, reconciling: Triple, progressing: Triple) -> list[SetCondition]:
    return [SetCondition(c.READY, *ready), SetCondition(c.STALLED, *stalled),  # type: ignore[arg-type]
            SetCondition(c.RECONCILING, *reconciling),  # type: ignore[arg-type]
            SetCondition(c.PROGRESSING, *progressing)]  # type: ignore[arg-type]


_NOT_STALLED: Final = (c.FALSE, "NotStalled", "nothing needs a person")


@dataclass(frozen=True)
class _Seen:
    """What every rule of :func:`summary` reads besides the state."""

    phase_reason: str
    phase_text: str
    busy: bool


def summary(state: BuildState) -> list[SetCondition]:
    """Ready, Stalled, Reconciling and Progressing for ``state`` (recomputed after every event): the first of
    :data:`_SUMMARY_RULES` that has something to say, in order (finished, paused, a stop, a person, the forge),
    else the build's progress."""
    done = _ended(state)
    if done is not None:
        return done
    phase_text = _PHASE_TEXT[state.phase]
    if state.counts.total and state.phase == WORKING:
        phase_text = f"tasks {state.counts.progress} done, {state.counts.running} running"
    seen = _Seen(state.phase if state.phase != PENDING else "Pending", phase_text, state.counts.running > 0)
    for rule in _SUMMARY_RULES:
        said = rule(state, seen)
        if said is not None:
            return said
    return _progress(state, seen)


def _ended(state: BuildState) -> list[SetCondition] | None:
    if state.phase == SUCCEEDED:
        text = state.outcome[1] if state.outcome else "the build succeeded"
        return _conds((c.TRUE, "Succeeded", text), _NOT_STALLED, (c.FALSE, "Finished", "the build is finished"),
                      (c.FALSE, "Idle", "the build is finished"))
    if state.phase == FAILED:
        reason, text = state.outcome or ("TasksFailed", "the build failed")
        return _conds((c.FALSE, reason, text), (c.TRUE, reason, text), (c.FALSE, reason, "the build is finished"),
                      (c.FALSE, "Idle", "the build is finished"))
    return None


def _paused(state: BuildState, seen: _Seen) -> list[SetCondition] | None:
    if state.halted:
        return _conds((c.FALSE, "Killswitch", "the operator killswitch is engaged"), _NOT_STALLED,
                      (c.FALSE, "Killswitch", "paused by the operator killswitch"),
                      (c.FALSE, "Killswitch", "the operator killswitch is engaged"))
    if state.suspended:
        return _conds((c.FALSE, "Suspended", f"spec.suspend is true ({seen.phase_text})"), _NOT_STALLED,
                      (c.FALSE, "Suspended", "paused by spec.suspend"), (c.FALSE, "Suspended", "spec.suspend is true"))
    return None


def _stopped_by(reason: str, text: str, busy: bool) -> list[SetCondition]:
    """A person must fix ``reason`` (Stalled); what runs goes on (Reconciling while busy)."""
    return _conds((c.FALSE, reason, text), (c.TRUE, reason, text), (c.TRUE if busy else c.FALSE, reason, text),
                  (c.FALSE, reason, text))


def _errors(state: BuildState, seen: _Seen) -> list[SetCondition] | None:
    if state.configuration_error:
        return _stopped_by("Configuration", state.configuration_error, seen.busy)
    if state.dispatch_error:
        return _stopped_by(DISPATCH_FAILED, dispatch_failed_text(state.dispatch_error), seen.busy)
    if state.intake_error is not None:
        fc, text = state.intake_error
        if fc in ("Auth", "Configuration"):
            return _stopped_by("AuthFailed" if fc == "Auth" else "Configuration", text, seen.busy)
        reason = "RateLimited" if fc == "RateLimited" else "IntakeFailed"
        return _conds((c.FALSE, reason, text), _NOT_STALLED, (c.TRUE, reason, text), (c.FALSE, reason, text))
    if state.budget_exceeded:
        return _stopped_by("BudgetExceeded", "the token or cost budget is spent; raise spec.budget to go on",
                           seen.busy)
    return None


def _stopped(state: BuildState, seen: _Seen) -> list[SetCondition] | None:
    stopped = _first(state.issues, "stopped")
    if not stopped:
        return None
    text = _issue_text(stopped)
    more = state.counts.running > 0 or state.counts.pending > state.counts.blocked
    reconciling = (c.TRUE, seen.phase_reason, seen.phase_text) if more else (c.FALSE, "TaskBlocked", text)
    return _conds((c.FALSE, "TaskBlocked", text), (c.TRUE, "TaskBlocked", text), reconciling,
                  (c.TRUE if more else c.FALSE, "TasksRunning" if more else "TaskBlocked", seen.phase_text))


def _waiting(state: BuildState, seen: _Seen) -> list[SetCondition] | None:
    asking = _first(state.issues, "awaiting")
    waiting = asking + _first(state.issues, "approval")
    if not waiting:
        return None
    text = "waiting for a person: " + "; ".join(
        (f"task {i.task} asked: {i.message}" if i.kind == "awaiting" else f"MergeJob {i.task}: {i.message}")
        for i in waiting[:3]) + (f" (and {len(waiting) - 3} more)" if len(waiting) > 3 else "")
    reason = "AwaitingInput" if asking else "AwaitingApproval"
    more = state.counts.running > 0 or state.counts.pending > state.counts.blocked + len(asking) \
        or state.phase == PLANNING
    if more:
        return _conds((c.FALSE, reason, f"{state.phase}: {text}"), _NOT_STALLED,
                      (c.TRUE, seen.phase_reason, seen.phase_text), (c.TRUE, "TasksRunning", seen.phase_text))
    # a wait on a person's answer or approval is not a failure: Stalled=False (kstatus: InProgress), Ready=False with
    # the reason (Argo CD: Suspended, as a Rollout waiting for promotion)
    return _conds((c.FALSE, reason, text), (c.FALSE, reason, text), (c.FALSE, reason, text), (c.FALSE, reason, text))


def _forge(state: BuildState, seen: _Seen) -> list[SetCondition] | None:
    forge = _first(state.issues, "forge")
    if not forge or seen.busy or state.phase not in (WORKING, MERGING, FINALIZING):
        return None
    text = forge_waiting_text(forge)
    return _conds((c.FALSE, AWAITING_FORGE, f"{state.phase}: {text}"), _NOT_STALLED,
                  (c.TRUE, AWAITING_FORGE, text), (c.FALSE, AWAITING_FORGE, text))


def _progress(state: BuildState, seen: _Seen) -> list[SetCondition]:
    retrying = _first(state.issues, "retrying")
    failed = _first(state.issues, "failed") + _first(state.issues, "blocked")
    ready_reason: str = seen.phase_reason
    ready_text = f"{state.phase}: {seen.phase_text}"
    if retrying:
        ready_reason, ready_text = "TaskRetrying", f"{state.phase}: {_issue_text(retrying)}"
    elif failed:
        ready_text = f"{state.phase}: {seen.phase_text}; {_issue_text(failed)}"
    progressing = ((c.TRUE, "TasksRunning", seen.phase_text) if state.phase == WORKING
                   else (c.TRUE, "InProgress", seen.phase_text) if state.phase == PLANNING
                   else (c.FALSE, "Idle", seen.phase_text))
    return _conds((c.FALSE, ready_reason, ready_text), _NOT_STALLED, (c.TRUE, seen.phase_reason, seen.phase_text),
                  progressing)


_SUMMARY_RULES: Final[tuple[Callable[[BuildState, _Seen], list[SetCondition] | None], ...]] = (
    _paused, _errors, _stopped, _waiting, _forge)
"""The summary's rules after a finished build's, in order: the first that says something wins."""


# --- the table ---------------------------------------------------------------------------------------

_ANY_PHASE: dict[type, Handler] = {
    TaskCountsChanged: _counts,
    IssuesChanged: _issues,
    ConfigurationChecked: _configuration,
    IntakeChecked: _intake,
    DispatchChecked: _dispatch,
    SuspendChanged: _suspend,
    BudgetChanged: _budget,
    Killswitch: _killswitch,
    Deleted: _deleted,
}


def _rows(phase: str, extra: Mapping[type, Handler]) -> dict[tuple[str, type], Handler]:
    return {(phase, ev): h for ev, h in {**_ANY_PHASE, **extra}.items()}


_LATE: Final[Mapping[type, Handler]] = {Created: _ignore, PlannerFinished: _planner_finished,
                                        PlanInvalid: _ignore, IterationEnded: _ignore}
_FINISHED: Final[Mapping[type, Handler]] = {Created: _ignore, PlannerFinished: _ignore, PlanInvalid: _ignore,
                                            FinalizationStarted: _ignore, Finished: _ignore,
                                            IterationEnded: _ignore}

TRANSITIONS: Final[Mapping[tuple[str, type], Handler]] = {
    **_rows(PENDING, {Created: _create}),
    **_rows(PLANNING, {Created: _ignore, PlannerFinished: _planner_finished, PlanInvalid: _plan_invalid,
                       IterationEnded: _ignore}),
    **_rows(WORKING, {**_LATE, IterationEnded: _iteration_ended}),
    **_rows(MERGING, {**_LATE, Finished: _finished}),
    **_rows(FINALIZING, {**_LATE, FinalizationStarted: _finalization_started, Finished: _finished}),
    **_rows(SUCCEEDED, _FINISHED),
    **_rows(FAILED, _FINISHED),
}
"""(phase, event type) -> handler. Impossible: ``PlannerFinished`` and ``PlanInvalid`` in ``Pending`` (there
is no planner yet), ``Finished`` while tasks still run (``Working``), ``FinalizationStarted`` outside
``Finalizing``."""


def decide(state: BuildState, event: Event, *, now: datetime) -> Result:
    """The new state and the effects for ``event`` in ``state`` (plus the recomputed summary conditions);
    raises :class:`InvalidTransition`."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"build {state.ref.name}: {type(event).__name__} is impossible in phase "
                                f"{state.phase}")
    new, effects = handler(state, event, now)
    return new, [*effects, *summary(new)]
