"""What Longshot removes from a repository when a BuildRequest is deleted (``spec.cleanup``). Pure.

The operator puts the finalizer :data:`FINALIZER` on every build it reconciles, so that deleting the build waits
for this clean-up. When the build is being deleted, the refs it wrote are listed on the server and the ones the
policy lets go are deleted, each only if it still points where it was listed (a compare-and-swap: work pushed in
between is kept). Then the finalizer is removed and the API server removes the build (its AgentTasks, Pods and
MergeJobs go by garbage collection, as before).

The refs of a build (``core.names``)::

    task or candidate branch   refs/heads/longshot/<namespace>/<build>/<task>
    queue branch               refs/heads/longshot/<namespace>/<build>/_queue/<batch>/<position>
    handoff ref                refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>

``spec.cleanup.branches``:

* ``OnSuccess`` (default). Queue branches go always: they are speculative copies of candidates the queue builds
  again from the task branches, never work of their own. The other refs go only when the build succeeded, and
  only those of a task whose work *landed* (a MergeJob carrying its branch merged, or was superseded by a fixer
  that merged), was *abandoned* (a best-of-N candidate that was not chosen) or is a *report* (the handoff of a
  finished planner, reviewer or tester). A branch whose work did not merge, or whose task is gone so nothing can
  say, is kept: deleting a build never removes work a person may still need.
* ``Always``: every ref of the build.
* ``Never``: nothing; the finalizer is removed at once.

When the repository cannot be reached (or a deletion is refused), the clean-up is tried again with backoff
(:data:`BASE_DELAY` doubling to :data:`MAX_DELAY`), the count and next time kept in annotations of the build
(``Kubernetes is the database``: a restarted operator goes on where it was). After :data:`MAX_ATTEMPTS` failed
attempts, or once :data:`DEADLINE` has passed since the deletion was asked for, the finalizer is removed anyway
with a Warning Event naming what was left: a deletion never hangs for ever.

Transitions (phase from the build's finalizer and deletion timestamp; any other pair raises
:class:`InvalidTransition`):

============  ===============  ==================================================================================
phase         event            effects
============  ===============  ==================================================================================
Active        Observed         AddFinalizer (the first reconcile of a build)
Guarded       Observed         none
Released      Observed         none (the API server removes the build)
Cleaning      Observed         Never: Event + RemoveFinalizer; a retry not due yet: RetryAt; else ListRefs
Cleaning      Listed           nothing to delete: Event + RemoveFinalizer; else DeleteRefs(selected)
Cleaning      Deleted          none left: Event + RemoveFinalizer; else as ForgeFailed
Cleaning      ForgeFailed      attempts left before the deadline: RecordAttempt + RetryAt + Warning Event;
                               else Warning Event ``CleanupAbandoned`` naming what is left + RemoveFinalizer
Cleaning      CredentialsGone  Warning Event ``CleanupAbandoned`` + RemoveFinalizer (the namespace is going:
                               nothing can list or delete the refs, and no wait would help)
============  ===============  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from longshot.api import keys
from longshot.core import effects, names
from longshot.core.effects import EmitEvent

FINALIZER: Final = "longshot.dev/cleanup"
"""The finalizer the operator puts on every BuildRequest: its deletion waits for the clean-up of its refs."""
ATTEMPTS_ANNOTATION: Final = keys.PREFIX + "cleanup-attempts"
"""On a build being deleted: how many clean-up attempts failed so far."""
RETRY_AT_ANNOTATION: Final = keys.PREFIX + "cleanup-retry-at"
"""On a build being deleted: when the next clean-up attempt is due (RFC 3339)."""
MAX_ATTEMPTS: Final = 6
"""Failed clean-up attempts after which the finalizer is removed anyway."""
DEADLINE: Final = timedelta(minutes=15)
"""Time since the deletion was asked for after which a failed attempt is the last one."""
BASE_DELAY: Final = timedelta(seconds=5)
MAX_DELAY: Final = timedelta(minutes=5)
MAX_NAMED: Final = 10
"""Refs named in an Event; the rest are counted."""
MAX_ERROR: Final = 500

Policy = Literal["OnSuccess", "Always", "Never"]
ACTIVE, GUARDED, CLEANING, RELEASED = "Active", "Guarded", "Cleaning", "Released"
Fate = Literal["landed", "abandoned", "report", "open"]
"""What became of a task's work: on the target, given up for another candidate, a report read, or neither."""


