"""The MergeJob decider: one branch's way to the target. ``decide(state, event, *, now) -> (state, effects)``.

Pure, in the table style of :mod:`longshot.core.tasks`. The repository's queue runner
(``controllers/queue/``) observes (the secret scan, the reviewer, batches prepared and gated by
:mod:`longshot.core.mergequeue`, pushes) and feeds events here; the effects set the MergeJob's conditions and
create fixers.

Phases::

    Queued --ChecksPassed--> Queued (ready) --BatchJoined--> Testing --Landed--> Merged
       |--DependenciesPending--> Queued (a stacked branch waits for its dependencies to merge; a delegating task's
       |                         branch for its children)
       |--DependencyFailed--> Failed (a dependency will never merge; no fixer)
       |--ChecksPassed (approval required)--> AwaitingApproval --Approved--> Queued (ready)
       |                                                        |--Requeued--> Queued
       |--Conflict (retries left)--> Conflicted --TargetMoved--> Queued
                                          |--TargetIdle--> Conflicted (terminal, a fixer takes the branch over)
       |--Conflict (no retries) / Evicted / SecretFound / ScanTimedOut / ChangesRequested / Error (no retries)--> Failed
    Failed (a fixer took the branch over) --FixerLanded--> Superseded
    Conflicted/Failed --Retry (finalization)--> Queued

Delivery through the forge (``spec.merge.delivery: pullRequest``, decisions in :mod:`longshot.core.forge`)::

    Testing --HandedToForge (its batch passed the gate)--> AwaitingForge --ForgeWaiting--> AwaitingForge
       (per: build: the batch landed on the build branch, the head of the build's one pull request; Queued too,
        when a landing is recognised after a restart)
    AwaitingForge --ForgeMerged (by Longshot, a person or the forge's merge queue)--> Merged
                  |--ForgeClosed (closed without merge)--> Failed (ClosedWithoutMerge, no fixer)
                  |--ChangesRequested (a review on the tested commit)--> Failed (a fixer takes the branch over;
                                                                        its commits update the same pull request)
    Failed (its gate failed on a pull request's head) --ForgeFailurePosted--> Failed (the failure status recorded)

Every failure leads to a fix: a conflict after its retries, a quality gate that the candidate broke (the
failing command's output goes to the fixer), a reviewer's changes-requested and a secret found in a commit
each create a fixer AgentTask on the same branch, scoped and described by the failure, while the build has
fixers left (``merge.maxFixers``) and the chain of fixes is not too deep (a fix of a fix counts:
``MAX_FIX_DEPTH``). Without a fixer the job fails with reason ``NoFixer`` and says why.

Conditions: ``Ready`` True only when merged (or superseded by a fixer that merged); ``Stalled`` True when it
failed for good; ``Reconciling`` True while it is on its way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from longshot.api import conditions as c
from longshot.core import effects, names, taskinput
from longshot.core import scope as scopemod
from longshot.core.effects import EmitEvent, SetCondition

Phase = Literal["Queued", "AwaitingApproval", "Testing", "AwaitingForge", "Merged", "Conflicted", "Failed",
                "Superseded"]
QUEUED: Final = "Queued"
AWAITING_APPROVAL: Final = "AwaitingApproval"
TESTING: Final = "Testing"
AWAITING_FORGE: Final = "AwaitingForge"
MERGED: Final = "Merged"
CONFLICTED: Final = "Conflicted"
FAILED: Final = "Failed"
SUPERSEDED: Final = "Superseded"
PHASES: Final = (QUEUED, AWAITING_APPROVAL, TESTING, AWAITING_FORGE, MERGED, CONFLICTED, FAILED, SUPERSEDED)
DELIVERED: Final = frozenset({MERGED, SUPERSEDED})

MAX_FIX_DEPTH: Final = 2
"""A branch may be fixed, and its fixer's branch fixed once more; a third failure in the chain is final."""
MAX_ERRORS: Final = 3
"""Unexpected errors (git trouble, a server refusing) tried before the job fails."""
ERROR_BACKOFF_SECONDS: Final = 5.0

Checks = Literal["pending", "passed", "failed"]
WAITING_FOR_DEPENDENCIES: Final = "WaitingForDependencies"
"""Reason of the ``Queued`` condition of a stacked branch waiting for its dependencies to merge."""


InvalidTransition = effects.InvalidTransition


@dataclass(frozen=True)
class BatchRef:
    """The speculative batch a job is being tested in (``status.batch``)."""

    id: str
    position: int
    """1-based position in the batch."""
    base: str
    """The target commit the batch was built on."""
    commit: str
    """The speculative commit: ``base`` plus the batch's candidates up to and including this one."""

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "position": self.position, "base": self.base, "commit": self.commit}


