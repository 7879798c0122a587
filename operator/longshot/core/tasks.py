"""The AgentTask decider: ``decide(state, event, *, now, rand) -> (state, effects)``.

Pure: no I/O, time and randomness injected. The shell (``controllers/tasks.py``) builds a :class:`TaskState`
from the typed AgentTask (:meth:`TaskState.from_task`), turns what it observed into events, calls
:func:`decide` for each, carries out the :data:`Effect` list in order, then writes ``new_state.to_status()``
plus the conditions in one status patch (fenced on the object's resourceVersion).

Phases: ``Pending`` (waiting for dependencies or a slot), ``Backoff`` (waiting before the next attempt),
``Running`` (a Pod exists for ``state.attempt``; for a best-of-N task, its candidates run), ``AwaitingInput``
(the agent asked a person a question; a new ``spec.answer`` starts the next attempt), and the terminal
``Succeeded``, ``Failed``, ``Cancelled``.

A running attempt whose agent stopped reporting (no heartbeat for longer than the operator's bound) is hung:
:class:`HeartbeatLost` deletes its Pod and fails the attempt as ``Timeout``. A best-of-N task
(:mod:`longshot.core.fanout`) starts its candidates instead of a Pod (:class:`StartFanout`) and ends with the
judge's pick (:class:`FanoutFinished`): only the winner's branch gets a MergeJob.

**Per-task control.** ``spec.suspend`` (:class:`SuspendChanged`) pauses a task: a running attempt's Pod is
deleted, the attempt is recorded as suspended (not a failure, not counted against the retry policy) and the task
goes back to Pending with condition ``Suspended=True``; the dispatcher starts nothing for it until
``spec.suspend`` is false again (``Suspended=False/Resumed``), and the next attempt starts from the task's branch
like any later attempt. A new ``spec.retryToken`` (:class:`RetryRequested`) relaunches the task in any state: a
Running attempt is stopped, a Succeeded task runs again, and the retry count starts afresh; the handoff of a
relaunched task gets its own MergeJob (``names.merge_job_name``: ``<task>-a<N>`` once the task has had one).

**Models.** Each attempt runs with :func:`next_model` of ``state.models`` (the task's or the build's model, then
the build's ``spec.agent.fallbackModels``): the next model after an attempt that the model API failed or
rate-limited (:func:`upstream_failure`), else the model of the last attempt. ``status.attempts[].model`` records it.

A ``Failed`` task whose last failure needs a person (``Auth``, ``Configuration``, ``BudgetExceeded``) is
*stopped*: it records the build's generation (``stop_generation``) and comes back by itself
(:class:`Resume`) when the build's spec is edited or, for a budget, when the budget allows work again; a
new ``spec.retryToken`` always retries.

**Ledger.** Every attempt whose Pod ends, whatever the reason (finished, vanished, hung, cancelled, suspended,
relaunched, killed), gets :class:`FinalizeLedger` before its ``RecordAttempt`` with the end time, and that record
names the entry (``status.attempts[].ledger``; :func:`with_ledger`, ``core.ledger``).

Every transition is a row of :data:`TRANSITIONS`; a (phase, event) pair missing from it raises
:class:`InvalidTransition`. Events are idempotent: an event about an attempt older than the current one, or a
repeated event, changes nothing. The Pod of attempt N is always named ``names.pod_name(task, N)``, so an
operator restarted between creating a Pod and writing the status re-creates the same name and gets
``AlreadyExists`` (adopted): never two Pods for one attempt.

Conditions (kstatus conventions): ``Ready`` is True only on success; ``Stalled`` is True when the task failed
for good or waits on a person; ``Reconciling`` is True while it is pending, backing off or running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from longshot.api import conditions as c
from longshot.api import sanitize, timeutil
from longshot.api.agenttask import INITIAL_CONDITIONS, PENDING_MESSAGE, HandoffSummary, Role
from longshot.api.buildrequest import RetryPolicy
from longshot.api.exitcodes import FailureClass
from longshot.api.handoff import Handoff, HandoffError, PlannedTask
from longshot.core import backoff, effects, failures, fanout, ledger, names
from longshot.core.effects import EmitEvent, SetCondition

Phase = Literal["Pending", "Backoff", "Running", "AwaitingInput", "Succeeded", "Failed", "Cancelled"]
PENDING: Final = "Pending"
BACKOFF: Final = "Backoff"
RUNNING: Final = "Running"
AWAITING_INPUT: Final = "AwaitingInput"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
CANCELLED: Final = "Cancelled"
PHASES: Final = (PENDING, BACKOFF, RUNNING, AWAITING_INPUT, SUCCEEDED, FAILED, CANCELLED)
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

MERGING_ROLES: Final = frozenset({"worker", "fixer"})
"""Roles whose successful commit goes to the merge queue."""
PERSON_FAILURES: Final[frozenset[FailureClass]] = frozenset({"Auth", "Configuration", "BudgetExceeded"})
"""Failure classes that stop the task until a person changes something (never retried by backoff)."""
SUSPENDED_EXIT: Final = "suspended by spec.suspend"
"""``exitReason`` of an attempt stopped by ``spec.suspend`` (it has no failure class)."""
MODEL_API_MARKERS: Final = ("model API", "OpenAI-compatible API", "Anthropic API")
"""How the agent runner names a model API in its failure messages (``agent.backends.http``)."""
STOP_REASON: Final[Mapping[str, str]] = {"Auth": "AuthFailed", "Configuration": "Configuration",
                                         "BudgetExceeded": "BudgetExceeded"}


InvalidTransition = effects.InvalidTransition


# --- state -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of one attempt."""

    tokens: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class TaskState:
    """What the decider knows about one AgentTask."""

    name: str
    role: Role = "worker"
    phase: Phase = "Pending"
    attempt: int = 0
    """Number of the latest attempt started (0: none yet)."""
    retry_base: int = 0
    """Attempts that do not count against the retry policy: those before the last manual retry and
    those stopped by the killswitch. Attempts counted = ``attempt - retry_base``."""
    retry_token: str | None = None
    """The ``spec.retryToken`` already acted on."""
    next_attempt_time: datetime | None = None
    last_failure: FailureClass | None = None
    last_message: str = ""
    """The last attempt's failure message (shown to the next attempt and in the build's summary)."""
    stop_generation: int | None = None
    """The build's generation when the task stopped for a person (Auth, Configuration, BudgetExceeded)."""
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    question: str | None = None
    """The question the agent asked (``status.question``), kept after it is answered."""
    answer: str | None = None
    """The ``spec.answer`` already given to an attempt (``status.answer``)."""
    merges: bool = True
    """Whether a successful worker or fixer attempt gets a MergeJob: False for the candidates of a best-of-N task
    (only the winner, through its task, is merged)."""
    suspended: bool = False
    """``spec.suspend`` was acted on (condition ``Suspended=True``): no attempt starts."""
    merge_job: str | None = None
    """The MergeJob of the latest successful handoff (``status.mergeJob``); None before the first one."""
    models: tuple[str, ...] = ()
    """The model chain of this task: its own or the build's model, then the build's fallback models (empty: the
    backend needs no model, and the Pod uses the build's settings)."""
    last_model: str | None = None
    """The model of the latest attempt (``status.attempts[-1].model``)."""

    @property
    def pod(self) -> str | None:
        """Name of the current attempt's Pod."""
        return names.pod_name(self.name, self.attempt) if self.attempt else None

    @property
    def stopped(self) -> bool:
        """Failed for a reason only a person can fix (and that fixing resumes)."""
        return self.phase == FAILED and self.last_failure in PERSON_FAILURES

    @classmethod
    def from_task(cls, task: Any, build_retry: RetryPolicy | None = None,
                  models: tuple[str, ...] = ()) -> TaskState:
        """State of a typed AgentTask (``api.objects.AgentTask``); the retry policy is the task's, else the
        build's, else the default; ``models`` the task's model chain (:func:`model_chain`)."""
        status = task.status
        last = max(status.attempts, key=lambda a: a.number) if status.attempts else None
        phase: Phase = status.phase if status.phase in PHASES else PENDING
        return cls(
            name=task.metadata.name,
            role=task.spec.role,
            phase=phase,
            attempt=last.number if last else 0,
            retry_base=status.retry_base,
            retry_token=status.retry_token,
            next_attempt_time=status.next_attempt_time,
            last_failure=last.failure_class if last else None,
            last_message=(last.exit_reason or "") if last and last.failure_class else "",
            stop_generation=status.stop_generation,
            policy=task.spec.retry_policy or build_retry or RetryPolicy(),
            question=status.question,
            answer=status.answer,
            merges=fanout.FANOUT_LABEL not in task.metadata.labels,
            suspended=c.is_true([x.model_dump(by_alias=True) for x in status.conditions], c.SUSPENDED),
            merge_job=status.merge_job,
            models=models,
            last_model=last.model if last else None,
        )

    def to_status(self) -> dict[str, Any]:
        """The status fields this state owns (conditions, attempts and handoff come from effects)."""
        return {
            "phase": self.phase,
            "retryToken": self.retry_token,
            "retryBase": self.retry_base,
            "nextAttemptTime": timeutil.rfc3339(self.next_attempt_time) if self.next_attempt_time else None,
            "stopGeneration": self.stop_generation,
            "question": self.question,
            "answer": self.answer,
            "mergeJob": self.merge_job,
        }


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """The scheduler admitted the task. ``attempt`` defaults to the next one (``state.attempt + 1``)."""

    attempt: int | None = None


