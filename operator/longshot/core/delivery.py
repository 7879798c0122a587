"""Whether a task's branch was delivered, will still be, or never will: read from its MergeJob's status and the
chain of fixers that took the branch over. Pure: the shell gives the facts (``JobFacts``) and a way to look up a
fixer (``fixer_of``).

One definition of a terminal MergeJob as its status shows it (``terminal``): the decider's own
(``JobState.terminal``) needs the conflict count and the retry limit; the status records the same fact as
``Reconciling=False`` (or a fixer named), which is what everyone else reads.

    job phase                               delivered  terminal  undeliverable
    Merged / Superseded                     yes        yes       no
    None / Queued / Testing / Awaiting...   no         no        no
    Conflicted, Reconciling not False,      no         no        no    (retried when the target moves)
      no fixer
    Conflicted, Reconciling=False           no         yes       yes, unless a fixer carries it (below)
    Failed                                  no         yes       yes, unless a fixer carries it (below)

    a fixer named by the job:               undeliverable
    not created yet (being created)         no
    Failed / Cancelled                      yes
    Succeeded without a MergeJob            yes when it handed off no commit; else no (its MergeJob comes)
    with a MergeJob                         that job's answer (a chain of at most MAX_CHAIN fixers)
    anything else (running)                 no
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from longshot.core import mergejobs as mj
from longshot.core import tasks

MAX_CHAIN: Final = 5
"""Fixers of fixers followed before a chain is called undeliverable (a chain is bounded by ``MAX_FIX_DEPTH``)."""


@dataclass(frozen=True)
class JobFacts:
    phase: str | None
    reconciling: str | None = None
    """The status of its ``Reconciling`` condition ("True", "False"), None when it has none."""
    fixer: str | None = None
    """The fixer task that took the branch over."""


@dataclass(frozen=True)
class FixerFacts:
    phase: str | None
    """The fixer task's phase."""
    has_commit: bool
    """Its handoff names a commit."""
    job: JobFacts | None
    """Its own MergeJob, when it has one."""


def delivered(job: JobFacts) -> bool:
    return job.phase in mj.DELIVERED


def terminal(job: JobFacts) -> bool:
    """No more tries will happen by themselves."""
    if job.phase in (mj.MERGED, mj.SUPERSEDED, mj.FAILED):
        return True
    if job.phase == mj.CONFLICTED:
        return job.reconciling == "False" or bool(job.fixer)
    return False


def undeliverable(job: JobFacts, fixer_of: Callable[[str], FixerFacts | None], depth: int = 0) -> bool:
    """The job finished without merging and nothing will carry it any more (see the table above)."""
    if job.phase in mj.DELIVERED or job.phase in (None, mj.QUEUED, mj.TESTING, mj.AWAITING_APPROVAL,
                                                  mj.AWAITING_FORGE):
        return False
    if job.phase == mj.CONFLICTED and not terminal(job):
        return False
    if not job.fixer or depth > MAX_CHAIN:
        return True
    fixer = fixer_of(job.fixer)
    if fixer is None:
        return False  # being created
    if fixer.phase in (tasks.FAILED, tasks.CANCELLED):
        return True
    if fixer.job is None:
        return fixer.phase == tasks.SUCCEEDED and not fixer.has_commit
    return undeliverable(fixer.job, fixer_of, depth + 1)


def merged_condition(delivered_by_job: dict[str, bool]) -> tuple[bool, str, str] | None:
    """The build's ``Merged`` condition from its MergeJobs (name -> delivered): (status, reason, message); None
    when the build has no MergeJob yet (no condition)."""
    if not delivered_by_job:
        return None
    pending = sorted(name for name, done in delivered_by_job.items() if not done)
    if pending:
        return False, "BranchesPending", f"not merged yet: {', '.join(pending[:10])}"
    return True, "AllMerged", f"{len(delivered_by_job)} branches merged"


def job_outcome(job: JobFacts, undeliverable: bool) -> tuple[bool, str | None]:
    """For finalization: whether the job is finished (delivered, or terminal with no fixer that still carries
    it), and the fixer that carries it (None when none does)."""
    finished = delivered(job) or (terminal(job) and (not job.fixer or undeliverable))
    return finished, job.fixer if job.fixer and not undeliverable else None