@dataclass(frozen=True)
class PullRef:
    """The pull request a job is delivered through (``status.pullRequest``)."""

    number: int
    url: str = ""
    head: str = ""
    status_posted: bool = False
    auto_merge: bool = False
    """Longshot handed it to the forge's auto-merge (``core.forge.EnableAutoMerge``)."""

    def to_wire(self) -> dict[str, Any]:
        return {"number": self.number, "url": self.url or None, "head": self.head or None,
                "statusPosted": self.status_posted, "autoMerge": self.auto_merge}


@dataclass(frozen=True)
class JobState:
    """What the decider knows about one MergeJob (rebuilt from its status and its build's limits)."""

    name: str
    task: str
    branch: str
    phase: Phase = "Queued"
    checks: Checks = "pending"
    conflicts: int = 0
    """Conflicts against the target itself so far."""
    conflict_base: str | None = None
    """The target head it last conflicted with (it is retried when the target moves)."""
    conflicting_files: tuple[str, ...] = ()
    errors: int = 0
    not_before: datetime | None = None
    batch: BatchRef | None = None
    merged_commit: str | None = None
    fixer: str | None = None
    """The fixer AgentTask that took the branch over."""
    pull: PullRef | None = None
    """The pull request it is delivered through (phase AwaitingForge)."""
    tested: str | None = None
    """The commit its gate passed on, handed to the forge (``HandedToForge``): the branch head for ``per: task``,
    the candidate landed on the build branch for ``per: build``."""
    message: str = ""
    """The last outcome, for people."""
    # limits and context
    priority: int = 5
    fix_depth: int = 0
    """0 for a planned task's branch, 1 for its fixer's, ..."""
    max_conflict_retries: int = 2
    fixers_left: int = 5
    """Fixer tasks the build may still create (``merge.maxFixers`` minus those created)."""
    needs_approval: bool = False
    """The build requires approval (``spec.merge.requireApproval``) and ``spec.approved`` is not true."""
    waiting: str = ""
    """Why the branch waits for its dependencies (a stacked dependent), as its ``Queued`` condition says."""
    task_scope: tuple[str, ...] = ()
    """The scope of the task whose branch this is (AgentTask ``spec.scope``)."""
    enforce_scope: bool = False
    """The build enforces scopes (``spec.scope.enforce``): a fixer inherits ``task_scope``."""

    @property
    def terminal(self) -> bool:
        """No more tries will happen by themselves."""
        return self.phase in (MERGED, SUPERSEDED) or self.phase == FAILED or (
            self.phase == CONFLICTED and self.conflicts > self.max_conflict_retries)

    @property
    def delivered(self) -> bool:
        return self.phase in DELIVERED

    @property
    def ready(self) -> bool:
        """May join a batch (given ``now`` is past ``not_before``, which the queue checks)."""
        return self.phase == QUEUED and self.checks == "passed"

    def to_status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "checks": self.checks,
            "conflicts": self.conflicts,
            "conflictBase": self.conflict_base,
            "errors": self.errors,
            "notBefore": self.not_before.strftime("%Y-%m-%dT%H:%M:%SZ") if self.not_before else None,
            "batch": self.batch.to_wire() if self.batch else None,
            "mergedCommit": self.merged_commit,
            "fixer": self.fixer,
            "conflictingFiles": list(self.conflicting_files[:10_000]),
            "pullRequest": self.pull.to_wire() if self.pull else None,
            "testedCommit": self.tested,
        }


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """The job was seen (first time or after a restart): write its conditions if it has none."""


@dataclass(frozen=True)
class ChecksPassed:
    """The secret scan of every commit passed (and, for ``strict`` or ``qualityGate.review``, the reviewer approved)."""

    what: str = "the secret scan"


@dataclass(frozen=True)
class Approved:
    """``spec.approved`` is true (or the build no longer requires approval)."""

    why: str = "spec.approved is true"


@dataclass(frozen=True)
class Reviewing:
    """A reviewer task checks the branch (``strict``, or ``qualityGate.review``)."""

    reviewer: str


@dataclass(frozen=True)
class SecretFound:
    findings: tuple[str, ...]


@dataclass(frozen=True)
class ScanTimedOut:
    """The secret scan of the branch did not finish within its deadline (``Settings.scan_timeout_seconds``):
    the branch is refused as a found secret is (a fixer, or a person when there is none), never retried as is."""

    seconds: float


@dataclass(frozen=True)
class ChangesRequested:
    reviewer: str
    reasons: tuple[str, ...]
    untrusted: bool = False
    """The reasons come from outside the build (a review on the forge): the fixer gets them as untrusted data."""


@dataclass(frozen=True)
class DependenciesPending:
    """A stacked branch waits for its task's dependencies to merge first (``core.dependencies.merge_readiness``), or
    a delegating task's branch for its children (``delegated``; ``core.delegation.merge_wait``)."""

    message: str
    delegated: bool = False


@dataclass(frozen=True)
class DependencyFailed:
    """A dependency of the branch's task will never merge (failed, cancelled, undeliverable): a stacked branch,
    built on its work, must not merge."""

    message: str