@dataclass(frozen=True)
class PodFinished:
    """The attempt's Pod ended (or is stuck for good, see ``failures.stuck``).

    ``handoff`` is the parsed handoff, the HandoffError raised while reading it, or None. ``metered`` is the
    usage the gateway measured for this attempt (authoritative); without it the handoff's own report is used.
    ``outcome`` overrides the classification (a stuck Pod's, from ``failures.stuck``). ``repository`` is the
    build's ``spec.repository.url``: a failure that says its host does not resolve is a Configuration failure.
    """

    pod_status: Mapping[str, Any]
    handoff: Handoff | HandoffError | None = None
    attempt: int | None = None
    metered: Usage | None = None
    outcome: failures.Outcome | None = None
    build_generation: int = 0
    repository: str = ""
    stuck: bool = False
    """The Pod will never start (``failures.stuck``): whatever the decision, it is deleted at once (no grace: its
    agent never ran)."""


@dataclass(frozen=True)
class PodVanished:
    """The attempt's Pod was deleted before it finished."""

    attempt: int | None = None


@dataclass(frozen=True)
class CancelRequested:
    """``spec.cancel`` is true."""


@dataclass(frozen=True)
class RetryRequested:
    """``spec.retryToken`` has this value (acted on once per distinct token)."""

    token: str


@dataclass(frozen=True)
class Resume:
    """What stopped the task was changed: the build's spec was edited (Auth, Configuration) or the budget
    allows work again (BudgetExceeded). ``why`` is for people."""

    why: str


@dataclass(frozen=True)
class BackoffElapsed:
    """The retry timer fired."""


@dataclass(frozen=True)
class Killswitch:
    """The operator-wide killswitch is engaged."""


@dataclass(frozen=True)
class Answered:
    """``spec.answer`` differs from ``status.answer`` while the task waits for one."""

    answer: str


@dataclass(frozen=True)
class HeartbeatLost:
    """The running attempt's agent has not reported for ``silent_seconds`` (more than the operator's bound,
    ``bound_seconds``): it is hung."""

    silent_seconds: float
    bound_seconds: float
    attempt: int | None = None


@dataclass(frozen=True)
class StartFanout:
    """A best-of-N task's dependencies are ready: start a round of ``count`` candidates instead of a Pod."""

    count: int


@dataclass(frozen=True)
class FanoutFinished:
    """The round of candidates ended (:mod:`longshot.core.fanout`): ``winner`` (the winning candidate's handoff,
    an ``api.agenttask.HandoffSummary`` in wire form, checked by the operator against its own candidates) or
    None when no candidate passed; ``message`` says which one and why, or why each failed."""

    winner: Mapping[str, Any] | None
    message: str


@dataclass(frozen=True)
class SuspendChanged:
    """``spec.suspend`` is ``suspended`` and differs from what was acted on (or is true while an attempt runs)."""

    suspended: bool


@dataclass(frozen=True)
class DependenciesChanged:
    """The readiness of the task's dependencies (``core.dependencies``): ``ready``, ``waiting`` (for them
    to succeed or merge) or ``blocked`` (one failed or was cancelled); ``message`` names them."""

    readiness: Literal["ready", "waiting", "blocked"]
    message: str = ""


@dataclass(frozen=True)
class AdmissionChanged:
    """Dispatch holds the ready task for capacity (``reason`` ``WaitingForCapacity`` or ``InsufficientCapacity``,
    ``message`` its place in line and its namespace's share) or at its namespace's own limits (``TenantLimit``,
    ``TokensPerHour``), or no longer does (``Pending``)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Unschedulable:
    """The attempt's Pod has found no node for ``seconds`` (``PodScheduled=False/Unschedulable``)."""

    attempt: int
    seconds: float


