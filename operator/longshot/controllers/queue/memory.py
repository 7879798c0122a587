"""What a queue keeps in memory between its reconciles: the facts the pure queue is given (``core.mergequeue``'s
``QueueState``: windows, broken builds, what did not stack, held checks) and the target heads read. Only an
optimisation: a restart starts at the maximum window, reads the heads again and checks the held jobs again (their
status still says pending)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from longshot.api import mergejob, objects
from longshot.core import cigate
from longshot.core import mergejobs as mj


@dataclass(frozen=True)
class Held:
    """A job's checks that passed, held to be written with its next status: the job as checked (its uid and
    commit) and the verdict."""

    uid: str
    commit: str
    verdict: mj.ChecksPassed
    at: datetime
    """When the checks passed (the operator's clock)."""


@dataclass
class Memory:
    monotonic: Callable[[], float] = time.monotonic
    """The clock of ``heads``."""
    windows: dict[str, int] = field(default_factory=dict)
    broke: set[str] = field(default_factory=set)
    """Builds whose last batch ended with an eviction (``core.mergequeue.QueueState.broke``)."""
    did_not_stack: set[tuple[str, str]] = field(default_factory=set)
    """(job, speculative commit) pairs that did not apply there (``core.mergequeue.QueueState.did_not_stack``)."""
    heads: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Queue -> (when, monotonic; the target's head then): what the last fetch of the target read, or the commit
    the queue's own push landed (``batch.HEAD_REUSE_SECONDS``)."""
    passed: dict[tuple[str, str], Held] = field(default_factory=dict)
    """(namespace, job) -> the verdict of its checks, passed and not written yet (``QueueState.held``)."""
    ci_started: dict[tuple[str, int], datetime] = field(default_factory=dict)
    """(batch, position) -> when the queue asked the CI gate (``spec.merge.gate``) for that prefix: its probe, and
    the start of its timeout. A restart asks again (the timeout starts again, the CI's reports are still there)."""
    ci_read: dict[tuple[str, int], tuple[datetime, cigate.Verdict]] = field(default_factory=dict)
    """(batch, position) -> the last read of its required checks: when, and ``core.cigate.verdict``."""

    def forget_ci(self, batches: set[str]) -> None:
        """Forget the CI probes of every batch not in ``batches`` (gone, or sent back to the queue: a batch formed
        again with the same id asks again, with a new timeout)."""
        for key in [k for k in self.ci_started if k[0] not in batches]:
            del self.ci_started[key]
        for key in [k for k in self.ci_read if k[0] not in batches]:
            del self.ci_read[key]

    def held(self, job: objects.MergeJob) -> Held | None:
        """The held verdict of ``job``'s checks, if it still applies: the same job and commit, still queued, its
        status not written since (checks pending, no batch)."""
        h = self.passed.get((job.namespace, job.name))
        if h is None or h.uid != job.metadata.uid or h.commit != (job.spec.commit or ""):
            return None
        s = job.status
        if s.phase not in (None, mj.QUEUED) or s.checks not in (None, "pending") or s.batch is not None:
            return None
        return h

    def forget_written(self, jobs: Mapping[tuple[str, str], objects.MergeJob]) -> None:
        """Drop the held verdicts that no longer apply (written with a status, the job gone or changed)."""
        for key in [k for k in self.passed if (job := jobs.get(k)) is None or self.held(job) is None]:
            del self.passed[key]

    def with_held(self, job: objects.MergeJob, events: Sequence[mj.Event]) -> list[mj.Event]:
        """``events`` of a job, after the held verdict of its checks if it has one (the write carries it)."""
        h = self.held(job)
        if h is None:
            return list(events)
        return [*([] if mergejob.seen(job.status) else [mj.Observed()]), h.verdict, *events]

    def forget_batches(self, commits: set[str]) -> None:
        """Forget the did-not-stack pairs of speculative commits no batch has any more."""
        self.did_not_stack = {(n, c) for n, c in self.did_not_stack if c in commits}