@dataclass(frozen=True)
class BatchJoined:
    batch: BatchRef


@dataclass(frozen=True)
class Requeued:
    """Back to the queue: its batch broke elsewhere, the push lost a race, or finalization retries it."""

    why: str


@dataclass(frozen=True)
class Landed:
    """The batch holding the job was pushed: the target now contains ``commit``."""

    commit: str
    already: bool = False
    """It was on the target before (recognised by its own record after a restart)."""


@dataclass(frozen=True)
class Conflict:
    """The branch does not apply on ``base``. ``counted``: it conflicts with the target itself (not only with
    candidates ahead of it in the batch), which uses one of ``merge.maxConflictRetries``."""

    files: tuple[str, ...]
    base: str
    counted: bool = True
    detail: str = ""


@dataclass(frozen=True)
class TargetMoved:
    head: str


@dataclass(frozen=True)
class TargetIdle:
    """Nothing else in the repository's queue can move the target from ``head`` (no other job queued, awaiting
    approval or in a batch): a conflicted job's retry would never come, so it goes to a fixer now."""

    head: str


@dataclass(frozen=True)
class Evicted:
    """The job's candidate broke the batch's quality gate (the culprit found by bisection)."""

    command: str
    output: str


@dataclass(frozen=True)
class Error:
    message: str


@dataclass(frozen=True)
class FixerLanded:
    """The fixer that took the branch over merged."""

    commit: str


@dataclass(frozen=True)
class Retry:
    """Finalization gives a finished, unmerged job another try."""

    why: str


@dataclass(frozen=True)
class HandedToForge:
    """The job's batch passed its quality gate and the build delivers through pull requests: instead of pushing the
    target, the job waits on its pull request (``core.forge``)."""

    commit: str
    """The commit the gate tested as it would land."""


@dataclass(frozen=True)
class ForgeWaiting:
    """A poll of the pull request: still waiting (``reason``/``message`` for the ``AwaitingForge`` condition);
    ``pull`` is what is known of the pull request now."""

    reason: str
    message: str
    pull: PullRef | None = None


@dataclass(frozen=True)
class ForgeFailurePosted:
    """The failed gate was posted as a ``failure`` status on the pull request whose head is the job's commit (a
    failed job of a build that delivers through pull requests): recorded, so it is posted once."""

    pull: PullRef


@dataclass(frozen=True)
class ForgeMerged:
    """The forge merged the pull request; the target holds ``commit``."""

    commit: str
    message: str


@dataclass(frozen=True)
class ForgeClosed:
    """The pull request was closed without merging."""

    reason: str
    message: str


Event = (Observed | ChecksPassed | Reviewing | SecretFound | ScanTimedOut | ChangesRequested | BatchJoined | Requeued
         | Landed         | Conflict | TargetMoved | TargetIdle | Evicted | Error | FixerLanded | Retry | Approved
         | DependenciesPending | DependencyFailed | HandedToForge | ForgeWaiting | ForgeMerged | ForgeClosed
         | ForgeFailurePosted)

# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateFixer:
    """Create the fixer AgentTask ``name`` on ``branch`` (AlreadyExists is fine)."""

    name: str
    branch: str
    description: str
    scope: tuple[str, ...]
    priority: int
    fix_depth: int
    fixes: str
    """The MergeJob it fixes."""


@dataclass(frozen=True)
class RecordTry:
    """Append to ``status.attempts``."""

    result: str
    message: str


@dataclass(frozen=True)
class ScheduleRetry:
    at: datetime


Effect = SetCondition | EmitEvent | CreateFixer | RecordTry | ScheduleRetry
Result = tuple[JobState, list[Effect]]
Handler = Callable[[JobState, Any, datetime], Result]

# --- helpers -----------------------------------------------------------------------------------------


def _summary(ready: tuple[str, str, str], stalled: tuple[str, str, str],
             reconciling: tuple[str, str, str]) -> list[Effect]:
    return [SetCondition(c.READY, *ready), SetCondition(c.STALLED, *stalled),  # type: ignore[arg-type]
            SetCondition(c.RECONCILING, *reconciling)]  # type: ignore[arg-type]


def _on_its_way(reason: str, message: str) -> list[Effect]:
    return _summary((c.FALSE, reason, message), (c.FALSE, "NotStalled", "nothing needs a person"),
                    (c.TRUE, reason, message))


def _shown(files: Sequence[str]) -> str:
    return ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "") or "(none listed)"


def target_can_move(states: Iterable[JobState]) -> bool:
    """Whether a job of the queue may still move the target by itself: queued, testing or awaiting approval, and
    not waiting for its dependencies. A conflicted job whose conflict base is the target's head retries only when
    the target moves; when nothing can move it, the job goes to a fixer (``TargetIdle``). A stacked job waiting for
    its dependencies moves nothing until they merge: counted, it would leave a conflicted dependency and itself
    waiting for each other for ever."""
    return any(s.phase in (QUEUED, TESTING, AWAITING_APPROVAL) and not s.waiting for s in states)