Event = (Admitted | PodFinished | PodVanished | CancelRequested | RetryRequested | Resume | BackoffElapsed
         | Killswitch | DependenciesChanged | Answered | HeartbeatLost | StartFanout | FanoutFinished
         | SuspendChanged | AdmissionChanged | Unschedulable)

# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePod:
    """Create the Pod of ``attempt`` (``pods.build_agent_pod(task, build, settings, attempt)``), named
    ``name``, running ``model`` (None: the task's or build's settings); AlreadyExists means it was created before
    a restart: fine."""

    attempt: int
    name: str
    model: str | None = None


@dataclass(frozen=True)
class DeletePod:
    """Delete the Pod ``name`` (NotFound is fine), with ``grace_seconds`` (None: the Pod's own)."""

    name: str
    grace_seconds: int | None = None


@dataclass(frozen=True)
class RecordAttempt:
    """Upsert ``status.attempts[number]``: merge the fields that are not None into the record with the
    same ``number`` (append when missing). Mirrors ``api.agenttask.Attempt``."""

    number: int
    pod: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    failure_class: FailureClass | None = None
    tokens: int | None = None
    cost: float | None = None
    model: str | None = None
    ledger: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """camelCase fields that are set."""
        out: dict[str, Any] = {"number": self.number, "pod": self.pod}
        if self.start_time is not None:
            out["startTime"] = timeutil.rfc3339(self.start_time)
        if self.end_time is not None:
            out["endTime"] = timeutil.rfc3339(self.end_time)
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.exit_reason is not None:
            out["exitReason"] = self.exit_reason
        if self.failure_class is not None:
            out["failureClass"] = self.failure_class
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.cost is not None:
            out["cost"] = self.cost
        if self.model is not None:
            out["model"] = self.model
        if self.ledger is not None:
            out["ledger"] = self.ledger
        return out


@dataclass(frozen=True)
class ScheduleRetry:
    """Look at the task again at ``at`` (a timer in the shell's work queue)."""

    at: datetime


@dataclass(frozen=True)
class CreateMergeJob:
    """Create the MergeJob ``name`` of this task's branch at ``commit`` (``names.merge_job_name``: the task's name
    for its first MergeJob; AlreadyExists is fine). ``base_commit`` is the commit the work started from;
    ``stacked_on`` the dependencies' commits a stacked branch was built on (``MergeJob.spec.stackedOn``)."""

    branch: str
    commit: str
    base_commit: str | None = None
    stacked_on: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class RecordHandoff:
    """Write ``status.handoff`` (an ``api.agenttask.HandoffSummary`` in wire form)."""

    handoff: Mapping[str, Any]


@dataclass(frozen=True)
class PlanReturned:
    """A planner task succeeded with this task list: hand it to ``builds.decide`` as ``PlannerFinished``
    (with this task as the planner). ``done`` is the planner's word that the request is met."""

    tasks: tuple[PlannedTask, ...]
    done: bool = False


@dataclass(frozen=True)
class StartCandidates:
    """Create the ``count`` candidate AgentTasks of round ``round`` of a best-of-N task
    (``fanout.candidate_manifests``; AlreadyExists is fine)."""

    round: int
    count: int


@dataclass(frozen=True)
class FinalizeLedger:
    """The attempt ``number`` (Pod ``pod``) ended: complete its ledger entry ``entry`` (``core.ledger``) with
    ``result.json``, the attempt's record as this decision writes it to ``status.attempts[]``. Carried out before
    the status write that records the end (create the entry when the gateway made none, else patch it), so a Pod
    whose end is recorded, the only kind retention deletes, has a finalised entry."""

    number: int
    pod: str
    entry: str


@dataclass(frozen=True)
class CountUsage:
    """Metrics: tokens and cost of a finished attempt (the status carries them in ``attempts``)."""

    tokens: int
    cost: float


Effect = (CreatePod | DeletePod | SetCondition | RecordAttempt | ScheduleRetry | EmitEvent | CreateMergeJob
          | RecordHandoff | PlanReturned | CountUsage | StartCandidates | FinalizeLedger)

Rand = Callable[[], float]
Result = tuple[TaskState, list[Effect]]
Handler = Callable[[TaskState, Any, datetime, Rand], Result]

# --- conditions --------------------------------------------------------------------------------------


def _summary(ready: tuple[str, str, str], stalled: tuple[str, str, str],
             reconciling: tuple[str, str, str]) -> list[Effect]:
    return [SetCondition(c.READY, *ready), SetCondition(c.STALLED, *stalled),  # type: ignore[arg-type]
            SetCondition(c.RECONCILING, *reconciling)]  # type: ignore[arg-type]


def _working(reason: str, message: str) -> list[Effect]:
    return _summary((c.FALSE, reason, message), (c.FALSE, "NotStalled", "nothing needs a person"),
                    (c.TRUE, reason, message))


def _finished_ok(message: str) -> list[Effect]:
    return _summary((c.TRUE, "Succeeded", message), (c.FALSE, "NotStalled", "nothing needs a person"),
                    (c.FALSE, "Finished", "nothing more to do"))


def _finished_stalled(reason: str, message: str) -> list[Effect]:
    return _summary((c.FALSE, reason, message), (c.TRUE, reason, message),
                    (c.FALSE, reason, "stopped: " + message))


# --- handlers ----------------------------------------------------------------------------------------


def _ignore(state: TaskState, event: Any, now: datetime, rand: Rand) -> Result:
    return state, []


def _attempt_of(state: TaskState, event: Any) -> int:
    return event.attempt if event.attempt is not None else state.attempt


def _stale(state: TaskState, event: Any, now: datetime, rand: Rand) -> Result:
    """A Pod event about an attempt already dealt with: nothing to do. A future attempt is a bug."""
    if _attempt_of(state, event) > state.attempt:
        raise InvalidTransition(
            f"{state.name}: {type(event).__name__} for attempt {event.attempt} in phase {state.phase}, "
            f"but the latest attempt is {state.attempt}")
    return state, []


def _pod_event_while_pending(state: TaskState, event: Any, now: datetime, rand: Rand) -> Result:
    """A Pod of the next attempt exists although the status says Pending: the operator created it and
    was restarted before writing the status. Adopt the attempt, then handle the event."""
    if event.attempt is not None and event.attempt == state.attempt + 1:
        started, effects = _start(state, Admitted(event.attempt), now, rand)
        effects = [e for e in effects if not isinstance(e, CreatePod)]
        handler = _finish if isinstance(event, PodFinished) else _vanished
        final, more = handler(started, event, now, rand)
        return final, effects + more
    return _stale(state, event, now, rand)


