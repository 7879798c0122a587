"""The AgentTask decider: ``decide(state, event, *, now, rand) -> (state, effects)``.

Pure: no I/O, time and randomness injected. The shell (``controllers/agenttask.py``) builds a
:class:`TaskState` from the AgentTask (:meth:`TaskState.from_resource`), turns what it observed into one
:data:`Event`, calls :func:`decide`, carries out the :data:`Effect` list in order, then writes
``new_state.to_status()`` plus the conditions in one status patch.

Phases: ``Pending`` (waiting for dependencies or a slot), ``Backoff`` (waiting before the next attempt),
``Running`` (a Pod exists for ``state.attempt``), and the terminal ``Succeeded``, ``Failed``,
``Cancelled`` (``Failed`` and ``Cancelled`` leave with a new ``spec.retryToken``).

Every transition is a row of :data:`TRANSITIONS`; a (phase, event) pair missing from it raises
:class:`InvalidTransition`. Events are idempotent: an event about an attempt older than the current one,
or a repeated event, changes nothing. The Pod of attempt N is always named ``names.pod_name(task, N)``,
so an operator restarted between creating a Pod and writing the status re-creates the same name and gets
``AlreadyExists`` (treat it as success): never two Pods for one attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from longshot.api import conditions as c
from longshot.api.agenttask import FailureClass, HandoffSummary, Role
from longshot.api.buildrequest import RetryPolicy
from longshot.api.handoff import Handoff, HandoffError, PlannedTask
from longshot.core import backoff, failures, names
from longshot.core.effects import EmitEvent, SetCondition

Phase = Literal["Pending", "Backoff", "Running", "Succeeded", "Failed", "Cancelled"]
PENDING: Final = "Pending"
BACKOFF: Final = "Backoff"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
CANCELLED: Final = "Cancelled"
PHASES: Final = (PENDING, BACKOFF, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

MERGING_ROLES: Final = frozenset({"worker", "fixer"})
"""Roles whose successful commit goes to the merge queue."""


class InvalidTransition(RuntimeError):
    """The event cannot happen in this phase; the shell's view of the world is wrong (a bug)."""


# --- state -------------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))



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
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def pod(self) -> str | None:
        """Name of the current attempt's Pod."""
        return names.pod_name(self.name, self.attempt) if self.attempt else None

    @classmethod
    def from_resource(cls, task: Mapping[str, Any], build: Mapping[str, Any] | None = None) -> TaskState:
        """State of an AgentTask dict; the retry policy is the task's, else the build's, else the default."""
        spec = task.get("spec") or {}
        status = task.get("status") or {}
        attempts = status.get("attempts") or []
        raw_policy = spec.get("retryPolicy") or ((build or {}).get("spec") or {}).get("retry") or {}
        last = max(attempts, key=lambda a: a.get("number", 0)) if attempts else {}
        phase = status.get("phase") or PENDING
        if phase not in PHASES:
            phase = PENDING
        return cls(
            name=task["metadata"]["name"],
            role=spec.get("role", "worker"),
            phase=phase,
            attempt=int(last.get("number", 0)),
            retry_base=int(status.get("retryBase", 0)),
            retry_token=status.get("retryToken"),
            next_attempt_time=_parse_time(status.get("nextAttemptTime")),
            last_failure=last.get("failureClass"),
            policy=RetryPolicy.model_validate(raw_policy),
        )

    def to_status(self) -> dict[str, Any]:
        """The status fields this state owns (conditions, attempts and handoff come from effects).

        ``retryBase`` needs a field in ``AgentTaskStatus`` to survive the API server's pruning.
        """
        return {
            "phase": self.phase,
            "retryToken": self.retry_token,
            "retryBase": self.retry_base,
            "nextAttemptTime": c.rfc3339(self.next_attempt_time) if self.next_attempt_time else None,
        }


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """The scheduler admitted the task. ``attempt`` defaults to the next one (``state.attempt + 1``)."""

    attempt: int | None = None


@dataclass(frozen=True)
class PodFinished:
    """The attempt's Pod ended (or is stuck for good, see ``failures.stuck``).

    ``handoff`` is the parsed handoff, the HandoffError raised while reading it, or None.
    """

    pod_status: Mapping[str, Any]
    handoff: Handoff | HandoffError | None = None
    attempt: int | None = None


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
class BackoffElapsed:
    """The retry timer fired."""


@dataclass(frozen=True)
class Killswitch:
    """The operator-wide killswitch is engaged."""


Event = Admitted | PodFinished | PodVanished | CancelRequested | RetryRequested | BackoffElapsed | Killswitch

# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePod:
    """Create the Pod of ``attempt`` (``pods.build_agent_pod(task, build, settings, attempt)``), named
    ``name``; AlreadyExists means it was created before a restart: fine."""

    attempt: int
    name: str


@dataclass(frozen=True)
class DeletePod:
    """Delete the Pod ``name`` (NotFound is fine)."""

    name: str


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

    def to_wire(self) -> dict[str, Any]:
        """camelCase fields that are set."""
        out: dict[str, Any] = {"number": self.number, "pod": self.pod}
        if self.start_time is not None:
            out["startTime"] = c.rfc3339(self.start_time)
        if self.end_time is not None:
            out["endTime"] = c.rfc3339(self.end_time)
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.exit_reason is not None:
            out["exitReason"] = self.exit_reason
        if self.failure_class is not None:
            out["failureClass"] = self.failure_class
        return out


@dataclass(frozen=True)
class ScheduleRetry:
    """Deliver ``BackoffElapsed`` at ``at`` (e.g. ``kopf.TemporaryError(delay=...)`` or a timer)."""

    at: datetime


@dataclass(frozen=True)
class CreateMergeJob:
    """Create the MergeJob of this task's branch at ``commit`` (name: the task's name; AlreadyExists is
    fine)."""

    branch: str
    commit: str


@dataclass(frozen=True)
class UpdateUsage:
    """Tokens and cost of attempt ``attempt``; add them to the build's ``status.usage`` once per attempt."""

    attempt: int
    tokens: int
    cost: float


@dataclass(frozen=True)
class RecordHandoff:
    """Write ``status.handoff`` (an ``api.agenttask.HandoffSummary`` in wire form)."""

    handoff: Mapping[str, Any]


@dataclass(frozen=True)
class PlanReturned:
    """A planner task succeeded with this task list: hand it to ``builds.decide`` as
    ``PlannerFinished`` (with this task as the planner)."""

    tasks: tuple[PlannedTask, ...]


Effect = (
    CreatePod | DeletePod | SetCondition | RecordAttempt | ScheduleRetry | EmitEvent | CreateMergeJob
    | UpdateUsage | RecordHandoff | PlanReturned
)

Rand = Callable[[], float]
Result = tuple[TaskState, list[Effect]]
Handler = Callable[[TaskState, Any, datetime, Rand], Result]

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
    new = replace(state, phase=RUNNING, attempt=number, next_attempt_time=None)
    pod = names.pod_name(state.name, number)
    return new, [
        CreatePod(number, pod),
        RecordAttempt(number, pod, start_time=now),
        SetCondition(c.RUNNING, c.TRUE, "PodRunning", f"attempt {number} runs in Pod {pod}"),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "InProgress", f"attempt {number} is running"),
        SetCondition(c.READY, c.FALSE, "InProgress", f"attempt {number} is running"),
        EmitEvent("Normal", "AttemptStarted", f"attempt {number} started in Pod {pod}"),
    ]


def _duplicate_admit(state: TaskState, event: Admitted, now: datetime, rand: Rand) -> Result:
    if event.attempt is None or event.attempt <= state.attempt:
        return state, []  # the same admission delivered again: the Pod already exists
    raise InvalidTransition(f"{state.name}: admitted for attempt {event.attempt} while attempt "
                            f"{state.attempt} is running")


def _finish(state: TaskState, event: PodFinished, now: datetime, rand: Rand) -> Result:
    number = _attempt_of(state, event)
    if number < state.attempt:
        return state, []
    if number > state.attempt:
        return _stale(state, event, now, rand)
    outcome = failures.classify(event.pod_status, event.handoff, task=state.name, attempt=number)
    effects: list[Effect] = []
    handoff = event.handoff if isinstance(event.handoff, Handoff) else None
    if handoff is not None and (handoff.usage.tokens or handoff.usage.cost):
        effects.append(UpdateUsage(number, handoff.usage.tokens, handoff.usage.cost))
    if outcome.ok and handoff is not None:
        return _succeed(state, handoff, outcome, now, effects)
    return _fail(state, outcome, now, rand, effects)