def target_event(state: JobState, head: str, moving: bool) -> Event | None:
    """What a conflicted job learns from the target's head: it moved since the conflict (``TargetMoved``: try
    again), or it did not and nothing in the queue can move it (``TargetIdle``: its retry would never come, a fixer
    takes the branch over). None: wait (not conflicted, terminal, or another job may still move the target)."""
    if state.phase != CONFLICTED or state.terminal:
        return None
    if state.conflict_base != head:
        return TargetMoved(head)
    if not moving:
        return TargetIdle(head)
    return None


def fixer_name(task: str) -> str:
    """The fixer AgentTask of the branch of ``task`` (a fixer's own fixer is ``<task>-fix-fix``)."""
    return names.child_name(task, "fix")


def _fail(state: JobState, reason: str, message: str, *, fix: tuple[str, tuple[str, ...]] | None,
          conflicted: bool = False, result: str = "Failed") -> Result:
    """Finish without merging; hand the branch to a fixer when the limits allow (``fix`` = (description,
    scope)). The phase is Conflicted for a conflict, else Failed."""
    phase: Phase = CONFLICTED if conflicted else FAILED
    effects: list[Effect] = [RecordTry(result, message[:4096])]
    fixer = None
    if fix is not None:
        if state.fix_depth >= MAX_FIX_DEPTH:
            why = f"the branch is already a fix of a fix (depth {state.fix_depth})"
        elif state.fixers_left <= 0:
            why = "merge.maxFixers fixer tasks were already created for this build"
        else:
            why = ""
            fixer = fixer_name(state.task)
            description, named = fix
            scope = scopemod.inherited(named, state.task_scope, enforce=state.enforce_scope)
            effects.append(CreateFixer(fixer, state.branch, description, scope, min(10, state.priority + 1),
                                       state.fix_depth + 1, state.name))
        if fixer is None:
            reason, message = "NoFixer", f"{message}; no fixer: {why}"
    text = f"{message}; fixer task {fixer} takes the branch over" if fixer else message
    new = replace(state, phase=phase, batch=None, fixer=fixer, message=text,
                  conflicts=state.conflicts if not conflicted else max(state.conflicts, state.max_conflict_retries + 1))
    stalled = fixer is None
    effects += [
        SetCondition(c.QUEUED, c.FALSE, reason, text),
        SetCondition(c.MERGED, c.FALSE, reason, text),
        SetCondition(c.CONFLICTED, c.TRUE if conflicted else c.FALSE, reason, text),
        *_summary((c.FALSE, "FixerCreated" if fixer else reason, text),
                  (c.TRUE if stalled else c.FALSE, reason if stalled else "NotStalled", text),
                  (c.TRUE if fixer else c.FALSE, "FixerCreated" if fixer else reason, text)),
        EmitEvent("Warning", "FixerCreated" if fixer else reason, text),
    ]
    return new, effects


# --- handlers ----------------------------------------------------------------------------------------


def _ignore(state: JobState, event: Any, now: datetime) -> Result:
    return state, []


def _observed(state: JobState, event: Observed, now: datetime) -> Result:
    approval = (SetCondition(c.AWAITING_APPROVAL, c.UNKNOWN, "Pending",
                             "the build requires approval: asked for once the checks pass") if state.needs_approval
                else SetCondition(c.AWAITING_APPROVAL, c.FALSE, "NotRequired", "no approval needed"))
    return state, [
        SetCondition(c.QUEUED, c.TRUE, "Queued", "waiting in the merge queue"),
        SetCondition(c.CHECKS_PASSED, c.UNKNOWN, "Pending", "the secret scan runs before the branch joins a batch"),
        approval,
        SetCondition(c.GATES_PASSED, c.UNKNOWN, "Pending", "tested as it would land, in a batch"),
        SetCondition(c.MERGED, c.FALSE, "Queued", "not merged yet"),
        SetCondition(c.CONFLICTED, c.FALSE, "Queued", "no conflict seen"),
        SetCondition(c.AWAITING_FORGE, c.FALSE, "Queued", "not handed to a pull request"),
        *_on_its_way("Queued", "waiting in the merge queue"),
    ]


def _dependencies_pending(state: JobState, event: DependenciesPending, now: datetime) -> Result:
    if state.waiting == event.message:
        return state, []
    text = event.message if event.delegated else f"{event.message}: the branch was stacked on their work and " \
                                                  "merges after them"
    return replace(state, waiting=event.message, message=text), [
        SetCondition(c.QUEUED, c.TRUE, WAITING_FOR_DEPENDENCIES, event.message),
        SetCondition(c.CHECKS_PASSED, c.UNKNOWN, WAITING_FOR_DEPENDENCIES, "checked once the dependencies merged"),
        *_on_its_way(WAITING_FOR_DEPENDENCIES, text),
        EmitEvent("Normal", WAITING_FOR_DEPENDENCIES, text),
    ]


