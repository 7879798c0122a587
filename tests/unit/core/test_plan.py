from __future__ import annotations

import re

import pytest

from longshot.api.agenttask import AgentTaskSpec
from longshot.api.common import DNS_SUBDOMAIN
from longshot.api.handoff import PlannedTask
from longshot.core import plan

pytestmark = pytest.mark.unit

BUILD = plan.BuildRef(name="rest-api", namespace="ns", uid="uid-1")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def task(name: str, *, depends_on: list[str] | None = None, priority: int = 5, decompose: bool = False,
         scope: list[str] | None = None) -> PlannedTask:
    return PlannedTask(name=name, description=f"do {name}", depends_on=depends_on or [], priority=priority,
                       decompose=decompose, scope=scope or [])


def ctx(**kw) -> plan.PlanContext:
    return plan.PlanContext(build=kw.pop("build", BUILD), **kw)


def rejected(result) -> plan.Rejected:
    assert isinstance(result, plan.Rejected), result
    assert result.reason == "PlanRejected"
    return result


def test_empty_plan():
    assert rejected(plan.build_tasks([], ctx())).problem == plan.EMPTY


def test_too_many_tasks():
    r = rejected(plan.build_tasks([task(f"t{i}") for i in range(4)], ctx(max_tasks=3)))
    assert r.problem == plan.TOO_MANY and "maxTasks=3" in r.message


def test_plans_beyond_the_build_wide_task_cap_are_refused():
    # 498 tasks exist: a plan of 2 fits planner.maxTotalTasks=500 exactly, a plan of 3 does not
    assert isinstance(plan.build_tasks([task("a"), task("b")], ctx(total_tasks=498)), plan.Accepted)
    r = rejected(plan.build_tasks([task("a"), task("b"), task("c")], ctx(total_tasks=498)))
    assert r.problem == plan.TOO_MANY_TOTAL
    assert "has 498 tasks and the plan adds 3" in r.message and "maxTotalTasks=500" in r.message
    assert "return at most 2 tasks" in r.message
    # a subplanner's plan is refused the same way, naming the subplanner; a full build has no room left
    r = rejected(plan.build_tasks([task("x")], ctx(total_tasks=10, max_total_tasks=10, depth=1, parent="rest-api-big")))
    assert "(returned by rest-api-big)" in r.message and "no room is left" in r.message


def test_recursive_plans_stop_at_the_cap():
    """Every subplanner asks to decompose every task again: the build's task count stays within the cap."""
    cap, total, plans = 40, 1, [(None, 0)]  # the build's planner task exists
    while plans:
        parent, depth = plans.pop()
        result = plan.build_tasks([task(f"p{i}", decompose=True) for i in range(5)],
                                  ctx(max_total_tasks=cap, total_tasks=total, max_depth=5, depth=depth, parent=parent))
        if isinstance(result, plan.Accepted):
            total += len(result.manifests)
            plans += [(m["metadata"]["name"], depth + 1) for m in result.manifests if m["spec"]["role"] == "planner"]
    assert 35 < total <= cap


def test_duplicate_names():
    r = rejected(plan.build_tasks([task("a"), task("a")], ctx()))
    assert r.problem == plan.DUPLICATE and "'a'" in r.message


def test_unknown_dependency():
    r = rejected(plan.build_tasks([task("a", depends_on=["ghost"])], ctx()))
    assert r.problem == plan.UNKNOWN_DEPENDENCY and "ghost" in r.message


def test_self_dependency():
    assert rejected(plan.build_tasks([task("a", depends_on=["a"])], ctx())).problem == plan.SELF_DEPENDENCY


def test_cycle_reports_the_path():
    tasks = [task("a", depends_on=["c"]), task("b", depends_on=["a"]), task("c", depends_on=["b"]),
             task("d")]
    r = rejected(plan.build_tasks(tasks, ctx()))
    assert r.problem == plan.CYCLE
    assert "a -> c -> b -> a" in r.message


def test_plan_deeper_than_max_depth():
    r = rejected(plan.build_tasks([task("a")], ctx(max_depth=1, depth=2, parent="rest-api-x")))
    assert r.problem == plan.TOO_DEEP


def test_name_collision_with_existing_task():
    r = rejected(plan.build_tasks([task("models")], ctx(existing=frozenset({"rest-api-models"}))))
    assert r.problem == plan.NAME_COLLISION


@pytest.mark.parametrize("name", ["planner", "planner-2", "planner-i2", "planner-i3-1"])
def test_the_planners_names_are_reserved(name):
    r = rejected(plan.build_tasks([task(name)], ctx()))
    assert r.problem == plan.RESERVED and name in r.message


def test_accepted_manifests():
    tasks = [task("models", scope=["src/models/**"], priority=8), task("api", depends_on=["models"])]
    result = plan.build_tasks(tasks, ctx())
    assert isinstance(result, plan.Accepted)
    first, second = result.manifests
    assert first["metadata"]["name"] == "rest-api-models"
    assert second["spec"]["dependsOn"] == ["rest-api-models"]
    assert first["spec"]["priority"] == 8 and first["spec"]["scope"] == ["src/models/**"]
    assert first["metadata"]["ownerReferences"] == [{
        "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest", "name": "rest-api", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True}]
    assert first["metadata"]["labels"] == {
        "app.kubernetes.io/name": "longshot", "app.kubernetes.io/instance": "rest-api",
        "app.kubernetes.io/component": "agent-task", "app.kubernetes.io/managed-by": "longshot-operator",
        "longshot.dev/build": "rest-api", "longshot.dev/role": "worker", "longshot.dev/iteration": "1"}
    for m in result.manifests:
        AgentTaskSpec.model_validate(m["spec"])  # the API server would accept it


