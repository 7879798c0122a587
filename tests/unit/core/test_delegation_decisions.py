from __future__ import annotations

import pytest

from longshot.api import keys
from longshot.core import delegation as dl
from longshot.core.dependencies import DepView

pytestmark = pytest.mark.unit

PARENT = dl.Parent(name="b-work", namespace="ns", build="b", build_uid="u1", labels={keys.ITERATION: "1"})
ON = dl.Limits(enabled=True, max_depth=2, max_children=5, max_total_tasks=50, total_tasks=3)


def req(name: str, prompt: str = "do it", scope: tuple[str, ...] = ()) -> dl.Request:
    return dl.Request(name, prompt, scope)


def child(local: str, phase: str = "Pending", parent: str = "b-work", **kw: object) -> dl.Child:
    task = dl.child_task_name("b-work", local)
    return dl.Child(task=task, parent=parent, view=DepView(name=task, phase=phase, **kw))  # type: ignore[arg-type]


def test_two_requests_become_two_workers_owned_by_the_build_one_level_deeper():
    d = dl.decide(PARENT, [req("api", scope=("api/**",)), req("docs")], ON, {})
    assert [m["metadata"]["name"] for m in d.create] == ["b-work-api", "b-work-docs"]
    m = d.create[0]
    assert m["spec"]["role"] == "worker" and m["spec"]["description"] == "do it"
    assert m["spec"]["scope"] == ["api/**"] and "scope" not in d.create[1]["spec"]
    assert m["metadata"]["labels"][keys.PARENT] == "b-work"
    assert m["metadata"]["labels"][keys.BUILD] == "b" and m["metadata"]["labels"][keys.ITERATION] == "1"
    assert m["metadata"]["annotations"][keys.DELEGATION_DEPTH] == "1"
    assert m["metadata"]["ownerReferences"][0]["kind"] == "BuildRequest"
    assert [c["phase"] for c in d.children] == ["Pending", "Pending"]
    assert not any(c["done"] for c in d.children)


def test_an_existing_child_is_not_created_again_and_its_state_is_reported():
    children = {"b-work-api": child("api", "Succeeded", merging=True, has_commit=True, delivered=True)}
    d = dl.decide(PARENT, [req("api"), req("api")], ON, children)
    assert d.create == ()
    assert d.children == ({"name": "api", "task": "b-work-api", "phase": "Succeeded", "done": True,
                           "merged": True},)


@pytest.mark.parametrize(("view", "done"), [
    (DepView("x", "Running"), False),
    (DepView("x", "Backoff"), False),
    (DepView("x", "Succeeded", merging=True, has_commit=True), False),  # not merged yet
    (DepView("x", "Succeeded", merging=True, has_commit=True, delivered=True), True),
    (DepView("x", "Succeeded"), True),  # nothing to merge
    (DepView("x", "Failed", failure="boom"), True),
    (DepView("x", "Cancelled"), True),
    (DepView("x", "Succeeded", merging=True, has_commit=True, undeliverable=True), True),
])
def test_a_child_is_done_when_it_ended_and_its_branch_merged_or_never_will(view: DepView, done: bool):
    assert dl.child_done(view) is done


def test_a_failed_child_reports_why():
    d = dl.decide(PARENT, [req("api")], ON, {"b-work-api": child("api", "Failed", failure="tests failed")})
    assert d.children[0]["reason"] == "tests failed" and d.children[0]["done"]


@pytest.mark.parametrize(("limits", "parent", "field"), [
    (dl.Limits(enabled=False), PARENT, "spec.delegation.enabled"),
    (ON, dl.Parent(**{**PARENT.__dict__, "depth": 2}), "spec.delegation.maxDepth (2)"),
    (dl.Limits(**{**ON.__dict__, "total_tasks": 50}), PARENT, "spec.planner.maxTotalTasks (50)"),
    (dl.Limits(**{**ON.__dict__, "budget_spent": True}), PARENT, "spec.budget"),
    (ON, dl.Parent(**{**PARENT.__dict__, "role": "fixer"}), "only worker tasks"),
    (ON, dl.Parent(**{**PARENT.__dict__, "phase": "Succeeded"}), "not Running"),
])
def test_a_refusal_names_the_limit(limits: dl.Limits, parent: dl.Parent, field: str):
    d = dl.decide(parent, [req("api")], limits, {})
    assert d.create == ()
    assert d.children[0]["phase"] == "Refused" and d.children[0]["done"]
    assert field in d.children[0]["reason"]


def test_max_total_tasks_counts_the_children_made_in_the_same_decision():
    limits = dl.Limits(**{**ON.__dict__, "total_tasks": 49})
    d = dl.decide(PARENT, [req("a"), req("b")], limits, {})
    assert [m["metadata"]["name"] for m in d.create] == ["b-work-a"]
    assert d.children[1]["phase"] == "Refused" and "maxTotalTasks" in d.children[1]["reason"]


