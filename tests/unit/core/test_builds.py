from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.api import conditions
from longshot.api.handoff import PlannedTask
from longshot.core import builds, plan
from longshot.core.builds import (
    BudgetChanged,
    BuildState,
    Created,
    CreatePlannerTask,
    CreateTasks,
    Deleted,
    InvalidTransition,
    Killswitch,
    PlanInvalid,
    PlannerFinished,
    SuspendChanged,
    TaskCounts,
    TaskCountsChanged,
)
from longshot.core.effects import SetCondition

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)
REF = plan.BuildRef("app", "ns", "uid")


def build(phase: str = "Pending", **kw: Any) -> BuildState:
    return BuildState(ref=REF, request="build it", phase=phase, **kw)  # type: ignore[arg-type]


def decide(s: BuildState, event: Any):
    new, effects = builds.decide(s, event, now=NOW)
    return new, checked(effects)




def planned(*names: str, deps: dict[str, list[str]] | None = None) -> list[PlannedTask]:
    return [PlannedTask(name=n, description=n, depends_on=(deps or {}).get(n, [])) for n in names]


def top() -> plan.PlanContext:
    return plan.PlanContext(build=REF)


def counts(**kw: int) -> TaskCounts:
    return TaskCounts(total=sum(kw.values()), **kw)


def test_created_makes_the_planner_task():
    new, effects = decide(build(), Created())
    assert new.phase == "Planning" and new.planner_task == "app-planner"
    (p,) = of(effects, CreatePlannerTask)
    assert p.manifest["spec"]["role"] == "planner"
    assert cond(effects, "Finalized").status == "Unknown"
    assert cond(effects, "Ready").status == "False"
    assert decide(new, Created()) == (new, [])  # restart: nothing again


def test_plan_accepted_creates_tasks():
    s = build("Planning", planner_task="app-planner")
    new, effects = decide(s, PlannerFinished(planned("a", "b", deps={"b": ["a"]}), top()))
    assert new.phase == "Working"
    (ct,) = of(effects, CreateTasks)
    assert [m["metadata"]["name"] for m in ct.manifests] == ["app-a", "app-b"]
    assert cond(effects, "Planned") == SetCondition("Planned", "True", "PlanAccepted", "2 tasks planned")
    assert decide(new, PlannerFinished(planned("a"), top())) == (new, [])  # delivered twice


def test_plan_rejected_replans_then_fails():
    s = build("Planning", planner_task="app-planner", max_replans=1)
    new, effects = decide(s, PlannerFinished(planned("a", deps={"a": ["a"]}), top()))
    assert new.phase == "Planning" and new.replans == 1 and new.planner_task == "app-planner-1"
    (p,) = of(effects, CreatePlannerTask)
    assert "depends on itself" in p.manifest["spec"]["description"]
    assert cond(effects, "Planned").reason == "PlanRejected"
    new, effects = decide(new, PlanInvalid("the handoff is not JSON"))
    assert new.phase == "Failed" and of(effects, CreatePlannerTask) == []
    assert cond(effects, "Planned") .status == "False"
    assert cond(effects, "Ready").status == "True"


def test_plan_events_before_planning_are_impossible():
    with pytest.raises(InvalidTransition):
        decide(build(), PlannerFinished(planned("a"), top()))
    with pytest.raises(InvalidTransition):
        decide(build(), PlanInvalid("x"))


def test_subplan_creates_tasks_while_working():
    ctx = plan.PlanContext(build=REF, depth=1, parent="app-big")
    new, effects = decide(build("Working"), PlannerFinished(planned("x"), ctx))
    assert new.phase == "Working"
    assert of(effects, CreateTasks)[0].manifests[0]["spec"]["parentTask"] == "app-big"


def test_counts_and_completion_without_finalization():
    s = build("Working", finalization_enabled=False)
    new, effects = decide(s, TaskCountsChanged(counts(running=1, succeeded=1)))
    assert new.counts.progress == "1/2" and effects == []
    new, effects = decide(new, TaskCountsChanged(counts(succeeded=2)))
    assert new.phase == "Succeeded" and new.to_status()["tasks"]["progress"] == "2/2"
    assert cond(effects, "Ready") == SetCondition("Ready", "True", "Completed", cond(effects, "Ready").message)
    assert decide(new, TaskCountsChanged(counts(succeeded=2)))[1] == []


def test_failed_tasks_fail_the_build_and_a_retry_resumes_it():
    s = build("Working", finalization_enabled=False)
    new, effects = decide(s, TaskCountsChanged(counts(succeeded=1, failed=1)))
    assert new.phase == "Failed" and cond(effects, "Ready").reason == "Failed"
    new, effects = decide(new, TaskCountsChanged(counts(succeeded=1, pending=1)))
    assert new.phase == "Working" and cond(effects, "Ready").status == "False"


def test_finalization_enabled_waits_with_finalized_unknown():
    new, effects = decide(build("Working"), TaskCountsChanged(counts(succeeded=3)))
    assert new.phase == "Finalizing" and cond(effects, "Ready").status == "False"
    assert not [e for e in effects if isinstance(e, SetCondition) and e.type == "Finalized"]


def test_suspend_overlay():
    s = build("Working")
    new, effects = decide(s, SuspendChanged(True))
    assert new.suspended and new.display_phase == "Suspended" and new.phase == "Working"
    assert cond(effects, "Suspended").status == "True"
    assert cond(effects, "Progressing").reason == "Suspended"
    assert decide(new, SuspendChanged(True)) == (new, [])
    back, effects = decide(new, SuspendChanged(False))
    assert back.display_phase == "Working" and cond(effects, "Progressing").status == "True"


def test_budget_and_killswitch_conditions():
    new, effects = decide(build("Working"), BudgetChanged(True))
    assert cond(effects, "BudgetExceeded").status == "True"
    new, effects = decide(new, Killswitch(True))
    assert cond(effects, "Halted").status == "True" and new.display_phase == "Halted"


def test_deleted():
    new, effects = decide(build("Working"), Deleted())
    assert new.deleted and effects == []


def test_phase_from_conditions_rebuilds_state():
    conds, _ = conditions.set_condition([], "Planned", "True", "PlanAccepted", now=NOW)
    obj = {"metadata": {"name": "app", "namespace": "ns", "uid": "uid"},
           "spec": {"request": "build it", "finalization": {"enabled": False}},
           "status": {"conditions": conds, "plannerTask": "app-planner", "tasks": {"total": 2, "running": 2}}}
    s = BuildState.from_resource(obj)
    assert s == replace(build("Working", planner_task="app-planner", finalization_enabled=False),
                        counts=TaskCounts(total=2, running=2))


def test_counts_from_phases():
    c = TaskCounts.from_phases(["Pending", "Backoff", "Running", "Succeeded", "Failed", "Cancelled", None])
    assert c.to_wire() == {"total": 7, "pending": 3, "running": 1, "succeeded": 1, "failed": 1,
                           "cancelled": 1, "progress": "3/7"}