def _start(state: TaskState, event: Admitted, now: datetime, rand: Rand) -> Result:
    number = state.attempt + 1
    if event.attempt is not None and event.attempt != number:
        raise InvalidTransition(f"{state.name}: admitted for attempt {event.attempt}, but the next attempt "
                                f"is {number}")
    model = next_model(state)
    new = replace(state, phase=RUNNING, attempt=number, next_attempt_time=None, stop_generation=None,
                  last_model=model)
    pod = names.pod_name(state.name, number)
    return new, [
        CreatePod(number, pod, model),
        RecordAttempt(number, pod, start_time=now, model=model),
        SetCondition(c.RUNNING, c.TRUE, "PodRunning", f"attempt {number} runs in Pod {pod}"),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "InProgress", f"attempt {number} is running"),
        SetCondition(c.BLOCKED, c.FALSE, "DependenciesReady", "every dependency is done"),
        SetCondition(c.ADMITTED, c.TRUE, "Admitted", f"attempt {number} admitted"),
        *_working("InProgress", f"attempt {number} is running in Pod {pod}"),
        EmitEvent("Normal", "AttemptStarted", f"attempt {number} started in Pod {pod}", routine=True),
    ]


def _duplicate_admit(state: TaskState, event: Admitted, now: datetime, rand: Rand) -> Result:
    if event.attempt is None or event.attempt <= state.attempt:
        return state, []  # the same admission delivered again: the Pod already exists
    raise InvalidTransition(f"{state.name}: admitted for attempt {event.attempt} while attempt "
                            f"{state.attempt} is running")


def _usage_of(event: PodFinished) -> Usage:
    """The attempt's usage: field by field the larger of what the gateway metered and what the handoff says
    (the agent could understate; ``core.usage`` counts the same way)."""
    metered = event.metered or Usage()
    if isinstance(event.handoff, Handoff):
        return Usage(max(metered.tokens, event.handoff.usage.tokens), max(metered.cost, event.handoff.usage.cost))
    return metered


def _finish(state: TaskState, event: PodFinished, now: datetime, rand: Rand) -> Result:
    number = _attempt_of(state, event)
    if number < state.attempt:
        return state, []
    if number > state.attempt:
        return _stale(state, event, now, rand)
    outcome = event.outcome or failures.classify(event.pod_status, event.handoff, task=state.name,
                                                 attempt=number, repository=event.repository)
    usage = _usage_of(event)
    effects: list[Effect] = []
    if usage.tokens or usage.cost:
        effects.append(CountUsage(usage.tokens, usage.cost))
    handoff = event.handoff if isinstance(event.handoff, Handoff) else None
    if outcome.ok and handoff is not None and handoff.outcome == "needs-input":
        return _ask(state, handoff, outcome, usage, now, effects)
    if outcome.ok and handoff is not None:
        return _succeed(state, handoff, outcome, usage, now, effects)
    return _fail(state, outcome, usage, now, rand, effects, event.build_generation)


def _succeed(state: TaskState, handoff: Handoff, outcome: failures.Outcome, usage: Usage, now: datetime,
             effects: list[Effect]) -> Result:
    number = state.attempt
    pod = names.pod_name(state.name, number)
    summary = HandoffSummary(
        branch=handoff.branch, commit=handoff.commit, files_changed=handoff.files_changed[:10_000],
        summary=handoff.summary[:32768], tokens=usage.tokens, cost=usage.cost, verdict=handoff.verdict,
        reasons=[r[:2048] for r in handoff.reasons[:50]], base_commit=handoff.base_commit,
        stacked_on=handoff.stacked_on[:256],
    )
    text = f"attempt {number}: {handoff.outcome}"
    effects = [
        RecordAttempt(number, pod, end_time=now, exit_code=outcome.exit_code, exit_reason="Completed",
                      tokens=usage.tokens, cost=usage.cost),
        RecordHandoff(summary.to_wire()),
        *effects,
        SetCondition(c.RUNNING, c.FALSE, "Completed", f"attempt {number} finished"),
        SetCondition(c.SUCCEEDED, c.TRUE, "Completed", text),
        SetCondition(c.AUTHENTICATED, c.TRUE, "Completed", "the agent authenticated"),
        *_finished_ok(text),
        EmitEvent("Normal", "Succeeded", f"attempt {number} succeeded ({handoff.outcome})", routine=True),
    ]
    job = state.merge_job
    if (state.role in MERGING_ROLES and state.merges and handoff.outcome == "succeeded" and handoff.branch
            and handoff.commit):
        job = names.merge_job_name(state.name, number, first=state.merge_job is None)
        effects.append(CreateMergeJob(handoff.branch, handoff.commit, handoff.base_commit,
                                      tuple(handoff.stacked_on[:256]), job))
    if state.role == "planner" and handoff.outcome in ("succeeded", "empty"):
        effects.append(PlanReturned(tuple(handoff.tasks), handoff.done))
    new = replace(state, phase=SUCCEEDED, next_attempt_time=None, last_failure=None, last_message="",
                  stop_generation=None, merge_job=job)
    return new, effects


def _ask(state: TaskState, handoff: Handoff, outcome: failures.Outcome, usage: Usage, now: datetime,
         effects: list[Effect]) -> Result:
    """The agent asked a person (tool ``ask``): wait for ``spec.answer``. Not a failure, and the attempt does not
    count against the retry policy."""
    number = state.attempt
    pod = names.pod_name(state.name, number)
    question = (handoff.question or "").strip()[:4096] or "(the agent asked without saying what)"
    text = f"attempt {number} asked: {question}"
    hint = "; answer with kubectl patch at " + state.name + " --type merge -p '{\"spec\":{\"answer\":\"...\"}}'"
    new = replace(state, phase=AWAITING_INPUT, question=question, retry_base=state.retry_base + 1,
                  next_attempt_time=None, last_failure=None, last_message="")
    return new, [
        RecordAttempt(number, pod, end_time=now, exit_code=outcome.exit_code,
                      exit_reason=f"asked a question: {question}"[:1024], tokens=usage.tokens, cost=usage.cost),
        *effects,
        SetCondition(c.AWAITING_INPUT, c.TRUE, "QuestionAsked", question),
        SetCondition(c.RUNNING, c.FALSE, "QuestionAsked", f"attempt {number} asked a question"),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "QuestionAsked", text),
        *_summary((c.FALSE, "QuestionAsked", text + hint), (c.FALSE, "QuestionAsked", text),
                  (c.FALSE, "QuestionAsked", "waiting for spec.answer")),
        EmitEvent("Normal", "QuestionAsked", text),
    ]


