"""Binding work to one commit and one Pod. Pure.

* **A handoff is about its own task's branch, at that branch's tip.** A worker or fixer that hands off a branch
  must name the task's own branch (``spec.branch``, else ``longshot/<build>/<task>``) and, as its commit, that
  branch's tip when the operator reads the handoff (the attempt's Pod has ended, so nothing of it can push any
  more): :func:`handoff_mismatch`. Otherwise the attempt fails as ``InvalidHandoff`` with both values named.
* **A review or a test is about one commit.** A reviewer or tester task carries the exact commit it reads
  (``spec.commit``, the MergeJob's commit); the agent checks out that commit (detached) and refuses to run when
  the branch does not hold it, and its handoff names it. The merge queue counts a review only when the reviewed
  commit is the MergeJob's (:func:`review_mismatch`); otherwise the review is void and runs again.
* **A Pod is adopted only when it is this task's.** A Pod with the attempt's name is the attempt's only when
  its controller owner reference is the AgentTask (same UID) and, once the operator recorded the attempt's Pod
  UID, it is that UID (:func:`adoption_refused`). A foreign Pod is never adopted, never read and never deleted.
"""

from __future__ import annotations

from typing import Final

from longshot.api import sanitize
from longshot.core import names

FOREIGN_POD: Final = "ForeignPod"
"""Reason of an attempt whose Pod name is taken by a Pod the operator did not make for the task."""
BOUND_ROLES: Final = frozenset({"reviewer", "tester"})
"""Roles that read one commit (``spec.commit``) rather than a branch tip."""


def _short(commit: str | None) -> str:
    return (commit or "none")[:12]


def task_branch(spec_branch: str | None, namespace: str, build: str, task: str) -> str:
    """The branch a task works on: ``spec.branch``, else ``longshot/<namespace>/<build>/<task>``
    (``core.names.task_branch``; ``runtime.pods.task_input`` and the handoff check both ask here)."""
    return spec_branch or names.task_branch(namespace, build, task)


def handoff_mismatch(*, role: str, outcome: str, branch: str | None, commit: str | None, expected_branch: str,
                     tip: str | None, bound_commit: str | None = None) -> str | None:
    """Why a handoff may not complete its attempt, or None.

    ``branch`` and ``commit`` are the handoff's; ``expected_branch`` the task's own; ``tip`` the commit that
    branch points to now (None: the branch does not exist); ``bound_commit`` the reviewer's or tester's
    ``spec.commit``. Only a handoff that delivers work (a worker or fixer that ``succeeded`` with a commit) is
    checked against the branch; a reviewer or tester bound to a commit must name that commit."""
    if role in BOUND_ROLES and bound_commit:
        if not commit or not _same(commit, bound_commit):
            return (f"the {role}'s handoff names commit {_short(commit)}, but the task was bound to commit "
                    f"{_short(bound_commit)} (spec.commit); a review or test of another commit does not count")
        return None
    if role not in ("worker", "fixer") or outcome != "succeeded" or not commit:
        return None
    shown = sanitize.one_line(branch or "none")[:255]
    if branch != expected_branch:
        return (f"the handoff names branch {shown!r}, but this task's branch is {expected_branch!r}; an attempt "
                "hands off its own branch only")
    if tip is None:
        return (f"the handoff names commit {_short(commit)} on branch {expected_branch!r}, but that branch does not "
                "exist in the repository")
    if not _same(commit, tip):
        return (f"the handoff names commit {_short(commit)}, but branch {expected_branch!r} is at {_short(tip)}: "
                "the branch moved after the handoff was written (or the handoff names another commit)")
    return None


def review_mismatch(reviewed: str | None, job_commit: str | None) -> str | None:
    """Why a reviewer's verdict does not count for a MergeJob at ``job_commit``, or None."""
    if not reviewed or not job_commit or not _same(reviewed, job_commit):
        return (f"the review is void: it read commit {_short(reviewed)}, but the MergeJob merges commit "
                f"{_short(job_commit)}; the commit is reviewed again")
    return None


def adoption_refused(pod: str, owner_uid: str, task_uid: str, recorded_uid: str | None, pod_uid: str) -> str | None:
    """Why the Pod ``pod`` is not the attempt's (not adopted, not read, not deleted), or None.

    ``owner_uid``: the UID in the Pod's controller owner reference of kind AgentTask ("" when none);
    ``recorded_uid``: the attempt's ``podUID`` (None when not recorded yet)."""
    if not owner_uid or owner_uid != task_uid:
        who = f"AgentTask UID {owner_uid}" if owner_uid else "no AgentTask controller"
        return (f"the Pod {pod} has this attempt's name but is not this task's (its controller is {who}, the task's "
                f"UID is {task_uid}): not adopted and not deleted; its owner should remove it")
    if recorded_uid and recorded_uid != pod_uid:
        return (f"the Pod {pod} (UID {pod_uid}) is not the one the operator created for this attempt (UID "
                f"{recorded_uid}): it was replaced; not adopted")
    return None


def _same(a: str, b: str) -> bool:
    """Two commit ids name the same commit (one may be abbreviated, at least 7 hex digits)."""
    a, b = a.lower(), b.lower()
    n = min(len(a), len(b))
    return n >= 7 and a[:n] == b[:n]
