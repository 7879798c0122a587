"""The merge queue's git work as typed actions, carried out by one executor (:func:`run`) in a worker thread, never
on the event loop, each under a deadline (``GIT_DEADLINE_SECONDS``) well under the Queue controller's stall limit:
a tenant's slow git server can neither block the loop nor hold a reconcile until /healthz fails. A reconcile whose
action runs out of time raises :class:`GitDeadline`; the controller requeues the key with its backoff.

Each action's result goes back to the caller, and through it to the pure queue (``core.mergequeue.prepared``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from longshot.core import mergequeue as q
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

from .workspaces import ScanItem, ScanResult, scan_slice

GIT_DEADLINE_SECONDS: Final = 120.0
"""The longest one git action of a queue reconcile may take (a fetch, a prepare, a push). Under the Queue
controller's stall limit (``manager.STALLS``: 300 s) with room for a second action in the same reconcile, so one
tenant's slow git server requeues its own queue instead of wedging a worker or failing the replica's /healthz."""

SCAN_MARGIN_SECONDS: Final = 30.0
"""A slice of scans may take its first job's scan timeout (``scan_timeout_seconds``, which fails that job with
``ScanTimedOut``) and this much more for the merge-base and the fetch of the branch: :func:`scan_deadline`."""

T = TypeVar("T", covariant=True)


def scan_deadline(timeout: float | None) -> float:
    """The deadline of a :class:`Scan`: long enough for a scan to reach its own timeout (a verdict for its job)
    rather than the action's deadline (no verdict: the slice would be tried again and again)."""
    return max(GIT_DEADLINE_SECONDS, (timeout or 0.0) + SCAN_MARGIN_SECONDS)


class GitAction(Protocol[T]):
    """One piece of git work: ``do`` runs it (blocking; in a worker thread)."""

    def do(self, w: vws.Workspace) -> T: ...


class GitDeadline(Exception):
    """A git action of the queue ran past ``GIT_DEADLINE_SECONDS``."""


@dataclass(frozen=True)
class Head:
    """Fetch the target; its head."""

    target: str

    def do(self, w: vws.Workspace) -> str:
        return speculate.head_of(w, self.target)


@dataclass(frozen=True)
class EnsureBranch:
    """Make ``branch`` on the server from ``start`` unless it exists (``per: build`` delivery's build branch)."""

    branch: str
    start: str

    def do(self, w: vws.Workspace) -> None:
        speculate.ensure_branch(w, self.branch, self.start)


@dataclass(frozen=True)
class FetchCommits:
    """Fetch the members' branches together (one fetch for a slice of checks)."""

    members: tuple[speculate.Member, ...]

    def do(self, w: vws.Workspace) -> None:
        speculate.fetch_commits(w, self.members)


@dataclass(frozen=True)
class Prepare:
    """Build a batch's speculative commits on the target (or on ``onto``, a stacked batch)."""

    target: str
    members: tuple[speculate.Member, ...]
    onto: str | None = None
    onto_branch: str | None = None

    def do(self, w: vws.Workspace) -> q.Prepared:
        return speculate.prepare(w, self.target, self.members, self.onto, self.onto_branch)


@dataclass(frozen=True)
class Publish:
    """Push a batch's speculative commits to its queue branches (one per gated position)."""

    namespace: str
    build: str
    batch_id: str
    commits: tuple[tuple[int, str], ...]

    def do(self, w: vws.Workspace) -> None:
        speculate.publish(w, self.namespace, self.build, self.batch_id, self.commits)


@dataclass(frozen=True)
class Land:
    """Push a tested commit to the target with a compare-and-swap from ``base``: (landed, why not)."""

    target: str
    base: str
    commit: str
    branch: str

    def do(self, w: vws.Workspace) -> tuple[bool, str]:
        return speculate.land(w, self.target, self.base, self.commit, self.branch)


@dataclass(frozen=True)
class PushBranch:
    """Push a tested candidate to its own branch (delivery through the forge)."""

    branch: str
    commit: str

    def do(self, w: vws.Workspace) -> None:
        speculate.push_branch(w, self.branch, self.commit)


@dataclass(frozen=True)
class Cleanup:
    """Delete a batch's queue branches."""

    namespace: str
    build: str
    batch_id: str
    positions: tuple[int, ...]

    def do(self, w: vws.Workspace) -> None:
        speculate.cleanup(w, self.namespace, self.build, self.batch_id, self.positions)


@dataclass(frozen=True)
class Scan:
    """The secret scans of a slice of branches (``workspaces.scan_slice``)."""

    items: tuple[ScanItem, ...]
    budget: float
    timeout: float | None

    def do(self, w: vws.Workspace) -> dict[str, ScanResult]:
        return scan_slice(w, self.items, budget=self.budget, timeout=self.timeout)


async def run(w: vws.Workspace, action: GitAction[T], deadline: float | None = None) -> T:
    """``action`` carried out in a worker thread; :class:`GitDeadline` when it takes longer than ``deadline``
    seconds (default ``GIT_DEADLINE_SECONDS``; the thread's git command ends at its own timeout,
    ``workspaces.GIT_COMMAND_SECONDS``)."""
    deadline = GIT_DEADLINE_SECONDS if deadline is None else deadline
    try:
        return await asyncio.wait_for(asyncio.to_thread(action.do, w), deadline)
    except TimeoutError:
        raise GitDeadline(f"git {type(action).__name__.lower()} in {w.key} took longer than {deadline:.0f}s; "
                          "the queue is reconciled again") from None

