"""``spec.dependencies: stacked`` in the pure core: what a dependent is told to start from (``TaskInput.stack``), and
the merge queue's decision that its branch merges only after its dependencies, never without them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.api import handoff as ho
from longshot.core import dependencies as d
from longshot.core import mergejobs as mj
from longshot.core import taskinput
from longshot.core.dependencies import DepView
from longshot.core.taskinput import TaskResult

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)
A = "a" * 40
B = "b" * 40


def result(name: str, commit: str | None, *, delivered: bool = False, phase: str = "Succeeded",
           merging: bool = True) -> TaskResult:
    return TaskResult(name, phase, commit=commit, branch=f"longshot/x/{name}" if commit else None,
                      delivered=delivered, merging=merging)


# --- TaskInput.stack ---------------------------------------------------------------------------------


def test_stacked_mode_lists_the_unmerged_dependencies_with_their_branch_and_commit_in_order():
    stack = taskinput.stack([result("models", A), result("api", B)], "stacked")
    assert stack == [{"task": "models", "branch": "longshot/x/models", "commit": A},
                     {"task": "api", "branch": "longshot/x/api", "commit": B}]
    task = ho.TaskInput.model_validate({"task": "t", "build": "b", "namespace": "n", "role": "worker",
                                        "description": "d", "repositoryUrl": "u", "branch": "x", "stack": stack})
    assert [(e.task, e.commit) for e in task.stack] == [("models", A), ("api", B)]


def test_delivered_failed_empty_and_non_merging_dependencies_are_not_stacked():
    stack = taskinput.stack([
        result("merged", A, delivered=True),         # already on the target: the clone has it
        result("failed", B, phase="Failed"),
        result("empty", None),                       # succeeded with nothing to merge
        result("planner", "c" * 40, merging=False),  # not a branch to merge
        result("running", "d" * 40, phase="Running"),
    ], "stacked")
    assert stack == []


def test_merged_mode_never_stacks():
    assert taskinput.stack([result("models", A)], "merged") == []


def test_the_same_commit_is_stacked_once():
    assert len(taskinput.stack([result("a", A), result("b", A)], "stacked")) == 1


# --- when may a stacked branch merge -----------------------------------------------------------------


def v(name: str, phase: str = "Succeeded", **kw: object) -> DepView:
    return DepView(name=name, phase=phase, **kw)  # type: ignore[arg-type]


def test_a_stacked_branch_waits_until_its_dependencies_merged_although_it_could_start():
    views = {"a": v("a", merging=True, has_commit=True)}
    assert d.readiness(["a"], views, mode="stacked")[0] == "ready"  # it may start...
    assert d.merge_readiness(["a"], views) == ("waiting", "waiting for a to merge")  # ...but not merge
    views = {"a": v("a", merging=True, has_commit=True, delivered=True)}
    assert d.merge_readiness(["a"], views) == ("ready", "")


def test_a_stacked_branch_fails_naming_the_dependency_that_never_merges():
    assert d.merge_readiness(["a"], {"a": v("a", "Failed", failure="tests fail")}) == (
        "blocked", "dependency a failed: tests fail")
    assert d.merge_readiness(["a"], {"a": v("a", "Cancelled")}) == ("blocked", "dependency a was cancelled")
    verdict, why = d.merge_readiness(["a"], {"a": v("a", merging=True, has_commit=True, undeliverable=True)})
    assert verdict == "blocked" and "dependency a" in why and "cannot merge" in why


def test_under_any_a_stacked_branch_still_waits_for_every_dependency_on_its_way():
    views = {"a": v("a", merging=True, has_commit=True, delivered=True), "b": v("b", merging=True, has_commit=True)}
    assert d.readiness(["a", "b"], views, policy="any")[0] == "ready"
    assert d.merge_readiness(["a", "b"], views, policy="any") == ("waiting", "waiting for b to merge")
    views["b"] = v("b", "Failed")  # the policy is met without b, and b will never merge: nothing to wait for
    assert d.merge_readiness(["a", "b"], views, policy="any") == ("ready", "")


# --- the MergeJob decider ----------------------------------------------------------------------------


def job(**kw: Any) -> mj.JobState:
    return mj.JobState(name="b-c", task="b-c", branch="longshot/b/b-c", **kw)


def decide(s: mj.JobState, event: Any) -> tuple[mj.JobState, list[Any]]:
    new, effects = mj.decide(s, event, now=NOW)
    return new, checked(effects)


def test_a_waiting_stacked_job_says_so_once_and_stays_queued():
    s, effects = decide(job(), mj.DependenciesPending("waiting for b-a to merge"))
    assert s.phase == "Queued" and s.checks == "pending" and not s.ready
    queued = cond(effects, "Queued")
    assert (queued.status, queued.reason, queued.message) == ("True", "WaitingForDependencies",
                                                              "waiting for b-a to merge")
    assert "waiting for b-a to merge" in cond(effects, "Reconciling").message
    assert cond(effects, "Stalled").status == "False"
    again, effects = decide(s, mj.DependenciesPending("waiting for b-a to merge"))
    assert again == s and effects == []  # no status write, no hot loop


def test_once_the_dependencies_merged_the_checks_pass_and_the_wait_is_over():
    s, _ = decide(job(), mj.DependenciesPending("waiting for b-a to merge"))
    s, effects = decide(s, mj.ChecksPassed())
    assert s.ready and s.waiting == ""
    assert cond(effects, "Queued").reason == "Queued"


def test_a_dependency_that_fails_for_good_fails_the_stacked_job_without_a_fixer():
    s, _ = decide(job(), mj.DependenciesPending("waiting for b-a to merge"))
    s, effects = decide(s, mj.DependencyFailed("dependency b-a failed: tests fail"))
    assert s.phase == "Failed" and s.terminal and s.fixer is None
    assert not of(effects, mj.CreateFixer)
    stalled = cond(effects, "Stalled")
    assert stalled.status == "True" and stalled.reason == "DependencyFailed"
    assert "dependency b-a failed" in stalled.message
    # finalization may give it another try: it is queued again and re-checks its dependencies
    s, _ = decide(s, mj.Retry("finalization"))
    assert s.phase == "Queued" and s.checks == "pending"


def test_a_delegating_tasks_job_waits_for_its_children_and_says_so_plainly():
    why = "waiting for delegated child task(s) b-p-a to finish and merge first"
    s, effects = decide(job(), mj.DependenciesPending(why, delegated=True))
    assert s.phase == "Queued" and not s.ready
    assert cond(effects, "Queued").message == why and cond(effects, "Reconciling").message == why
    s, _ = decide(s, mj.ChecksPassed())
    assert s.ready