def _dependency_failed(state: JobState, event: DependencyFailed, now: datetime) -> Result:
    message = f"{event.message}; the branch was stacked on its work and cannot merge without it"
    return _fail(replace(state, waiting=""), "DependencyFailed", message, fix=None)


def _checks_passed(state: JobState, event: ChecksPassed, now: datetime) -> Result:
    if state.checks == "passed":
        return state, []
    if state.waiting:
        state, more = _checks_passed(replace(state, waiting=""), event, now)
        return state, [SetCondition(c.QUEUED, c.TRUE, "Queued", "the dependencies merged"), *more]
    if state.needs_approval:
        text = (f"{event.what} passed; waiting for spec.approved to be true (kubectl patch mj {state.name} "
                "--type merge -p '{\"spec\":{\"approved\":true}}')")
        return replace(state, checks="passed", phase=AWAITING_APPROVAL), [
            SetCondition(c.CHECKS_PASSED, c.TRUE, "Completed", f"{event.what} passed"),
            SetCondition(c.AWAITING_APPROVAL, c.TRUE, "AwaitingApproval", text),
            SetCondition(c.QUEUED, c.FALSE, "AwaitingApproval", text),
            *_summary((c.FALSE, "AwaitingApproval", text), (c.FALSE, "AwaitingApproval", text),
                      (c.FALSE, "AwaitingApproval", "waiting for spec.approved")),
            EmitEvent("Normal", "AwaitingApproval", text),
        ]
    return replace(state, checks="passed"), [
        SetCondition(c.CHECKS_PASSED, c.TRUE, "Completed", f"{event.what} passed"),
        *_on_its_way("Queued", "ready for the next batch"),
    ]


def _approved(state: JobState, event: Approved, now: datetime) -> Result:
    text = f"{event.why}: ready for the next batch"
    return replace(state, phase=QUEUED, needs_approval=False), [
        SetCondition(c.AWAITING_APPROVAL, c.FALSE, "Approved", event.why),
        SetCondition(c.QUEUED, c.TRUE, "Approved", text),
        *_on_its_way("Approved", text),
        EmitEvent("Normal", "Approved", text),
    ]


def _reviewing(state: JobState, event: Reviewing, now: datetime) -> Result:
    return state, [SetCondition(c.CHECKS_PASSED, c.UNKNOWN, "Reviewing",
                                f"the secret scan passed; reviewer {event.reviewer} checks the branch")]


def _checks_failed(state: JobState, reason: str, message: str, description: str, *,
                   failure: str | None = None) -> Result:
    """The branch failed a check before the queue (secret scan, review): ``ChecksPassed=False/<reason>``, the job
    failed with ``failure`` (default ``message``), and a fixer told ``description``."""
    new, effects = _fail(replace(state, checks="failed"), reason, failure or message, fix=(description, ()))
    return new, [SetCondition(c.CHECKS_PASSED, c.FALSE, reason, message), *effects]


def _secret(state: JobState, event: SecretFound, now: datetime) -> Result:
    shown = "; ".join(event.findings[:10])
    message = f"the secret scan found credentials in commits of {state.branch}: {shown}"
    description = (f"The secret scan found credentials committed on branch {state.branch}: {shown}.\n"
                   "Remove them from every commit of the branch (rewrite the branch so that no commit contains "
                   "them, for example by squashing onto the target), use configuration or a Secret instead, and "
                   "push the branch again.")
    return _checks_failed(state, "SecretFound", message, description)


def _scan_timed_out(state: JobState, event: ScanTimedOut, now: datetime) -> Result:
    message = (f"the secret scan of the commits of {state.branch} did not finish within {event.seconds:g}s "
               "(a huge commit or a pathological file); the branch is not merged")
    description = (f"The merge queue's secret scan of branch {state.branch} did not finish within {event.seconds:g}s, "
                   "so the branch cannot merge. Make its commits smaller: remove generated, minified or vendored "
                   "files and very long lines from every commit of the branch (rewrite the branch, for example by "
                   "squashing onto the target), and push the branch again.")
    return _checks_failed(state, "ScanTimedOut", message, description)


def _changes_requested(state: JobState, event: ChangesRequested, now: datetime) -> Result:
    reasons = "\n".join(f"- {r[:1000]}" for r in event.reasons[:20]) or "- (no reasons given)"
    message = f"reviewer {event.reviewer} requested changes"
    shown = taskinput.untrusted(f"review by {event.reviewer}", reasons) if event.untrusted else reasons
    description = (f"The reviewer requested changes to branch {state.branch} before it may merge:\n{shown}\n"
                   "Make the changes on the branch, keep the tests passing, commit and push.")
    return _checks_failed(state, "ChangesRequested", message, description, failure=f"{message}: {reasons[:500]}")