InvalidTransition = effects.InvalidTransition
"""An event that cannot happen in the clean-up's phase (a bug in the shell): the deciders' one exception."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A ref on the server and the commit (or object) it points to."""

    name: str
    sha: str


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """An AgentTask of the build, as far as its refs are concerned."""

    name: str
    role: str
    phase: str
    landed: bool = False
    """A MergeJob carrying its branch is delivered (merged, or superseded by a fixer whose work merged)."""
    lost: bool = False
    """A best-of-N candidate whose task finished and did not choose it."""


def fate(t: TaskFacts) -> Fate:
    if t.landed:
        return "landed"
    if t.lost:
        return "abandoned"
    if t.role not in ("worker", "fixer") and t.phase in ("Succeeded", "Failed", "Cancelled"):
        return "report"
    return "open"


@dataclass(frozen=True)
class State:
    namespace: str
    build: str
    policy: Policy
    finalizer: bool
    """The build carries :data:`FINALIZER`."""
    deleting_since: datetime | None
    """The build's deletion timestamp, when it is being deleted."""
    succeeded: bool
    """The build finished successfully (``status.phase`` Succeeded: Finalized=True/Passed)."""
    attempts: int = 0
    """Clean-up attempts that failed so far."""
    retry_at: datetime | None = None
    """When the next attempt is due."""
    left: tuple[str, ...] = ()
    """The refs being deleted, then those a failed attempt left (for the Event), when known."""
    kept: tuple[tuple[str, str], ...] = ()
    """(ref, why) of the refs the policy keeps (for the Event)."""

    @property
    def phase(self) -> str:
        if self.deleting_since is None:
            return GUARDED if self.finalizer else ACTIVE
        return CLEANING if self.finalizer else RELEASED


# --- events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """A reconcile of the build."""