def _answered(state: TaskState, event: Answered, now: datetime, rand: Rand) -> Result:
    if event.answer == state.answer:
        return state, []
    new = replace(state, phase=PENDING, answer=event.answer, next_attempt_time=None)
    text = "spec.answer answered the question: the next attempt has both in its prompt"
    return new, [
        SetCondition(c.AWAITING_INPUT, c.FALSE, "Answered", text),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "Answered", "waiting for a worker slot"),
        *_working("Pending", "answered: waiting for a worker slot"),
        EmitEvent("Normal", "Answered", text),
    ]


def _hung(state: TaskState, event: HeartbeatLost, now: datetime, rand: Rand) -> Result:
    number = _attempt_of(state, event)
    if number != state.attempt:
        return _stale(state, event, now, rand)
    pod = names.pod_name(state.name, number)
    message = (f"the agent sent no heartbeat for {event.silent_seconds:.0f}s (more than the operator's bound of "
               f"{event.bound_seconds:.0f}s, LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS): it is hung; its Pod was deleted")
    outcome = failures.Outcome("Timeout", message, None, "HeartbeatLost")
    new, effects = _fail(state, outcome, Usage(), now, rand, [], 0)
    return new, [DeletePod(pod), EmitEvent("Warning", "HeartbeatLost", f"attempt {number}: {message}"), *effects]


def _start_fanout(state: TaskState, event: StartFanout, now: datetime, rand: Rand) -> Result:
    """Start a round of candidates; the task holds no Pod of its own (its candidates do)."""
    number = state.attempt + 1
    text = f"round {number}: {event.count} candidates run, are gated and judged"
    new = replace(state, phase=RUNNING, attempt=number, next_attempt_time=None, stop_generation=None)
    return new, [
        StartCandidates(number, event.count),
        RecordAttempt(number, fanout.round_label(state.name, number), start_time=now),
        SetCondition(c.RUNNING, c.TRUE, "FanningOut", text),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "FanningOut", text),
        SetCondition(c.BLOCKED, c.FALSE, "DependenciesReady", "every dependency is done"),
        *_working("FanningOut", text),
        EmitEvent("Normal", "FanningOut", text),
    ]


def _fanout_finished(state: TaskState, event: FanoutFinished, now: datetime, rand: Rand) -> Result:
    number = state.attempt
    label = fanout.round_label(state.name, number)
    if event.winner is None:
        message = f"round {number}: {event.message}"
        new = replace(state, phase=FAILED, last_failure="AgentError", last_message=event.message,
                      next_attempt_time=None)
        return new, [
            RecordAttempt(number, label, end_time=now, exit_reason=event.message[:1024], failure_class="AgentError"),
            SetCondition(c.RUNNING, c.FALSE, "NoCandidatePassed", message),
            SetCondition(c.SUCCEEDED, c.FALSE, "NoCandidatePassed", message),
            *_finished_stalled("NoCandidatePassed", message),
            EmitEvent("Warning", "NoCandidatePassed", message),
        ]
    w = event.winner
    text = f"round {number}: {event.message}"
    effects: list[Effect] = [
        RecordAttempt(number, label, end_time=now, exit_reason="Completed"),
        RecordHandoff(dict(w)),
        SetCondition(c.RUNNING, c.FALSE, "Judged", text),
        SetCondition(c.SUCCEEDED, c.TRUE, "Judged", text),
        *_finished_ok(text),
        EmitEvent("Normal", "Judged", text),
    ]
    job = state.merge_job
    if state.role in MERGING_ROLES and state.merges and w.get("branch") and w.get("commit"):
        job = names.merge_job_name(state.name, number, first=state.merge_job is None)
        effects.append(CreateMergeJob(str(w["branch"]), str(w["commit"]), w.get("baseCommit"),
                                      tuple(str(x) for x in w.get("stackedOn") or ()), job))
    new = replace(state, phase=SUCCEEDED, next_attempt_time=None, last_failure=None, last_message="",
                  stop_generation=None, merge_job=job)
    return new, effects


def _fail(state: TaskState, outcome: failures.Outcome, usage: Usage, now: datetime, rand: Rand,
          effects: list[Effect], build_generation: int) -> Result:
    number = state.attempt
    pod = names.pod_name(state.name, number)
    fc: FailureClass = outcome.failure_class or "Infrastructure"
    # the message may be the agent's (its handoff, its termination message): no control characters in status/Events
    outcome = replace(outcome, message=sanitize.clean(outcome.message))
    effects = [
        RecordAttempt(number, pod, end_time=now, exit_code=outcome.exit_code,
                      exit_reason=outcome.message[:1024], failure_class=fc, tokens=usage.tokens, cost=usage.cost),
        *effects,
    ]
    if fc in PERSON_FAILURES:
        return _stop(state, fc, outcome.message, number, effects, build_generation)
    counted = max(number - state.retry_base, 1)
    wait = backoff.delay(counted, fc, state.policy, rand)
    if wait is None:
        reason = "InvalidHandoff" if fc == "InvalidHandoff" else "Failed"
        message = f"attempt {number} failed ({fc}): {outcome.message}; no retries left"
        new = replace(state, phase=FAILED, last_failure=fc, last_message=outcome.message,
                      next_attempt_time=None)
        return new, [
            *effects,
            SetCondition(c.RUNNING, c.FALSE, reason, f"attempt {number} failed"),
            SetCondition(c.SUCCEEDED, c.FALSE, reason, message),
            *_finished_stalled(reason, message),
            EmitEvent("Warning", "Failed", message),
        ]
    at = now + timedelta(seconds=wait)
    message = f"attempt {number} failed ({fc}): {outcome.message}; retrying in {wait:.0f}s"
    new = replace(state, phase=BACKOFF, last_failure=fc, last_message=outcome.message, next_attempt_time=at)
    return new, [
        *effects,
        ScheduleRetry(at),
        SetCondition(c.RUNNING, c.FALSE, "RetryScheduled", f"attempt {number} failed"),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "RetryScheduled", message),
        *_working("RetryScheduled", message),
        EmitEvent("Warning", "RetryScheduled", message),
    ]


