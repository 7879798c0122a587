from __future__ import annotations

import pytest

from longshot.core import dependencies as d
from longshot.core.dependencies import DepView

pytestmark = pytest.mark.unit


def v(name: str, phase: str = "Succeeded", **kw: object) -> DepView:
    return DepView(name=name, phase=phase, **kw)  # type: ignore[arg-type]


def test_no_dependencies_is_ready():
    assert d.readiness([], {}) == ("ready", "")


def test_a_merging_dependency_is_done_only_when_its_branch_merged():
    views = {"a": v("a", merging=True, has_commit=True)}
    assert d.readiness(["a"], views) == ("waiting", "waiting for a to merge")
    views = {"a": v("a", merging=True, has_commit=True, delivered=True)}
    assert d.readiness(["a"], views) == ("ready", "")


def test_stacked_mode_starts_from_the_dependency_commit_before_it_merges():
    views = {"a": v("a", merging=True, has_commit=True)}
    assert d.readiness(["a"], views, mode="stacked")[0] == "ready"
    assert d.readiness(["a"], {"a": v("a", "Running", merging=True)}, mode="stacked")[0] == "waiting"


def test_a_task_that_produced_nothing_to_merge_is_done_when_it_succeeded():
    assert d.readiness(["a"], {"a": v("a")}) == ("ready", "")


def test_failed_or_cancelled_or_undeliverable_dependencies_block_with_their_name():
    r, msg = d.readiness(["a", "b"], {"a": v("a", "Failed", failure="tests fail"), "b": v("b")})
    assert r == "blocked" and msg == "dependency a failed: tests fail"
    assert d.readiness(["a"], {"a": v("a", "Cancelled")}) == ("blocked", "dependency a was cancelled")
    assert d.readiness(["a"], {"a": v("a", merging=True, undeliverable=True)})[0] == "blocked"
    assert d.readiness(["x"], {}) == ("blocked", "dependency x does not exist")


def test_a_decomposed_dependency_waits_for_its_subplan():
    assert d.readiness(["p"], {"p": v("p", subplan_done=False)})[0] == "waiting"
    assert d.readiness(["p"], {"p": v("p", subplan_done=False, subplan_failed=True)})[0] == "blocked"


def test_any_and_quorum_policies():
    views = {"a": v("a", "Failed"), "b": v("b"), "c": v("c", "Running")}
    assert d.readiness(["a", "b", "c"], views, policy="any")[0] == "ready"
    assert d.readiness(["a", "b", "c"], views, policy="quorum", quorum=2)[0] == "waiting"
    views["c"] = v("c", "Failed")
    assert d.readiness(["a", "b", "c"], views, policy="quorum", quorum=2)[0] == "blocked"
    assert d.readiness(["a", "b", "c"], views, policy="all")[0] == "blocked"