@dataclass(frozen=True)
class Listed:
    """The build's refs on the server, and its AgentTasks (by name) still in the cluster."""

    refs: tuple[Ref, ...]
    tasks: Mapping[str, TaskFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class Deleted:
    """The deletions were pushed; ``left`` are those of them still on the server at the listed commit."""

    left: tuple[str, ...]


@dataclass(frozen=True)
class ForgeFailed:
    """The repository could not be read or written (``error``: already free of secrets)."""

    error: str


@dataclass(frozen=True)
class CredentialsGone:
    """The build's credentials Secret no longer exists, or can no longer be read (``forbidden``: the namespace is
    being deleted and took the operator's RoleBinding with it, most often): waiting would not bring it back."""

    secret: str
    forbidden: bool = False


Event = Observed | Listed | Deleted | ForgeFailed | CredentialsGone

# --- effects ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddFinalizer:
    pass


@dataclass(frozen=True)
class RemoveFinalizer:
    pass


@dataclass(frozen=True)
class ListRefs:
    """List the refs under these prefixes (full ref names, ending in ``/``)."""

    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class DeleteRefs:
    """Delete each ref if it still points to its ``sha`` (compare-and-swap)."""

    refs: tuple[Ref, ...]


@dataclass(frozen=True)
class RecordAttempt:
    """Write the failed attempts and the next attempt's time on the build."""

    attempts: int
    retry_at: datetime


@dataclass(frozen=True)
class RetryAt:
    """Reconcile the build again at ``at``."""

    at: datetime


Effect = AddFinalizer | RemoveFinalizer | ListRefs | DeleteRefs | RecordAttempt | RetryAt | EmitEvent

# --- selection -------------------------------------------------------------------------------------------


def prefixes(namespace: str, build: str) -> tuple[str, str]:
    """Where every ref of the build lies: its branches and its handoff refs."""
    return ("refs/heads/" + names.build_branch_prefix(namespace, build),
            f"{names.HANDOFF_REF_PREFIX}/{namespace}/{build}/")


def _task_of(ref: str, namespace: str, build: str) -> tuple[str, str | None]:
    """``(kind, task)`` of one of the build's refs: ``queue``, ``branch``, ``handoff`` or ``other``."""
    branches, handoffs = prefixes(namespace, build)
    if ref.startswith(branches):
        rest = ref[len(branches):]
        if rest.startswith(names.QUEUE_BRANCH_DIR + "/"):
            return "queue", None
        return ("branch", rest) if rest and "/" not in rest else ("other", None)
    if ref.startswith(handoffs):
        task, _, attempt = ref[len(handoffs):].partition("/")
        return ("handoff", task) if task and attempt and "/" not in attempt else ("other", None)
    return "other", None


@dataclass(frozen=True)
class Selection:
    delete: tuple[Ref, ...]
    kept: tuple[tuple[str, str], ...]
    """(ref, why) of every ref of the build that is kept."""


def select(policy: Policy, succeeded: bool, namespace: str, build: str, listed: Listed) -> Selection:
    """Which of the listed refs the policy deletes, and why each other one is kept."""
    delete: list[Ref] = []
    kept: list[tuple[str, str]] = []
    branches, handoffs = prefixes(namespace, build)
    for ref in sorted(listed.refs, key=lambda r: r.name):
        if not ref.name.startswith((branches, handoffs)):
            continue  # not the build's (the listing is by prefix: never another build's ref)
        if policy == "Never":
            kept.append((ref.name, "spec.cleanup.branches is Never"))
            continue
        if policy == "Always":
            delete.append(ref)
            continue
        kind, task = _task_of(ref.name, namespace, build)
        if kind == "queue":
            delete.append(ref)
        elif not succeeded:
            kept.append((ref.name, "the build did not succeed"))
        elif kind == "other" or task is None:
            kept.append((ref.name, "not a ref Longshot wrote"))
        elif (facts := listed.tasks.get(task)) is None:
            kept.append((ref.name, f"no AgentTask {task} is left to say whether its work landed"))
        elif fate(facts) == "open":
            kept.append((ref.name, f"the work of {task} did not merge"))
        else:
            delete.append(ref)
    return Selection(tuple(delete), tuple(kept))


# --- the decider -----------------------------------------------------------------------------------------


def delay(attempts: int) -> timedelta:
    """Wait before attempt ``attempts + 1``: :data:`BASE_DELAY` doubling per failed attempt, at most
    :data:`MAX_DELAY`."""
    return min(MAX_DELAY, BASE_DELAY * (1 << max(0, min(attempts - 1, 16))))


def _named(refs: Sequence[str]) -> str:
    shown = ", ".join(refs[:MAX_NAMED])
    return shown + (f" and {len(refs) - MAX_NAMED} more" if len(refs) > MAX_NAMED else "")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 6] + " [...]"


def _observed(state: State, event: Observed, now: datetime) -> tuple[State, list[Effect]]:
    match state.phase:
        case "Active":
            return replace(state, finalizer=True), [AddFinalizer()]
        case "Guarded" | "Released":
            return state, []
    if state.policy == "Never":
        return replace(state, finalizer=False), [EmitEvent(
            "Normal", "CleanupSkipped", "spec.cleanup.branches is Never: every ref of the build is kept"),
            RemoveFinalizer()]
    if state.retry_at is not None and now < state.retry_at:
        return state, [RetryAt(state.retry_at)]
    return state, [ListRefs(prefixes(state.namespace, state.build))]