def _batch_joined(state: JobState, event: BatchJoined, now: datetime) -> Result:
    b = event.batch
    if state.batch == b:
        return state, []
    text = f"position {b.position} of batch {b.id} on {b.base[:12]}: its quality gate runs"
    return replace(state, phase=TESTING, batch=b), [
        SetCondition(c.QUEUED, c.FALSE, "Testing", text),
        SetCondition(c.GATES_PASSED, c.UNKNOWN, "Testing", text),
        *_on_its_way("Testing", text),
    ]


def _requeued(state: JobState, event: Requeued | Retry, now: datetime) -> Result:
    new = replace(state, phase=QUEUED, batch=None, fixer=None if state.phase != TESTING else state.fixer,
                  conflict_base=None if isinstance(event, Retry) else state.conflict_base,
                  errors=0 if isinstance(event, Retry) else state.errors)
    if isinstance(event, Retry) and state.phase == CONFLICTED:
        new = replace(new, conflicts=state.max_conflict_retries)  # one more counted try
    return new, [
        SetCondition(c.QUEUED, c.TRUE, "Requeued", event.why),
        SetCondition(c.GATES_PASSED, c.UNKNOWN, "Requeued", event.why),
        SetCondition(c.CONFLICTED, c.FALSE, "Requeued", event.why),
        *_on_its_way("Requeued", event.why),
    ]


def _landed(state: JobState, event: Landed, now: datetime) -> Result:
    reason = "AlreadyMerged" if event.already else "MergeSucceeded"
    text = (f"already on the target as {event.commit[:12]}" if event.already
            else f"merged into the target as {event.commit[:12]}")
    new = replace(state, phase=MERGED, merged_commit=event.commit, batch=None, message=text)
    return new, [
        RecordTry("Merged", text),
        SetCondition(c.QUEUED, c.FALSE, reason, text),
        SetCondition(c.GATES_PASSED, c.TRUE, reason, "the candidate passed its quality gate as it landed"),
        SetCondition(c.MERGED, c.TRUE, reason, text),
        SetCondition(c.CONFLICTED, c.FALSE, reason, text),
        *_summary((c.TRUE, "Succeeded", text), (c.FALSE, "NotStalled", "nothing needs a person"),
                  (c.FALSE, "Finished", "merged")),
        EmitEvent("Normal", reason, text, routine=True),
    ]


def _conflict(state: JobState, event: Conflict, now: datetime) -> Result:
    files = tuple(event.files)
    what = _shown(files)
    if not event.counted:
        text = f"conflicts with candidates ahead of it in its batch ({what}); tried again in the next batch"
        return replace(state, phase=QUEUED, batch=None, message=text), [
            SetCondition(c.QUEUED, c.TRUE, "Requeued", text), *_on_its_way("Requeued", text)]
    n = state.conflicts + 1
    detail = f" ({event.detail})" if event.detail else ""
    if n <= state.max_conflict_retries:
        text = (f"conflicts with the target ({event.base[:12]}) in {what}{detail}; retried when the target moves "
                f"({n} of {state.max_conflict_retries})")
        new = replace(state, phase=CONFLICTED, conflicts=n, conflict_base=event.base, conflicting_files=files,
                      batch=None, message=text)
        return new, [
            RecordTry("Conflicted", text),
            SetCondition(c.QUEUED, c.FALSE, "MergeConflict", text),
            SetCondition(c.CONFLICTED, c.TRUE, "MergeConflict", text),
            *_on_its_way("MergeConflict", text),
            EmitEvent("Warning", "MergeConflict", text),
        ]
    text = f"conflicts with the target in {what}{detail} after {state.max_conflict_retries} retries"
    return _conflict_to_fixer(replace(state, conflicts=n, conflict_base=event.base, conflicting_files=files),
                              text)


def _conflict_to_fixer(state: JobState, text: str) -> Result:
    what = _shown(state.conflicting_files)
    description = (f"Branch {state.branch} conflicts with the target branch in: {what}.\n"
                   "Merge the target branch into this branch, resolve the conflicts keeping the intent of both "
                   "sides, make the tests pass, commit and push.")
    return _fail(state, "MergeConflict", text, fix=(description, state.conflicting_files), conflicted=True,
                 result="Conflicted")


def _target_idle(state: JobState, event: TargetIdle, now: datetime) -> Result:
    if state.terminal or state.conflict_base != event.head:
        return state, []  # already handed over, or the target moved (TargetMoved requeues it)
    text = (f"conflicts with the target ({event.head[:12]}) in {_shown(state.conflicting_files)} and nothing else "
            "in the queue will move the target: the branch goes to a fixer instead of waiting for a retry")
    return _conflict_to_fixer(state, text)


def _target_moved(state: JobState, event: TargetMoved, now: datetime) -> Result:
    if state.conflict_base == event.head:
        return state, []
    text = f"the target moved to {event.head[:12]}: trying again"
    return replace(state, phase=QUEUED, conflict_base=None), [
        SetCondition(c.QUEUED, c.TRUE, "Requeued", text),
        SetCondition(c.CONFLICTED, c.FALSE, "Requeued", text),
        *_on_its_way("Requeued", text),
    ]