def test_two_hundred_tasks_with_long_build_name_are_valid_and_deterministic():
    build = plan.BuildRef(name="b" * 240, namespace="ns", uid="u")
    tasks = [task(f"task-{i:03d}-" + "x" * 30, depends_on=[f"task-{i - 1:03d}-" + "x" * 30] if i else [])
             for i in range(200)]
    a = plan.build_tasks(tasks, ctx(build=build, max_tasks=200))
    b = plan.build_tasks(tasks, ctx(build=build, max_tasks=200))
    assert isinstance(a, plan.Accepted) and a == b
    names = [m["metadata"]["name"] for m in a.manifests]
    assert len(set(names)) == 200
    for m in a.manifests:
        assert len(m["metadata"]["name"]) <= 63 and re.match(DNS_SUBDOMAIN, m["metadata"]["name"])
        assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in m["metadata"]["labels"].values())
    assert a.manifests[5]["spec"]["dependsOn"] == [names[4]]


def test_decompose_becomes_planner_when_depth_allows_else_worker():
    result = plan.build_tasks([task("big", decompose=True)], ctx(max_depth=1))
    assert isinstance(result, plan.Accepted)
    assert result.manifests[0]["spec"]["role"] == "planner" and not result.downgraded
    sub = plan.build_tasks([task("part", decompose=True)], ctx(max_depth=1, depth=1, parent="rest-api-big"))
    assert isinstance(sub, plan.Accepted)
    spec = sub.manifests[0]["spec"]
    assert spec["role"] == "worker" and sub.downgraded == ("part",)
    assert spec["parentTask"] == "rest-api-big" and spec["depth"] == 1
    assert sub.manifests[0]["metadata"]["name"] == "rest-api-big-part"
    AgentTaskSpec.model_validate(spec)


def test_context_for_subplanner():
    build = {"metadata": {"name": "rest-api", "namespace": "ns", "uid": "u"},
             "spec": {"planner": {"maxTasks": 7, "maxDepth": 3}}}
    top = plan.context_for(build, {"metadata": {"name": "rest-api-planner"}, "spec": {"depth": 0}})
    assert top.parent is None and top.depth == 0 and top.max_tasks == 7
    sub_task = {"metadata": {"name": "rest-api-big", "annotations": {plan.PLAN_NAME_ANNOTATION: "big"}},
                "spec": {"depth": 0}}
    sub = plan.context_for(build, sub_task)
    assert sub.parent == "rest-api-big" and sub.depth == 1 and sub.max_depth == 3
    assert sub.max_total_tasks == 500 and sub.total_tasks == 0  # the default cap
    capped = plan.context_for({**build, "spec": {"planner": {"maxTotalTasks": 20}}}, sub_task, total_tasks=12)
    assert (capped.max_total_tasks, capped.total_tasks, capped.depth) == (20, 12, 1)


def test_planner_task_manifest():
    m = plan.planner_task_manifest(BUILD, "build it", replan=2, feedback="cycle a -> a")
    assert m["metadata"]["name"] == "rest-api-planner-2"
    assert m["metadata"]["labels"]["longshot.dev/replan"] == "2"
    assert "cycle a -> a" in m["spec"]["description"]
    AgentTaskSpec.model_validate(m["spec"])


def test_planner_names_per_iteration_and_replan():
    assert [plan.planner_task_name("b", r, i) for r, i in ((0, 1), (1, 1), (0, 2), (2, 3))] == [
        "b-planner", "b-planner-1", "b-planner-i2", "b-planner-i3-2"]
    m = plan.planner_task_manifest(plan.BuildRef("b", "ns", "u"), "r", iteration=2)
    assert m["metadata"]["labels"]["longshot.dev/iteration"] == "2"
    assert "longshot.dev/replan" not in m["metadata"]["labels"]
    assert (plan.iteration_of(m["metadata"]), plan.replan_of(m["metadata"])) == (2, 0)


def test_label_numbers_someone_edited_to_garbage_read_as_zero():
    """Labels are writable by anyone who may edit the task: a bad value must not break the build's reconcile."""
    for bad in ("x", "-3", "", "1e9x"):
        meta = {"labels": {"longshot.dev/iteration": bad, "longshot.dev/replan": bad}}
        assert (plan.iteration_of(meta), plan.replan_of(meta)) == (0, 0)
    assert plan.replan_of({"labels": {"longshot.dev/replan": "4"}}) == 4


def test_a_subplan_keeps_its_planners_iteration():
    subplanner = {"metadata": {"name": "rest-api-big", "labels": {"longshot.dev/iteration": "2"},
                               "annotations": {"longshot.dev/plan-name": "big"}}, "spec": {"depth": 0}}
    c = plan.context_for({"metadata": {"name": "rest-api", "namespace": "ns", "uid": "u"}}, subplanner)
    assert (c.iteration, c.parent, c.depth) == (2, "rest-api-big", 1)
    result = plan.build_tasks([task("part")], c)
    assert isinstance(result, plan.Accepted)
    assert result.manifests[0]["metadata"]["labels"]["longshot.dev/iteration"] == "2"