def _listed(state: State, event: Listed, now: datetime) -> tuple[State, list[Effect]]:
    chosen = select(state.policy, state.succeeded, state.namespace, state.build, event)
    if not chosen.delete:
        return _done(state, 0, chosen.kept)
    return replace(state, left=tuple(r.name for r in chosen.delete), kept=chosen.kept), [DeleteRefs(chosen.delete)]


def _done(state: State, deleted: int, kept: Sequence[tuple[str, str]]) -> tuple[State, list[Effect]]:
    message = f"deleted {deleted} ref(s) of the build from the repository"
    if kept:
        message += f"; kept {len(kept)}: " + _named([f"{r} ({why})" for r, why in kept])
    # the Event first: once the finalizer is gone the build is too
    return replace(state, finalizer=False, left=()), [EmitEvent("Normal", "CleanedUp", message), RemoveFinalizer()]


def _deleted(state: State, event: Deleted, now: datetime) -> tuple[State, list[Effect]]:
    if not event.left:
        return _done(state, len(state.left), state.kept)
    return _failed(replace(state, left=event.left),
                   ForgeFailed(f"the server kept {len(event.left)} ref(s) it was asked to delete"), now)


def _abandon(state: State, why: str, error: str) -> tuple[State, list[Effect]]:
    left = _named(list(state.left)) if state.left else "every ref of the build under " + " and ".join(
        prefixes(state.namespace, state.build))
    return replace(state, finalizer=False), [EmitEvent(
        "Warning", "CleanupAbandoned",
        f"the repository could not be cleaned up {why} ({_cut(error)}); the build is deleted anyway, "
        f"leaving {left}"), RemoveFinalizer()]


def _credentials_gone(state: State, event: CredentialsGone, now: datetime) -> tuple[State, list[Effect]]:
    if event.forbidden:
        return _abandon(state, "at all", f"its credentials Secret {event.secret} can no longer be read (Forbidden: "
                                         "its namespace is being deleted, or the operator's RoleBinding there is gone)")
    return _abandon(state, "at all", f"its credentials Secret {event.secret} is gone")


def _failed(state: State, event: ForgeFailed, now: datetime) -> tuple[State, list[Effect]]:
    attempts = state.attempts + 1
    since = state.deleting_since or now
    if attempts >= MAX_ATTEMPTS or now - since >= DEADLINE:
        why = (f"after {attempts} attempt(s)" if attempts >= MAX_ATTEMPTS
               else f"{DEADLINE.total_seconds() / 60:g} minutes after the deletion was asked for")
        return _abandon(replace(state, attempts=attempts), why, event.error)
    at = now + delay(attempts)
    return replace(state, attempts=attempts, retry_at=at), [
        RecordAttempt(attempts, at), RetryAt(at),
        EmitEvent("Warning", "CleanupFailed",
                  f"clean-up attempt {attempts} of {MAX_ATTEMPTS} failed ({_cut(event.error)}); trying again")]


_Handler = Callable[[State, object, datetime], tuple[State, list[Effect]]]
TRANSITIONS: Final[Mapping[tuple[str, type], _Handler]] = {
    (ACTIVE, Observed): _observed,  # type: ignore[dict-item]
    (GUARDED, Observed): _observed,  # type: ignore[dict-item]
    (RELEASED, Observed): _observed,  # type: ignore[dict-item]
    (CLEANING, Observed): _observed,  # type: ignore[dict-item]
    (CLEANING, Listed): _listed,  # type: ignore[dict-item]
    (CLEANING, Deleted): _deleted,  # type: ignore[dict-item]
    (CLEANING, ForgeFailed): _failed,  # type: ignore[dict-item]
    (CLEANING, CredentialsGone): _credentials_gone,  # type: ignore[dict-item]
}


def decide(state: State, event: Event, *, now: datetime) -> tuple[State, list[Effect]]:
    """The next state and effects of the clean-up (see the module's table)."""
    handler = TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvalidTransition(f"clean-up: {type(event).__name__} cannot happen in phase {state.phase}")
    return handler(state, event, now)