def _succeed(state: TaskState, handoff: Handoff, outcome: failures.Outcome, now: datetime,
             effects: list[Effect]) -> Result:
    number = state.attempt
    pod = names.pod_name(state.name, number)
    summary = HandoffSummary(
        branch=handoff.branch, commit=handoff.commit, files_changed=handoff.files_changed[:10_000],
        summary=handoff.summary[:32768], tokens=handoff.usage.tokens, cost=handoff.usage.cost,
        verdict=handoff.verdict,
    )
    effects = [
        RecordAttempt(number, pod, end_time=now, exit_code=outcome.exit_code, exit_reason="Completed"),
        RecordHandoff(summary.to_wire()),
        *effects,
        SetCondition(c.RUNNING, c.FALSE, "Completed", f"attempt {number} finished"),
        SetCondition(c.SUCCEEDED, c.TRUE, "Completed", f"attempt {number}: {handoff.outcome}"),
        SetCondition(c.READY, c.TRUE, "Completed", f"attempt {number}: {handoff.outcome}"),
        SetCondition(c.AUTHENTICATED, c.TRUE, "Completed", "the agent authenticated"),
        EmitEvent("Normal", "Succeeded", f"attempt {number} succeeded ({handoff.outcome})"),
    ]
    if (state.role in MERGING_ROLES and handoff.outcome == "succeeded" and handoff.branch
            and handoff.commit):
        effects.append(CreateMergeJob(handoff.branch, handoff.commit))
    if state.role == "planner" and handoff.outcome == "succeeded":
        effects.append(PlanReturned(tuple(handoff.tasks)))
    return replace(state, phase=SUCCEEDED, next_attempt_time=None, last_failure=None), effects


def _fail(state: TaskState, outcome: failures.Outcome, now: datetime, rand: Rand,
          effects: list[Effect]) -> Result:
    number = state.attempt
    pod = names.pod_name(state.name, number)
    fc = outcome.failure_class or "Infrastructure"
    effects = [
        RecordAttempt(number, pod, end_time=now, exit_code=outcome.exit_code,
                      exit_reason=outcome.message[:1024], failure_class=fc),
        *effects,
    ]
    counted = max(number - state.retry_base, 1)
    wait = backoff.delay(counted, fc, state.policy, rand)
    if fc == "Auth":
        new = replace(state, phase=FAILED, last_failure=fc, next_attempt_time=None)
        return new, [
            *effects,
            SetCondition(c.AUTHENTICATED, c.FALSE, "AuthFailed", outcome.message),
            SetCondition(c.RUNNING, c.FALSE, "AuthFailed", f"attempt {number} could not authenticate"),
            SetCondition(c.SUCCEEDED, c.FALSE, "AuthFailed", outcome.message),
            SetCondition(c.READY, c.TRUE, "AuthFailed", "fix the credentials Secret, then change "
                         "spec.retryToken to retry"),
            EmitEvent("Warning", "AuthFailed", f"attempt {number}: {outcome.message}"),
        ]
    if wait is None:
        reason = "InvalidHandoff" if fc == "InvalidHandoff" else "Failed"
        message = f"attempt {number} failed ({fc}): {outcome.message}; no retries left"
        new = replace(state, phase=FAILED, last_failure=fc, next_attempt_time=None)
        return new, [
            *effects,
            SetCondition(c.RUNNING, c.FALSE, reason, f"attempt {number} failed"),
            SetCondition(c.SUCCEEDED, c.FALSE, reason, message),
            SetCondition(c.READY, c.TRUE, reason, message),
            EmitEvent("Warning", "Failed", message),
        ]
    at = now + timedelta(seconds=wait)
    message = f"attempt {number} failed ({fc}): {outcome.message}; retrying in {wait:.0f}s"
    new = replace(state, phase=BACKOFF, last_failure=fc, next_attempt_time=at)
    return new, [
        *effects,
        ScheduleRetry(at),
        SetCondition(c.RUNNING, c.FALSE, "RetryScheduled", f"attempt {number} failed"),
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "RetryScheduled", message),
        SetCondition(c.READY, c.FALSE, "RetryScheduled", message),
        EmitEvent("Warning", "RetryScheduled", message),
    ]


def _vanished(state: TaskState, event: PodVanished, now: datetime, rand: Rand) -> Result:
    number = _attempt_of(state, event)
    if number != state.attempt:
        return _stale(state, event, now, rand)
    outcome = failures.Outcome("Infrastructure", "the Pod was deleted before the agent finished",
                               None, "PodDeleted")
    return _fail(state, outcome, now, rand, [])


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
        SetCondition(c.READY, c.TRUE, "Cancelled", "cancelled by spec.cancel"),
        EmitEvent("Normal", "Cancelled", "the task was cancelled"),
    ]


