"""When may a task start, given its ``dependsOn``? Pure.

A dependency is *done* when the task succeeded and its work is where the dependent will start from:

* ``merged`` (the default, ``spec.dependencies: merged``): a merging role's (worker, fixer) branch is on the
  target (its MergeJob merged, or the fixer that took its branch over merged), so the dependent clones the
  target at a commit that contains it. A task that produced nothing to merge is done when it succeeded.
* ``stacked``: the dependency succeeded with a commit; the dependent starts from that commit before the merge
  (its own MergeJob waits for the dependency to merge, :func:`merge_readiness`, and restacks: only its own
  commits are replayed onto the target, so a dependency whose head changed lands as it merged).

A decomposed task (a subplanner) is done when every task of its subplan is done.

A dependency that failed, was cancelled, is blocked itself, or whose branch can never merge, *fails* its
dependents: they are blocked with a message naming it and never start (until it is retried and succeeds).

Policies (``AgentTask.spec.dependencyPolicy``): ``all`` (default) needs every dependency done; ``any`` needs
one; ``quorum`` needs ``k``. A policy that can no longer be met (too many failed) blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Mode = Literal["merged", "stacked"]
Policy = Literal["all", "any", "quorum"]
Readiness = Literal["ready", "waiting", "blocked"]
DepStatus = Literal["done", "waiting", "failed"]

MERGED: Final = "merged"
STACKED: Final = "stacked"


@dataclass(frozen=True, slots=True)
class DepView:
    """What the decision needs to know about one task that others may depend on."""

    name: str
    phase: str
    """The AgentTask's phase (Pending, Backoff, Running, Succeeded, Failed, Cancelled)."""
    merging: bool = False
    """Its successful output is a branch that must merge (a worker or fixer that pushed a commit)."""
    delivered: bool = False
    """Its branch is on the target (merged, or carried by a fixer that merged)."""
    undeliverable: bool = False
    """Its branch can never merge (its MergeJob failed for good and no fixer carries it)."""
    has_commit: bool = False
    """It succeeded with a commit a dependent can stack on."""
    subplan_done: bool = True
    """For a decomposed task: every task of its subplan is done."""
    subplan_failed: bool = False
    """For a decomposed task: a task of its subplan failed."""
    failure: str = ""
    """Why it failed (for the dependents' message)."""


def status_of(dep: DepView, mode: Mode = "merged") -> DepStatus:
    """Whether ``dep`` is done, still on its way, or failed, for a dependent in ``mode``."""
    if dep.phase in ("Failed", "Cancelled") or dep.undeliverable or dep.subplan_failed:
        return "failed"
    if dep.phase != "Succeeded" or not dep.subplan_done:
        return "waiting"
    if not dep.merging or dep.delivered:
        return "done"
    if mode == STACKED and dep.has_commit:
        return "done"
    return "waiting"


def _why(dep: DepView | None, name: str) -> str:
    if dep is None:
        return f"dependency {name} does not exist"
    if dep.phase == "Cancelled":
        return f"dependency {name} was cancelled"
    if dep.undeliverable:
        return f"dependency {name} succeeded but its branch cannot merge"
    if dep.subplan_failed:
        return f"dependency {name}: a task of its subplan failed"
    text = f"dependency {name} failed"
    return f"{text}: {dep.failure[:300]}" if dep.failure else text


def readiness(depends_on: Sequence[str], views: Mapping[str, DepView], *, mode: Mode = "merged",
              policy: Policy = "all", quorum: int | None = None) -> tuple[Readiness, str]:
    """``(readiness, message)`` of a task with these dependencies. A missing dependency counts as failed
    (plan validation makes that impossible for planned tasks; a hand-written task may name a typo)."""
    if not depends_on:
        return "ready", ""
    done: list[str] = []
    waiting: list[str] = []
    failed: list[tuple[str, str]] = []
    for name in depends_on:
        dep = views.get(name)
        st: DepStatus = "failed" if dep is None else status_of(dep, mode)
        if st == "done":
            done.append(name)
        elif st == "waiting":
            waiting.append(name)
        else:
            failed.append((name, _why(dep, name)))
    need = {"all": len(depends_on), "any": 1, "quorum": max(1, min(quorum or 1, len(depends_on)))}[policy]
    if len(done) >= need:
        return "ready", ""
    if len(done) + len(waiting) < need:
        return "blocked", "; ".join(w for _, w in failed) or "dependencies failed"
    merging = [n for n in waiting if (v := views.get(n)) is not None and v.phase == "Succeeded"]
    shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more" if len(waiting) > 10 else "")
    if merging and len(merging) == len(waiting):
        return "waiting", f"waiting for {shown} to merge"
    return "waiting", f"waiting for {shown}" + (f" ({need} of {len(depends_on)} needed)" if policy != "all" else "")


def merge_readiness(depends_on: Sequence[str], views: Mapping[str, DepView], *, policy: Policy = "all",
                    quorum: int | None = None) -> tuple[Readiness, str]:
    """May the branch of a task with these dependencies merge? For a stacked dependent, whose branch was built on
    its dependencies' unmerged commits: ``ready`` only when the policy is met in ``merged`` mode (the dependencies
    are on the target) and no other dependency is still on its way (the branch may carry its work);
    ``waiting`` (``"waiting for <dep> to merge"``) while one is; ``blocked``, naming the dependency, when the
    policy can no longer be met (a dependency failed, was cancelled, or its branch can never merge)."""
    verdict, message = readiness(depends_on, views, mode=MERGED, policy=policy, quorum=quorum)
    if verdict != "ready":
        return verdict, message
    pending = [n for n in depends_on if (v := views.get(n)) is not None and status_of(v, MERGED) == "waiting"]
    if pending:
        shown = ", ".join(pending[:10]) + (f" and {len(pending) - 10} more" if len(pending) > 10 else "")
        return "waiting", f"waiting for {shown} to merge"
    return "ready", ""