def _evicted(state: JobState, event: Evicted, now: datetime) -> Result:
    tail = event.output[-3000:] or "(no output)"
    message = f"the candidate broke the quality gate `{event.command}` as it would land"
    description = (f"Branch {state.branch} breaks the quality gate when it is applied on the target branch.\n"
                   f"Failing command: `{event.command}`\nOutput (tail):\n```\n{tail}\n```\n"
                   "Merge the target branch into this branch, find the cause, fix it so the command passes, commit "
                   "and push.")
    new, effects = _fail(state, "Evicted", message, fix=(description, ()), result="GatesFailed")
    return new, [SetCondition(c.GATES_PASSED, c.FALSE, "Evicted", f"{message}: {tail[-500:]}"), *effects]


def _error(state: JobState, event: Error, now: datetime) -> Result:
    n = state.errors + 1
    if n >= MAX_ERRORS:
        return _fail(replace(state, errors=n), "Error", f"{event.message[:2000]}; gave up after {n} tries",
                     fix=None, result="Error")
    at = now + timedelta(seconds=ERROR_BACKOFF_SECONDS * 2 ** n)
    text = f"{event.message[:2000]}; trying again ({n} of {MAX_ERRORS})"
    return replace(state, phase=QUEUED if state.phase != CONFLICTED else state.phase, batch=None, errors=n,
                   not_before=at), [
        RecordTry("Error", text),
        ScheduleRetry(at),
        *_on_its_way("Error", text),
        EmitEvent("Warning", "Error", text),
    ]


def _fixer_landed(state: JobState, event: FixerLanded, now: datetime) -> Result:
    text = f"fixer {state.fixer} merged the branch as {event.commit[:12]}"
    return replace(state, phase=SUPERSEDED, merged_commit=event.commit, message=text), [
        SetCondition(c.MERGED, c.TRUE, "Superseded", text),
        *_summary((c.TRUE, "Succeeded", text), (c.FALSE, "NotStalled", "nothing needs a person"),
                  (c.FALSE, "Finished", "delivered by its fixer")),
        EmitEvent("Normal", "Superseded", text),
    ]


def _handed_to_forge(state: JobState, event: HandedToForge, now: datetime) -> Result:
    text = "the candidate passed its quality gate as it would land; opening its pull request on the forge"
    return replace(state, phase=AWAITING_FORGE, batch=None, message=text, tested=event.commit or None), [
        RecordTry("GatesPassed", text),
        SetCondition(c.QUEUED, c.FALSE, "AwaitingForge", text),
        SetCondition(c.GATES_PASSED, c.TRUE, "AwaitingForge", "the candidate passed its quality gate as it would land"),
        SetCondition(c.AWAITING_FORGE, c.TRUE, "AwaitingForge", text),
        *_on_its_way("AwaitingForge", text),
        EmitEvent("Normal", "AwaitingForge", text),
    ]


def _forge_waiting(state: JobState, event: ForgeWaiting, now: datetime) -> Result:
    pull = event.pull or state.pull
    if state.message == event.message and pull == state.pull:
        return state, []
    new = replace(state, pull=pull, message=event.message)
    effects: list[Effect] = [SetCondition(c.AWAITING_FORGE, c.TRUE, event.reason, event.message),
                             *_on_its_way(event.reason, event.message)]
    if event.message != state.message:
        effects.append(EmitEvent("Warning" if event.reason == "ForgeError" else "Normal", event.reason,
                                 event.message))
    return new, effects


def _forge_failure_posted(state: JobState, event: ForgeFailurePosted, now: datetime) -> Result:
    text = f"the failed gate was posted on pull request #{event.pull.number} as a failure status"
    return replace(state, pull=event.pull), [EmitEvent("Normal", "ForgeFailurePosted", text)]


def _forge_merged(state: JobState, event: ForgeMerged, now: datetime) -> Result:
    new, effects = _landed(state, Landed(event.commit), now)
    return replace(new, message=event.message), [
        *(replace(e, reason="MergedOnForge", message=event.message) if isinstance(e, SetCondition | EmitEvent)
          and e.reason == "MergeSucceeded" else e for e in effects),
        SetCondition(c.AWAITING_FORGE, c.FALSE, "MergedOnForge", event.message),
    ]


def _forge_closed(state: JobState, event: ForgeClosed, now: datetime) -> Result:
    # a person closed it: finalization does not retry it (checks failed), nor does anything else
    new, effects = _fail(replace(state, checks="failed"), event.reason, event.message, fix=None)
    return new, [SetCondition(c.AWAITING_FORGE, c.FALSE, event.reason, event.message), *effects]


def _forge_changes_requested(state: JobState, event: ChangesRequested, now: datetime) -> Result:
    new, effects = _changes_requested(state, event, now)
    return new, [SetCondition(c.AWAITING_FORGE, c.FALSE, "ChangesRequested",
                              f"{event.reviewer} requested changes on the pull request"), *effects]