def _ack_token(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    """A new retry token while there is nothing to retry: remember it, so it is not acted on later."""
    if event.token == state.retry_token:
        return state, []
    return replace(state, retry_token=event.token), []


def _retry(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    if event.token == state.retry_token:
        return state, []
    new = replace(state, phase=PENDING, retry_token=event.token, retry_base=state.attempt,
                  next_attempt_time=None)
    effects: list[Effect] = [
        SetCondition(c.SUCCEEDED, c.UNKNOWN, "Pending", "retry requested: waiting for a worker slot"),
        SetCondition(c.READY, c.FALSE, "Pending", "retry requested: waiting for a worker slot"),
        EmitEvent("Normal", "RetryRequested", f"retry requested (token {event.token!r})"),
    ]
    if state.last_failure == "Auth":
        effects.insert(0, SetCondition(c.AUTHENTICATED, c.UNKNOWN, "Pending",
                                       "retry requested: the next attempt checks the credentials"))
    return new, effects


def _backoff_elapsed(state: TaskState, event: BackoffElapsed, now: datetime, rand: Rand) -> Result:
    if state.next_attempt_time is not None and now < state.next_attempt_time:
        return state, [ScheduleRetry(state.next_attempt_time)]  # an early timer: wait again
    new = replace(state, phase=PENDING, next_attempt_time=None)
    return new, [SetCondition(c.READY, c.FALSE, "Pending", "waiting for a worker slot")]


def _kill(state: TaskState, event: Killswitch, now: datetime, rand: Rand) -> Result:
    """Stop the Pod; the attempt does not count against the retry policy. Back to Pending: the scheduler
    admits nothing while the killswitch is engaged."""
    pod = state.pod or ""
    new = replace(state, phase=PENDING, retry_base=state.retry_base + 1)
    return new, [
        DeletePod(pod),
        RecordAttempt(state.attempt, pod, end_time=now, exit_reason="stopped by the operator killswitch"),
        SetCondition(c.RUNNING, c.FALSE, "Killswitch", "the operator killswitch stopped the Pod"),
        SetCondition(c.READY, c.FALSE, "Killswitch", "waiting for the killswitch to be released"),
        EmitEvent("Warning", "Killswitch", f"attempt {state.attempt} stopped by the operator killswitch"),
    ]


def _retry_now(state: TaskState, event: RetryRequested, now: datetime, rand: Rand) -> Result:
    """A retry token during a backoff: skip the wait and start with a fresh attempt budget."""
    return _retry(state, event, now, rand)


# --- the table ---------------------------------------------------------------------------------------

_TERMINAL_ROWS: dict[type, Handler] = {
    PodFinished: _stale,
    PodVanished: _ignore,
    CancelRequested: _ignore,
    BackoffElapsed: _ignore,
    Killswitch: _ignore,
}

TRANSITIONS: Final[Mapping[tuple[str, type], Handler]] = {
    (PENDING, Admitted): _start,
    (PENDING, PodFinished): _pod_event_while_pending,
    (PENDING, PodVanished): _pod_event_while_pending,
    (PENDING, CancelRequested): _cancel,
    (PENDING, RetryRequested): _ack_token,
    (PENDING, BackoffElapsed): _ignore,
    (PENDING, Killswitch): _ignore,

    (BACKOFF, PodFinished): _stale,
    (BACKOFF, PodVanished): _stale,
    (BACKOFF, CancelRequested): _cancel,
    (BACKOFF, RetryRequested): _retry_now,
    (BACKOFF, BackoffElapsed): _backoff_elapsed,
    (BACKOFF, Killswitch): _ignore,

    (RUNNING, Admitted): _duplicate_admit,
    (RUNNING, PodFinished): _finish,
    (RUNNING, PodVanished): _vanished,
    (RUNNING, CancelRequested): _cancel,
    (RUNNING, RetryRequested): _ack_token,
    (RUNNING, BackoffElapsed): _ignore,
    (RUNNING, Killswitch): _kill,

    **{(SUCCEEDED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (SUCCEEDED, RetryRequested): _ack_token,
    **{(FAILED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (FAILED, RetryRequested): _retry,
    **{(CANCELLED, ev): h for ev, h in _TERMINAL_ROWS.items()},
    (CANCELLED, RetryRequested): _retry,
}
"""(phase, event type) -> handler. Missing pairs, for example ``(Backoff, Admitted)`` or
``(Succeeded, Admitted)``, are impossible transitions."""


def decide(state: TaskState, event: Event, *, now: datetime, rand: Rand) -> Result:
    """The new state and the effects for ``event`` in ``state``; raises :class:`InvalidTransition`."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"{state.name}: {type(event).__name__} is impossible in phase {state.phase}")
    return handler(state, event, now, rand)