def test_max_children_counts_every_request_of_the_task():
    limits = dl.Limits(**{**ON.__dict__, "max_children": 1})
    d = dl.decide(PARENT, [req("a"), req("b")], limits, {"b-work-a": child("a")})
    assert d.create == ()
    assert "spec.delegation.maxChildren (1)" in d.children[1]["reason"]


def test_a_refusal_is_final_even_when_the_limit_no_longer_holds():
    previous = [{"name": "a", "phase": "Refused", "reason": "the budget is spent"}]
    d = dl.decide(PARENT, [req("a")], ON, {}, previous)
    assert d.create == () and d.children[0]["reason"] == "the budget is spent"


def test_a_name_taken_by_another_task_is_refused():
    d = dl.decide(PARENT, [req("a")], ON, {}, existing=frozenset({"b-work-a"}))
    assert d.create == () and "choose another name" in d.children[0]["reason"]
    other = {"b-work-a": child("a", parent="someone-else")}
    assert dl.decide(PARENT, [req("a")], ON, other).children[0]["phase"] == "Refused"


def test_the_decision_is_the_same_after_a_restart():
    once = dl.decide(PARENT, [req("a"), req("b")], ON, {})
    assert dl.decide(PARENT, [req("a"), req("b")], ON, {}) == once


def test_the_parent_merges_only_after_its_children():
    running = DepView("b-work-a", "Running")
    merged = DepView("b-work-b", "Succeeded", merging=True, has_commit=True, delivered=True)
    why = dl.merge_wait([running, merged])
    assert why is not None and "b-work-a" in why and "b-work-b" not in why
    assert dl.merge_wait([merged, DepView("c", "Failed")]) is None
    assert dl.merge_wait([]) is None


@pytest.mark.parametrize(("role", "settings", "depth", "may"), [
    ("worker", {"enabled": True}, 0, True),
    ("worker", {"enabled": True, "maxDepth": 1}, 1, False),
    ("worker", {}, 0, False),
    ("planner", {"enabled": True}, 0, False),
])
def test_who_gets_the_tools(role: str, settings: dict[str, object], depth: int, may: bool):
    assert dl.may_delegate(role, settings, depth) is may


def test_depth_of_reads_the_annotation():
    assert dl.depth_of({}) == 0
    assert dl.depth_of({keys.DELEGATION_DEPTH: "2"}) == 2
    assert dl.depth_of({keys.DELEGATION_DEPTH: "x"}) == 0


def test_limits_from_a_spec():
    spec = {"delegation": {"enabled": True, "maxDepth": 3, "maxChildren": 2}, "planner": {"maxTotalTasks": 9}}
    assert dl.Limits.from_spec(spec, total_tasks=4, budget_spent=False) == dl.Limits(True, 3, 2, 9, 4, False)


SCOPED = dl.Parent(name="b-work", namespace="ns", build="b", build_uid="u1", scope=("src/api",))
ENFORCED = dl.Limits(enabled=True, max_depth=2, max_children=5, max_total_tasks=50, total_tasks=3,
                     enforce_scope=True)


@pytest.mark.parametrize(("parent", "limits", "asked", "made"), [
    (SCOPED, ENFORCED, ("src/api/v1",), ["src/api/v1"]),   # within: as asked
    (SCOPED, ENFORCED, (), ["src/api"]),                   # none: the parent's
    (PARENT, ENFORCED, ("**",), ["**"]),                   # an unscoped parent's child is as free
    (SCOPED, ON, ("**",), ["**"]),                         # not enforced: a scheduling hint, as asked
    (SCOPED, ON, (), None),
])
def test_a_childs_scope_under_enforce_is_within_its_parents(parent, limits, asked, made):
    d = dl.decide(parent, [req("api", scope=asked)], limits, {})
    assert len(d.create) == 1 and d.create[0]["spec"].get("scope") == made


@pytest.mark.parametrize("asked", [("**",), ("src",), ("src/api", "docs/**")])
def test_a_child_wider_than_its_scoped_parent_is_refused_naming_the_scope(asked):
    d = dl.decide(SCOPED, [req("api", scope=asked)], ENFORCED, {})
    assert d.create == ()
    (refused,) = d.children
    assert refused["phase"] == dl.REFUSED and refused["done"] is True
    assert "the child's scope (api) [" in refused["reason"] and "spec.scope.enforce" in refused["reason"]
    assert "[src/api]" in refused["reason"]


def test_limits_read_spec_scope_enforce():
    spec = {"delegation": {"enabled": True}, "scope": {"enforce": True}}
    assert dl.Limits.from_spec(spec, total_tasks=0, budget_spent=False).enforce_scope is True
    assert dl.Limits.from_spec({"delegation": {"enabled": True}}, total_tasks=0, budget_spent=False).enforce_scope \
        is False