def _stop(state: TaskState, fc: FailureClass, detail: str, number: int, effects: list[Effect],
          build_generation: int) -> Result:
    """Failed for a reason only a person can fix: stalled, resumed by a spec edit, a budget or a retry."""
    reason = STOP_REASON[fc]
    fix = {"Auth": "fix the credentials Secret named in the BuildRequest (editing the BuildRequest or a new "
                   "spec.retryToken resumes)",
           "Configuration": "fix the BuildRequest's spec as the message says (the edit resumes the task)",
           "BudgetExceeded": "raise spec.budget of the BuildRequest (the task resumes by itself)"}[fc]
    message = f"attempt {number}: {detail}; {fix}"
    new = replace(state, phase=FAILED, last_failure=fc, last_message=detail, next_attempt_time=None,
                  stop_generation=build_generation)
    out: list[Effect] = [*effects]
    if fc == "Auth":
        out.append(SetCondition(c.AUTHENTICATED, c.FALSE, "AuthFailed", detail))
    out += [
        SetCondition(c.RUNNING, c.FALSE, reason, f"attempt {number} stopped"),
        SetCondition(c.SUCCEEDED, c.FALSE, reason, message),
        *_finished_stalled(reason, message),
        EmitEvent("Warning", reason, message),
    ]
    return new, out


def _vanished(state: TaskState, event: PodVanished, now: datetime, rand: Rand) -> Result:
    number = _attempt_of(state, event)
    if number != state.attempt:
        return _stale(state, event, now, rand)
    outcome = failures.Outcome("Infrastructure", "the Pod was deleted before the agent finished",
                               None, "PodDeleted")
    return _fail(state, outcome, Usage(), now, rand, [], 0)


def _cancel(state: TaskState, event: Any, now: datetime, rand: Rand) -> Result:
    effects: list[Effect] = []
    if state.phase == RUNNING and state.pod:
        effects.append(DeletePod(state.pod))
        effects.append(RecordAttempt(state.attempt, state.pod, end_time=now, exit_reason="Cancelled"))
    new = replace(state, phase=CANCELLED, next_attempt_time=None)
    return new, [
        *effects,
        SetCondition(c.RUNNING, c.FALSE, "Cancelled", "cancelled by spec.cancel"),
        SetCondition(c.SUCCEEDED, c.FALSE, "Cancelled", "cancelled by spec.cancel"),
        *_summary((c.FALSE, "Cancelled", "cancelled by spec.cancel"),
                  (c.FALSE, "NotStalled", "cancelled by a user: nothing needs a person"),
                  (c.FALSE, "Cancelled", "cancelled by spec.cancel")),
        EmitEvent("Normal", "Cancelled", "the task was cancelled"),
    ]


def _ack_token(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    """A new retry token while there is nothing to retry: remember it, so it is not acted on later."""
    if event.token == state.retry_token:
        return state, []
    return replace(state, retry_token=event.token), []


def _requeue(state: TaskState, why: str, *, token: str | None) -> Result:
    new = replace(state, phase=PENDING, retry_token=token if token is not None else state.retry_token,
                  retry_base=state.attempt, next_attempt_time=None, stop_generation=None)
    effects: list[Effect] = [
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "Pending", f"{why}: waiting for a worker slot"),
        *_working("Pending", f"{why}: waiting for a worker slot"),
        EmitEvent("Normal", "RetryRequested" if token is not None else "Resumed", why),
    ]
    if state.last_failure == "Auth":
        effects.insert(0, SetCondition(c.AUTHENTICATED, c.UNKNOWN, "Pending",
                                       "the next attempt checks the credentials"))
    if state.phase == AWAITING_INPUT:
        effects.insert(0, SetCondition(c.AWAITING_INPUT, c.FALSE, "NotRequired", f"{why}: the question is dropped"))
    return new, effects


def _cancel_waiting(state: TaskState, event: Any, now: datetime, rand: Rand) -> Result:
    new, effects = _cancel(state, event, now, rand)
    return new, [SetCondition(c.AWAITING_INPUT, c.FALSE, "Cancelled", "cancelled by spec.cancel"), *effects]