# --- the table ---------------------------------------------------------------------------------------

_COMMON: Final[Mapping[type, Handler]] = {Observed: _observed, Error: _error}

TRANSITIONS: Final[Mapping[tuple[str, type], Handler]] = {
    **{(QUEUED, ev): h for ev, h in _COMMON.items()},
    (QUEUED, ChecksPassed): _checks_passed,
    (QUEUED, Reviewing): _reviewing,
    (QUEUED, SecretFound): _secret,
    (QUEUED, ScanTimedOut): _scan_timed_out,
    (QUEUED, ChangesRequested): _changes_requested,
    (QUEUED, BatchJoined): _batch_joined,
    (QUEUED, Requeued): _ignore,
    (QUEUED, Landed): _landed,
    (QUEUED, HandedToForge): _handed_to_forge,
    (QUEUED, Conflict): _conflict,
    (QUEUED, TargetMoved): _ignore,
    (QUEUED, Retry): _ignore,
    (QUEUED, Approved): _ignore,
    (QUEUED, DependenciesPending): _dependencies_pending,
    (QUEUED, DependencyFailed): _dependency_failed,

    (AWAITING_APPROVAL, Observed): _ignore,
    (AWAITING_APPROVAL, Approved): _approved,
    (AWAITING_APPROVAL, ChecksPassed): _ignore,
    (AWAITING_APPROVAL, Error): _ignore,
    (AWAITING_APPROVAL, TargetMoved): _ignore,
    (AWAITING_APPROVAL, Retry): _ignore,
    (AWAITING_APPROVAL, Requeued): _ignore,
    (AWAITING_APPROVAL, Landed): _landed,

    **{(TESTING, ev): h for ev, h in _COMMON.items()},
    (TESTING, BatchJoined): _batch_joined,
    (TESTING, Requeued): _requeued,
    (TESTING, Landed): _landed,
    (TESTING, Evicted): _evicted,
    (TESTING, Conflict): _conflict,
    (TESTING, TargetMoved): _ignore,
    (TESTING, Retry): _ignore,
    (TESTING, HandedToForge): _handed_to_forge,

    (AWAITING_FORGE, ForgeWaiting): _forge_waiting,
    (AWAITING_FORGE, ForgeMerged): _forge_merged,
    (AWAITING_FORGE, Landed): _landed,
    (AWAITING_FORGE, ForgeClosed): _forge_closed,
    (AWAITING_FORGE, ChangesRequested): _forge_changes_requested,
    (AWAITING_FORGE, HandedToForge): _ignore,
    **{(AWAITING_FORGE, ev): _ignore for ev in (Observed, Error, TargetMoved, TargetIdle, Retry, Requeued)},

    (CONFLICTED, Observed): _observed,
    (CONFLICTED, Error): _ignore,
    (CONFLICTED, TargetMoved): _target_moved,
    (CONFLICTED, TargetIdle): _target_idle,
    (CONFLICTED, Landed): _landed,
    (CONFLICTED, Retry): _requeued,
    (CONFLICTED, Requeued): _ignore,
    (CONFLICTED, FixerLanded): _fixer_landed,

    (FAILED, Observed): _ignore,
    (FAILED, Error): _ignore,
    (FAILED, TargetMoved): _ignore,
    (FAILED, TargetIdle): _ignore,
    (FAILED, Retry): _requeued,
    (FAILED, Requeued): _ignore,
    (FAILED, Landed): _landed,
    (FAILED, FixerLanded): _fixer_landed,

    **{(MERGED, ev): _ignore for ev in (Observed, TargetMoved, TargetIdle, Retry, Requeued, Landed, Error,
                                         FixerLanded, ChecksPassed, Approved, ForgeWaiting, ForgeMerged,
                                         HandedToForge)},
    (FAILED, ForgeWaiting): _ignore,
    (FAILED, ForgeClosed): _ignore,
    (FAILED, ForgeFailurePosted): _forge_failure_posted,
    (SUPERSEDED, ForgeFailurePosted): _ignore,
    **{(SUPERSEDED, ev): _ignore for ev in (Observed, TargetMoved, TargetIdle, Retry, Requeued, Landed, Error,
                                            FixerLanded)},
}
"""(phase, event type) -> handler. Impossible, for example: ``BatchJoined`` for a merged or failed job,
``Evicted`` outside a batch, ``FixerLanded`` for a job no fixer took over."""


def decide(state: JobState, event: Event, *, now: datetime) -> Result:
    """The new state and the effects for ``event`` in ``state``; raises :class:`InvalidTransition`."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"MergeJob {state.name}: {type(event).__name__} is impossible in phase "
                                f"{state.phase}")
    if isinstance(event, FixerLanded) and state.fixer is None:
        raise InvalidTransition(f"MergeJob {state.name}: FixerLanded but no fixer took the branch over")
    return handler(state, event, now)
