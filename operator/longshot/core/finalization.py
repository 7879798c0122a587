"""The finalization decider: when every task of a build is finished, is the build done, and did it pass?

``decide(snapshot) -> list[Effect]`` is pure. The shell builds a :class:`Snapshot` of the build from its
cache (tasks, MergeJobs, the current final sweep) whenever a build in phase ``Finalizing`` (finalization
enabled) or ``Merging`` (disabled) is reconciled, and carries out the effects. The rules, in order:

1. **Tasks failed.** A planned task (any role but fixer; gates and sweeps are not planned) that failed for
   good, or is blocked because a dependency failed, means the build failed: ``Finish(False, "TasksFailed")``
   at once, naming the tasks and their last failure. Nothing finalization does could change that (retrying a
   task is a person's decision: a new ``spec.retryToken``).
2. **Drain.** While any MergeJob is not finished (queued, in a batch, conflicted with retries left, handed
   to a fixer whose branch has not landed) or a successful branch has no MergeJob yet: wait.
3. **Attempts.** Attempt 1 begins when the queue is drained (``BeginAttempt``): unmerged branches that can
   be retried are re-queued once more, then the final sweep ``<build>-final-<n>`` runs the reconciler
   command on the target tip. When nothing is re-queued and a final sweep begun beside the last iteration's
   planner still tests the tip (``Snapshot.early_sweep``), attempt 1 adopts it instead (``AdoptEarlySweep``);
   else, when the quality gate that passed on the commit now at the target tip ran the reconciler command
   (``Snapshot.tested_tip``: the merge queue lands exactly what its gate tested), attempt 1 adopts that gate run
   (``AdoptEarlySweep`` too): running the same command on the same commit again would only repeat it.
   Finalization disabled: no sweep; the outcome is decided on the drained queue.
4. **Outcome.** ``Passed`` only when every planned task succeeded (or was cancelled by a user) and every
   produced branch is delivered (merged, or carried by a fixer that merged) and the final sweep passed.
   Otherwise, while attempts remain, the next attempt begins (re-queue, a fixer for a failing sweep, sweep
   again); after ``maxAttempts``: ``TestsFailed`` (the sweep failed) or ``UnmergedBranches`` (naming them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

FIXER: Final = "fixer"
RETRY_ASKED: Final = "longshot.dev/retry-asked"
"""On a MergeJob: finalization asks its queue, the only writer of MergeJob status, to try the job again (the value
is the attempt that asks, :class:`RequeueJobs`). The queue tries a job that ended unmerged again and then takes the
annotation away; while it is there the job counts as not finished."""


@dataclass(frozen=True)
class TaskView:
    """A task of the build that is not a gate or a sweep (planned tasks and fixers)."""

    name: str
    phase: str
    role: str = "worker"
    failure: str = ""
    """The last failure's message, for a failed task."""
    blocked: str = ""
    """Why a pending task cannot start (a dependency failed), else empty."""
    fixes: str | None = None
    """For a fixer: the MergeJob or sweep it fixes."""


@dataclass(frozen=True)
class JobView:
    """A MergeJob of the build (or a successful branch still waiting for its MergeJob: ``phase`` Missing)."""

    name: str
    phase: str
    """Missing, Queued, Testing, Merged, Conflicted, Failed, Superseded."""
    finished: bool = False
    """No more tries will happen by themselves (terminal Conflicted/Failed, Merged, Superseded)."""
    delivered: bool = False
    """Its work is on the target (merged, or carried by a fixer that merged)."""
    carried_by: str | None = None
    """The fixer task that took the branch over, if any."""
    retryable: bool = False
    """Finished without its work landing, and another try could help (conflicts, errors)."""
    message: str = ""


@dataclass(frozen=True)
class SweepView:
    """The final sweep of the current attempt."""

    name: str
    finished: bool
    passed: bool = False
    message: str = ""


@dataclass(frozen=True)
class Snapshot:
    build: str
    enabled: bool
    attempt: int
    """``status.finalizationAttempts``: 0 before the first attempt."""
    max_attempts: int
    tasks: tuple[TaskView, ...]
    jobs: tuple[JobView, ...]
    final_sweep: SweepView | None = None
    """The final sweep of ``attempt`` (None when it does not exist yet)."""
    early_sweep: SweepView | None = None
    """Before the first attempt: a final sweep begun beside the last iteration's planner that still tests the target
    tip (``core.sweeps.early_sweep_kept``), running or finished."""
    tested_tip: SweepView | None = None
    """Before the first attempt: a passed quality-gate run whose command covers the reconciler command
    (``core.sweeps.gate_covers``) on the commit the target tip is now (the shell checked the tip)."""
    sweep_fixers_left: int = 0
    """How many more fixer tasks this build may create (``merge.maxFixers`` minus the fixers so far)."""


# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet; ``why`` says what finalization waits for."""

    why: str


@dataclass(frozen=True)
class BeginAttempt:
    """Record ``status.finalizationAttempts = attempt`` (and tell the build decider)."""

    attempt: int


@dataclass(frozen=True)
class RequeueJobs:
    """Give these finished-but-unmerged MergeJobs another try."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class StartFinalSweep:
    """Create the final sweep task of ``attempt`` on the target tip."""

    attempt: int


@dataclass(frozen=True)
class AdoptEarlySweep:
    """Take ``sweep`` as the final sweep of ``attempt`` (record it on that task): an early final sweep, or the
    quality-gate run that tested the tip (``Snapshot.tested_tip``)."""

    sweep: str
    attempt: int


@dataclass(frozen=True)
class FixFailingSweep:
    """Create a fixer for the failing final sweep ``sweep`` with its output."""

    sweep: str
    message: str


@dataclass(frozen=True)
class Finish:
    passed: bool
    reason: Literal["Passed", "TasksFailed", "TestsFailed", "UnmergedBranches"]
    message: str
    attempt: int


Effect = Wait | BeginAttempt | RequeueJobs | StartFinalSweep | AdoptEarlySweep | FixFailingSweep | Finish


def _names(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def failed_tasks(tasks: Sequence[TaskView]) -> list[str]:
    """Messages of planned tasks that failed for good or are blocked by a failed dependency."""
    out: list[str] = []
    for t in tasks:
        if t.role == FIXER:
            continue
        if t.phase == "Failed":
            out.append(f"{t.name} failed" + (f": {t.failure[:300]}" if t.failure else ""))
        elif t.blocked:
            out.append(f"{t.name} is blocked: {t.blocked[:300]}")
    return out


def decide(s: Snapshot) -> list[Effect]:
    """What finalization does next for ``s`` (see the module doc)."""
    failed = failed_tasks(s.tasks)
    if failed:
        shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
        return [Finish(False, "TasksFailed", f"{len(failed)} planned task(s) did not succeed: {shown}", s.attempt)]
    waiting = [j.name for j in s.jobs if not j.finished]
    busy_fixers = [t.name for t in s.tasks if t.role == FIXER and t.phase not in ("Succeeded", "Failed", "Cancelled")]
    if waiting or busy_fixers:
        return [Wait("draining the merge queue: " + _names(waiting + busy_fixers))]
    unmerged = [j for j in s.jobs if not j.delivered]
    if not s.enabled:
        if unmerged:
            return [Finish(False, "UnmergedBranches", "not merged: " + _names([f"{j.name} ({j.message[:120]})"
                                                                               for j in unmerged]), 0)]
        return [Finish(True, "Passed", "every planned task succeeded and every branch merged", 0)]
    if s.attempt == 0:
        requeue = _requeue(unmerged)
        if s.early_sweep is not None and not requeue:  # it tests the tip the build ends with: no second run
            return [BeginAttempt(1), AdoptEarlySweep(s.early_sweep.name, 1)]
        if s.tested_tip is not None and s.tested_tip.passed and not requeue:  # the gate ran it on this tip
            return [BeginAttempt(1), AdoptEarlySweep(s.tested_tip.name, 1)]
        return [BeginAttempt(1), *requeue, StartFinalSweep(1)]
    if s.final_sweep is None:
        return [StartFinalSweep(s.attempt)]
    if not s.final_sweep.finished:
        return [Wait(f"the final sweep {s.final_sweep.name} runs")]
    if s.final_sweep.passed and not unmerged:
        return [Finish(True, "Passed", "every planned task succeeded, every branch merged and the final sweep "
                       "passed", s.attempt)]
    if not s.final_sweep.passed:
        reason: Literal["TestsFailed", "UnmergedBranches"] = "TestsFailed"
        message = "the final sweep failed: " + (s.final_sweep.message[-1500:] or "no output")
    else:
        reason = "UnmergedBranches"
        message = "not merged: " + _names([f"{j.name} ({j.message[:120]})" for j in unmerged])
    if s.attempt >= s.max_attempts:
        return [Finish(False, reason, message, s.attempt)]
    effects: list[Effect] = [BeginAttempt(s.attempt + 1), *_requeue(unmerged)]
    if not s.final_sweep.passed and s.sweep_fixers_left > 0:
        effects.append(FixFailingSweep(s.final_sweep.name, message))
    else:
        effects.append(StartFinalSweep(s.attempt + 1))
    return effects


def _requeue(unmerged: Sequence[JobView]) -> list[Effect]:
    names = tuple(j.name for j in unmerged if j.retryable and j.carried_by is None)
    return [RequeueJobs(names)] if names else []