def _retry(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    if event.token == state.retry_token:
        return state, []
    return _requeue(state, f"retry requested (token {event.token!r})", token=event.token)


def _retry_pending(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    """A new token while the task waits for its next attempt anyway: remember it and start the retry count afresh."""
    if event.token == state.retry_token:
        return state, []
    return replace(state, retry_token=event.token, retry_base=state.attempt), []


def _relaunch_running(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    """A new token while an attempt runs: stop it (not a failure) and wait for a new one."""
    if event.token == state.retry_token:
        return state, []
    pod = state.pod or ""
    new, effects = _requeue(state, f"relaunch requested (token {event.token!r})", token=event.token)
    return new, [
        DeletePod(pod),
        RecordAttempt(state.attempt, pod, end_time=now, exit_reason=f"stopped: relaunched (token {event.token!r})"),
        SetCondition(c.RUNNING, c.FALSE, "Relaunched", f"attempt {state.attempt} stopped by a relaunch"),
        *effects,
    ]


def _suspend(state: TaskState, event: SuspendChanged, now: datetime, rand: Rand) -> Result:
    """``spec.suspend`` changed (or is true while an attempt runs). Suspending stops a running attempt (its Pod is
    deleted; not a failure, not counted) and puts the task back to Pending; a backoff is dropped. Resuming clears
    the flag: the dispatcher may start the next attempt."""
    if not event.suspended:
        if not state.suspended:
            return state, []
        new = replace(state, suspended=False)
        effects: list[Effect] = [SetCondition(c.SUSPENDED, c.FALSE, "Resumed", "spec.suspend is false"),
                                 EmitEvent("Normal", "Resumed", "spec.suspend is false: the task may start again")]
        if state.phase == PENDING:
            effects += _working("Pending", "resumed: waiting for a worker slot")
        return new, effects
    if state.suspended and state.phase != RUNNING:
        return state, []
    text = "paused by spec.suspend"
    out: list[Effect] = []
    new = replace(state, suspended=True)
    if state.phase == RUNNING:
        pod = state.pod or ""
        out += [DeletePod(pod),
                RecordAttempt(state.attempt, pod, end_time=now, exit_reason=SUSPENDED_EXIT),
                SetCondition(c.RUNNING, c.FALSE, "Suspended", f"attempt {state.attempt} stopped by spec.suspend")]
        text = f"attempt {state.attempt} stopped by spec.suspend; the next one starts from the task's branch"
        new = replace(new, phase=PENDING, retry_base=state.retry_base + 1, next_attempt_time=None)
    elif state.phase == BACKOFF:
        new = replace(new, phase=PENDING, next_attempt_time=None)
    if new.phase == PENDING:
        out += [SetCondition(c.SUCCEEDED, c.UNKNOWN, "Suspended", text),
                *_summary((c.FALSE, "Suspended", text), (c.FALSE, "NotStalled", "suspended by a user"),
                          (c.FALSE, "Suspended", "paused by spec.suspend"))]
    return new, [*out, SetCondition(c.SUSPENDED, c.TRUE, "Suspended", text),
                 EmitEvent("Normal", "Suspended", text)]


def _resume(state: TaskState, event: Resume, now: datetime, rand: Rand) -> Result:
    if not state.stopped:
        return state, []  # only a stop for a person resumes by itself; a plain failure needs a retry token
    return _requeue(state, f"resumed: {event.why}", token=None)


def _backoff_elapsed(state: TaskState, event: BackoffElapsed, now: datetime, rand: Rand) -> Result:
    if state.next_attempt_time is not None and now < state.next_attempt_time:
        return state, [ScheduleRetry(state.next_attempt_time)]  # an early timer: wait again
    new = replace(state, phase=PENDING, next_attempt_time=None)
    return new, _working("Pending", "waiting for a worker slot")


def _dependencies(state: TaskState, event: DependenciesChanged, now: datetime, rand: Rand) -> Result:
    if event.readiness == "blocked":
        return state, [
            SetCondition(c.BLOCKED, c.TRUE, "DependencyFailed", event.message),
            *_summary((c.FALSE, "DependencyFailed", event.message), (c.TRUE, "DependencyFailed", event.message),
                      (c.FALSE, "DependencyFailed", "cannot start: " + event.message)),
        ]
    if event.readiness == "waiting":
        return state, [
            SetCondition(c.BLOCKED, c.FALSE, "WaitingForDependencies", event.message),
            *_working("WaitingForDependencies", event.message),
        ]
    return state, [
        SetCondition(c.BLOCKED, c.FALSE, "DependenciesReady", "every dependency is done"),
        *_working("Pending", "waiting for a worker slot"),
    ]


def _admission(state: TaskState, event: AdmissionChanged, now: datetime, rand: Rand) -> Result:
    if event.reason == "Pending":
        message = event.message or "waiting for a worker slot"
        return state, [SetCondition(c.ADMITTED, c.FALSE, "Pending", message), *_working("Pending", message)]
    return state, [
        SetCondition(c.ADMITTED, c.FALSE, event.reason, event.message),
        *_working(event.reason, event.message),
    ]


def _withdraw(state: TaskState, event: Unschedulable, now: datetime, rand: Rand) -> Result:
    """The attempt's Pod found no node for the grace: delete it; the task goes back in line and the attempt does not
    count against the retry policy (as a killswitch stop)."""
    if event.attempt != state.attempt:
        return state, []
    pod = state.pod or ""
    why = f"no node had room for Pod {pod} for {event.seconds:.0f}s: withdrawn, back in line"
    new = replace(state, phase=PENDING, retry_base=state.retry_base + 1)
    return new, [
        DeletePod(pod),
        RecordAttempt(state.attempt, pod, end_time=now, exit_reason=why),
        SetCondition(c.RUNNING, c.FALSE, "Withdrawn", why),
        SetCondition(c.ADMITTED, c.FALSE, "Withdrawn", why),
        *_working("Withdrawn", why),
        EmitEvent("Normal", "Withdrawn", f"attempt {state.attempt}: {why}"),
    ]


def _kill(state: TaskState, event: Killswitch, now: datetime, rand: Rand) -> Result:
    """Stop the Pod; the attempt does not count against the retry policy. Back to Pending: the scheduler
    admits nothing while the killswitch is engaged."""
    pod = state.pod or ""
    new = replace(state, phase=PENDING, retry_base=state.retry_base + 1)
    return new, [
        DeletePod(pod),
        RecordAttempt(state.attempt, pod, end_time=now, exit_reason="stopped by the operator killswitch"),
        SetCondition(c.RUNNING, c.FALSE, "Killswitch", "the operator killswitch stopped the Pod"),
        *_summary((c.FALSE, "Killswitch", "waiting for the killswitch to be released"),
                  (c.FALSE, "NotStalled", "the killswitch is an operator-wide pause"),
                  (c.FALSE, "Killswitch", "paused by the operator killswitch")),
        EmitEvent("Warning", "Killswitch", f"attempt {state.attempt} stopped by the operator killswitch"),
    ]


# --- the table ---------------------------------------------------------------------------------------

_TERMINAL_ROWS: dict[type, Handler] = {
    PodFinished: _stale,
    PodVanished: _ignore,
    CancelRequested: _ignore,
    BackoffElapsed: _ignore,
    Killswitch: _ignore,
    DependenciesChanged: _ignore,
    Resume: _ignore,
    Answered: _ignore,
    HeartbeatLost: _ignore,
    FanoutFinished: _ignore,
    SuspendChanged: _suspend,
    AdmissionChanged: _ignore,
    Unschedulable: _ignore,
}

TRANSITIONS: Final[Mapping[tuple[str, type], Handler]] = {
    (PENDING, Admitted): _start,
    (PENDING, PodFinished): _pod_event_while_pending,
    (PENDING, PodVanished): _pod_event_while_pending,
    (PENDING, CancelRequested): _cancel,
    (PENDING, RetryRequested): _retry_pending,
    (PENDING, SuspendChanged): _suspend,
    (PENDING, Resume): _ignore,
    (PENDING, BackoffElapsed): _ignore,
    (PENDING, Killswitch): _ignore,
    (PENDING, DependenciesChanged): _dependencies,
    (PENDING, Answered): _ignore,
    (PENDING, HeartbeatLost): _ignore,
    (PENDING, StartFanout): _start_fanout,
    (PENDING, FanoutFinished): _ignore,
    (PENDING, AdmissionChanged): _admission,
    (PENDING, Unschedulable): _ignore,

    (BACKOFF, PodFinished): _stale,
    (BACKOFF, PodVanished): _stale,
    (BACKOFF, CancelRequested): _cancel,
    (BACKOFF, RetryRequested): _retry,
    (BACKOFF, Resume): _ignore,
    (BACKOFF, BackoffElapsed): _backoff_elapsed,
    (BACKOFF, Killswitch): _ignore,
    (BACKOFF, DependenciesChanged): _ignore,
    (BACKOFF, Answered): _ignore,
    (BACKOFF, HeartbeatLost): _ignore,
    (BACKOFF, FanoutFinished): _ignore,
    (BACKOFF, SuspendChanged): _suspend,
    (BACKOFF, AdmissionChanged): _ignore,
    (BACKOFF, Unschedulable): _ignore,

    (RUNNING, Admitted): _duplicate_admit,
    (RUNNING, PodFinished): _finish,
    (RUNNING, PodVanished): _vanished,
    (RUNNING, CancelRequested): _cancel,
    (RUNNING, RetryRequested): _relaunch_running,
    (RUNNING, SuspendChanged): _suspend,
    (RUNNING, Resume): _ignore,
    (RUNNING, BackoffElapsed): _ignore,
    (RUNNING, Killswitch): _kill,
    (RUNNING, DependenciesChanged): _ignore,
    (RUNNING, Answered): _ignore,
    (RUNNING, HeartbeatLost): _hung,
    (RUNNING, FanoutFinished): _fanout_finished,
    (RUNNING, AdmissionChanged): _ignore,
    (RUNNING, Unschedulable): _withdraw,

    (AWAITING_INPUT, PodFinished): _stale,
    (AWAITING_INPUT, PodVanished): _ignore,
    (AWAITING_INPUT, CancelRequested): _cancel_waiting,
    (AWAITING_INPUT, RetryRequested): _retry,
    (AWAITING_INPUT, Resume): _ignore,
    (AWAITING_INPUT, BackoffElapsed): _ignore,
    (AWAITING_INPUT, Killswitch): _ignore,
    (AWAITING_INPUT, DependenciesChanged): _ignore,
    (AWAITING_INPUT, Answered): _answered,
    (AWAITING_INPUT, HeartbeatLost): _ignore,
    (AWAITING_INPUT, FanoutFinished): _ignore,
    (AWAITING_INPUT, SuspendChanged): _suspend,
    (AWAITING_INPUT, AdmissionChanged): _ignore,
    (AWAITING_INPUT, Unschedulable): _ignore,

    **{(SUCCEEDED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (SUCCEEDED, RetryRequested): _retry,
    **{(FAILED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (FAILED, RetryRequested): _retry,
    (FAILED, Resume): _resume,
    **{(CANCELLED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (CANCELLED, RetryRequested): _retry,
}
"""(phase, event type) -> handler. Missing pairs, for example ``(Backoff, Admitted)``, ``(Succeeded, Admitted)``,
``(AwaitingInput, Admitted)`` or ``StartFanout`` outside ``Pending``, are impossible transitions."""


def decide(state: TaskState, event: Event, *, now: datetime, rand: Rand) -> Result:
    """The new state and the effects for ``event`` in ``state``; raises :class:`InvalidTransition`."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"{state.name}: {type(event).__name__} is impossible in phase {state.phase}")
    new, effects = handler(state, event, now, rand)
    effects = with_ledger(state.name, effects)
    if isinstance(event, PodFinished) and event.stuck and event.attempt is not None:
        # a Pod that will never start is deleted at once, whatever the event means to the task (stale or not)
        effects = [DeletePod(names.pod_name(state.name, event.attempt), grace_seconds=0), *effects]
    return new, effects


def with_ledger(task: str, effects: list[Effect]) -> list[Effect]:
    """``effects`` where every attempt of a Pod that ends (a :class:`RecordAttempt` with an end time, of the Pod
    ``<task>-a<N>``: not a best-of-N round, which has no Pod of its own) names its ledger entry, and is preceded by
    the :class:`FinalizeLedger` that completes that entry."""
    out: list[Effect] = []
    for e in effects:
        if isinstance(e, RecordAttempt) and e.end_time is not None and e.pod == names.pod_name(task, e.number):
            entry = ledger.entry_name(e.pod)
            out += [FinalizeLedger(e.number, e.pod, entry), replace(e, ledger=entry)]
        else:
            out.append(e)
    return out


def initial_conditions(message: str = PENDING_MESSAGE) -> list[Effect]:
    """The conditions of a task the operator has not acted on yet (``api.agenttask.INITIAL_CONDITIONS``, the
    CRD's default status; written with its first status when it has none, for example one made before the CRD
    had that default)."""
    return [SetCondition(t, s, r, message if m == PENDING_MESSAGE else m)
            for t, s, r, m in INITIAL_CONDITIONS]


def late_usage(number: int, pod: str, ended: bool, recorded: Usage, metered: Usage | None) -> list[Effect]:
    """An ended attempt's usage raised to what the gateway metered for it after its end.

    A model call in flight when the attempt's Pod stopped (killed at its deadline, cancelled, hung) is charged when
    its answer reaches the gateway, which adds it to ``status.progress`` while the progress is still that attempt's:
    after the operator recorded the attempt (``status.attempts[number]``). The build's usage counts it already
    (``core.usage``: the larger of the two); this makes the attempt's record say so too, and counts the difference
    in ``longshot_tokens_total``. Once the task's next attempt has started metering, the gateway keeps such a charge
    in ``progress.earlier`` instead (``core.usage.charge_late``). ``metered`` is what the gateway metered for attempt
    ``number`` (``core.usage.metered``: the progress while it is that attempt's, and ``progress.earlier``), None when
    nothing; nothing when the attempt has not ended (its end records the metered figures) or nothing grew."""
    if not ended or metered is None:
        return []
    tokens, cost = max(recorded.tokens, metered.tokens), max(recorded.cost, metered.cost)
    if tokens == recorded.tokens and cost == recorded.cost:
        return []
    return [RecordAttempt(number, pod, tokens=tokens, cost=cost),
            CountUsage(tokens - recorded.tokens, round(cost - recorded.cost, 9))]


def heartbeat_silence(last_heartbeat: datetime | None, started: datetime | None, now: datetime) -> float | None:
    """Seconds since the running attempt last showed life: its last heartbeat, or its start when it has not
    reported yet (the later of the two). None when neither is known."""
    marks = [t for t in (last_heartbeat, started) if t is not None]
    if not marks:
        return None
    return max(0.0, (now - max(marks)).total_seconds())


def model_chain(model: str | None, fallbacks: Sequence[str] = ()) -> tuple[str, ...]:
    """The models a task's attempts may use, in order: ``model`` (the task's own, else the build's), then the
    build's fallbacks (each once). Empty when there is no model (a backend that needs none)."""
    if not model:
        return ()
    out = [model]
    for m in fallbacks:
        if m and m not in out:
            out.append(m)
    return tuple(out)


def upstream_failure(failure_class: FailureClass | None, message: str) -> bool:
    """The attempt failed because the model API was rate-limiting or failing: ``RateLimited``, or
    ``Infrastructure`` whose message names the model API (a git failure does not)."""
    if failure_class == "RateLimited":
        return True
    return failure_class == "Infrastructure" and any(m in message[:4096] for m in MODEL_API_MARKERS)


def next_model(state: TaskState) -> str | None:
    """The model of the next attempt: the first of ``state.models`` at first (or when the last attempt's model is no
    longer in the chain, say after a relaunch with another model); the one after the last attempt's model
    (wrapping round) when that attempt failed upstream (:func:`upstream_failure`); else the last attempt's."""
    if not state.models:
        return None
    if state.last_model not in state.models:
        return state.models[0]
    i = state.models.index(state.last_model)
    if upstream_failure(state.last_failure, state.last_message):
        return state.models[(i + 1) % len(state.models)]
    return state.models[i]
