from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.api import conditions, objects
from longshot.api.handoff import PlannedTask
from longshot.core import builds, plan
from longshot.core.builds import (
    BudgetChanged,
    BuildState,
    ConfigurationChecked,
    Created,
    CreatePlannerTask,
    CreateTasks,
    Deleted,
    FinalizationStarted,
    Finished,
    InvalidTransition,
    IssuesChanged,
    Killswitch,
    PlanInvalid,
    PlannerFinished,
    SetCompletion,
    SuspendChanged,
    TaskCounts,
    TaskCountsChanged,
    TaskIssue,
)
from longshot.core.effects import EmitEvent, SetCondition

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)
REF = plan.BuildRef(name="b", namespace="ns", uid="u1")


def build(phase: str = "Pending", **kw: Any) -> BuildState:
    return BuildState(ref=REF, request="do it", phase=phase, **kw)  # type: ignore[arg-type]


def decide(s: BuildState, event: Any):
    new, effects = builds.decide(s, event, now=NOW)
    return new, checked(effects)


def planned(*names: str, deps: dict[str, list[str]] | None = None) -> list[PlannedTask]:
    return [PlannedTask(name=n, description=f"do {n}", depends_on=(deps or {}).get(n, [])) for n in names]


def top() -> plan.PlanContext:
    return plan.PlanContext(build=REF)


def counts(**kw: int) -> TaskCounts:
    return TaskCounts(**kw)


def summary(effects: list[Any]) -> dict[str, tuple[str, str]]:
    """The last value of each condition type set by ``effects``."""
    out: dict[str, tuple[str, str]] = {}
    for e in effects:
        if isinstance(e, SetCondition):
            out[e.type] = (e.status, e.reason)
    return out


def test_created_makes_the_planner_task_and_reconciles():
    new, effects = decide(build(), Created())
    assert new.phase == "Planning" and new.planner_task == "b-planner"
    (p,) = of(effects, CreatePlannerTask)
    assert p.manifest["spec"]["role"] == "planner"
    s = summary(effects)
    assert s["Ready"] == ("False", "Planning") and s["Reconciling"] == ("True", "Planning")
    assert s["Stalled"] == ("False", "NotStalled") and s["Finalized"] == ("Unknown", "Pending")


def test_plan_accepted_creates_tasks_and_ready_message_follows_the_phase():
    new, effects = decide(build("Planning", planner_task="b-planner"), PlannerFinished(planned("a", "b"), top()))
    assert new.phase == "Working"
    assert [m["metadata"]["name"] for m in of(effects, CreateTasks)[0].manifests] == ["b-a", "b-b"]
    assert cond(effects, "Planned").status == "True"
    assert cond(effects, "Ready").reason == "Working"
    assert "planned" not in cond(effects, "Ready").message


def test_plan_rejected_replans_then_fails_stalled_and_finalized_false():
    s = build("Planning", planner_task="b-planner", max_replans=1)
    s, effects = decide(s, PlanInvalid("no JSON"))
    assert s.phase == "Planning" and s.replans == 1 and of(effects, CreatePlannerTask)
    s, effects = decide(s, PlanInvalid("still no JSON"))
    assert s.phase == "Failed"
    got = summary(effects)
    assert got["Ready"] == ("False", "PlanRejected") and got["Stalled"] == ("True", "PlanRejected")
    assert got["Finalized"] == ("False", "PlanRejected") and got["Reconciling"][0] == "False"
    assert SetCompletion(True) in effects


def test_plan_events_before_planning_are_impossible():
    with pytest.raises(InvalidTransition):
        builds.decide(build(), PlanInvalid("x"), now=NOW)
    with pytest.raises(InvalidTransition):
        builds.decide(build("Working"), Finished(True, "Passed", ""), now=NOW)
    with pytest.raises(InvalidTransition):
        builds.decide(build("Working"), FinalizationStarted(1, 3), now=NOW)


def test_subplan_creates_tasks_while_working():
    ctx = replace(top(), parent="b-a", depth=1)
    _, effects = decide(build("Working"), PlannerFinished(planned("x"), ctx))
    assert of(effects, CreateTasks)[0].manifests[0]["spec"]["parentTask"] == "b-a"


def test_all_terminal_goes_to_finalizing_or_merging():
    s, _ = decide(build("Working"), TaskCountsChanged(counts(total=2, succeeded=2)))
    assert s.phase == "Finalizing"
    s, effects = decide(build("Working", finalization_enabled=False), TaskCountsChanged(counts(total=2, succeeded=2)))
    assert s.phase == "Merging" and summary(effects)["Reconciling"] == ("True", "Merging")


def test_a_stopped_task_keeps_the_build_working_and_stalled():
    """A task waiting on a person (configuration) is not terminal: the build waits, Stalled with the reason."""
    c = counts(total=2, succeeded=1, failed=1, stopped=1)
    assert not c.all_terminal
    s, _ = decide(build("Working"), TaskCountsChanged(c))
    issue = TaskIssue("api", "stopped", "base branch 'release' does not exist")
    s, effects = decide(s, IssuesChanged((issue,)))
    got = summary(effects)
    assert s.phase == "Working"
    assert got["Ready"] == ("False", "TaskBlocked") and got["Stalled"] == ("True", "TaskBlocked")
    assert cond(effects, "Ready").message == "task api: base branch 'release' does not exist"
    assert got["Reconciling"][0] == "False"  # nothing else can run


def test_retrying_tasks_show_in_the_ready_message_without_stalling():
    _s, effects = decide(build("Working", counts=counts(total=1, pending=1)),
                        IssuesChanged((TaskIssue("x", "retrying", "attempt 1 failed (Infrastructure): no route"),)))
    got = summary(effects)
    assert got["Ready"] == ("False", "TaskRetrying") and got["Stalled"][0] == "False"
    assert "task x: attempt 1 failed" in cond(effects, "Ready").message


def test_finished_passed_and_failed():
    s, effects = decide(build("Finalizing"), Finished(True, "Passed", "all good", 1))
    got = summary(effects)
    assert s.phase == "Succeeded" and got["Ready"] == ("True", "Succeeded") and got["Finalized"] == ("True", "Passed")
    assert got["Stalled"] == ("False", "NotStalled") and got["Reconciling"] == ("False", "Finished")
    s, effects = decide(build("Finalizing"), Finished(False, "TasksFailed", "a failed", 1))
    got = summary(effects)
    assert s.phase == "Failed" and got["Ready"] == ("False", "TasksFailed")
    assert got["Stalled"] == ("True", "TasksFailed") and got["Finalized"] == ("False", "TasksFailed")


def test_finished_without_finalization_leaves_finalized_alone():
    s, effects = decide(build("Merging", finalization_enabled=False), Finished(False, "TasksFailed", "a failed"))
    assert s.phase == "Failed" and "Finalized" not in summary(effects)
    assert summary(effects)["Stalled"] == ("True", "TasksFailed")


def test_a_rejected_plan_is_not_reopened_by_the_failed_planner_s_attempts_counted_after_it():
    """The planner's last attempt fails and the build sees both in one reconcile: ``PlanInvalid`` ends it, then the
    counts (one more attempt than its status had) must not reopen it as a task that ran again: it went on to a
    second iteration and ended ``Succeeded`` (``test_status_live.py`` on a quick machine)."""
    s = build("Planning", planner_task="b-planner", max_replans=0, counts=counts(total=1, running=1, attempts=2))
    s, _ = decide(s, PlanInvalid("the dependencies have a cycle: a -> b -> a"))
    assert s.phase == "Failed"
    s, effects = decide(s, TaskCountsChanged(counts(total=1, failed=1, attempts=3)))
    assert s.phase == "Failed" and s.outcome is not None and s.outcome[0] == "PlanRejected"
    assert SetCompletion(False) not in effects and "Resumed" not in [getattr(e, "reason", "") for e in effects]


def test_a_retried_task_reopens_a_finished_build_and_clears_completion():
    s = build("Failed", counts=counts(total=1, failed=1), outcome=("TasksFailed", "x"))
    s, effects = decide(s, TaskCountsChanged(counts(total=1, pending=1)))
    assert s.phase == "Working" and SetCompletion(False) in effects
    assert summary(effects)["Ready"] == ("False", "Working") and summary(effects)["Stalled"][0] == "False"


def test_a_task_that_ran_again_unseen_reopens_a_finished_build_and_finishes_it_again():
    """A relaunch of a finished build's task can start and end between two of the build's reconciles (coalesced,
    one a second at most): the phases alone never show it running, the attempts it started do."""
    done = build("Succeeded", counts=counts(total=2, succeeded=2, attempts=2), outcome=("Succeeded", "x"))
    s, effects = decide(done, TaskCountsChanged(counts(total=2, succeeded=2, attempts=3)))
    assert s.phase == "Finalizing" and s.outcome is None and s.counts.attempts == 3
    assert SetCompletion(False) in effects
    assert [e.reason for e in effects if isinstance(e, EmitEvent)] == ["Resumed", "TasksFinished"]
    # without finalization it merges, then finishes
    s, _ = decide(replace(done, finalization_enabled=False), TaskCountsChanged(counts(total=2, succeeded=2,
                                                                                      attempts=3)))
    assert s.phase == "Merging"
    # nothing ran again: the finished build stays as it is; nor does one whose status predates the count
    for before, now in ((2, 2), (None, 5), (2, None)):
        old = replace(done, counts=counts(total=2, succeeded=2, attempts=before))  # type: ignore[arg-type]
        s, effects = decide(old, TaskCountsChanged(counts(total=2, succeeded=2, attempts=now)))  # type: ignore[arg-type]
        assert s.phase == "Succeeded" and SetCompletion(False) not in effects, (before, now)
        assert not [e for e in effects if isinstance(e, EmitEvent)], (before, now)
    # the count is kept in status.tasks, and read back
    wire = counts(total=2, succeeded=2, attempts=3).to_wire()
    assert wire["attempts"] == 3 and TaskCounts.from_wire(wire).attempts == 3
    assert "attempts" not in counts(total=1).to_wire() and TaskCounts.from_wire({"total": 1}).attempts is None


def test_suspend_overlay():
    s, effects = decide(build("Working"), SuspendChanged(True))
    got = summary(effects)
    assert s.display_phase == "Suspended" and got["Suspended"] == ("True", "Suspended")
    assert got["Ready"] == ("False", "Suspended") and got["Reconciling"] == ("False", "Suspended")
    assert got["Stalled"][0] == "False"
    s, effects = decide(s, SuspendChanged(False))
    assert s.display_phase == "Working" and summary(effects)["Reconciling"] == ("True", "Working")


def test_budget_and_killswitch_and_configuration():
    s, effects = decide(build("Working"), BudgetChanged(True))
    assert summary(effects)["Stalled"] == ("True", "BudgetExceeded")
    s, effects = decide(build("Working"), Killswitch(True))
    assert s.display_phase == "Halted" and summary(effects)["Halted"] == ("True", "Killswitch")
    s, effects = decide(build("Planning"), ConfigurationChecked("spec.repository.credentialsSecret: Secret "
                                                               "'git' does not exist"))
    got = summary(effects)
    assert got["Stalled"] == ("True", "Configuration") and got["Ready"] == ("False", "Configuration")
    assert "credentialsSecret" in cond(effects, "Ready").message
    s, effects = decide(s, ConfigurationChecked(None))
    assert summary(effects)["Stalled"] == ("False", "NotStalled")


def test_a_dispatch_failure_stalls_only_that_build_naming_the_error_class_and_clears():
    s, effects = decide(build("Working"), builds.DispatchChecked("RecursionError"))
    got = summary(effects)
    assert got["Stalled"] == ("True", "DispatchFailed") and got["Ready"] == ("False", "DispatchFailed")
    message = cond(effects, "Stalled").message
    assert "(RecursionError)" in message and "Traceback" not in message and "every other build" in message
    assert [e.reason for e in effects if isinstance(e, EmitEvent)] == ["DispatchFailed"]
    status = [{"type": "Stalled", "status": "True", "reason": "DispatchFailed", "message": message}]
    assert builds._dispatch_error(status) == "RecursionError"  # read back after a restart: no second Event
    _, effects = decide(s, builds.DispatchChecked("RecursionError"))
    assert not [e for e in effects if isinstance(e, EmitEvent)]
    s, effects = decide(s, builds.DispatchChecked(None))
    assert summary(effects)["Stalled"] == ("False", "NotStalled") and s.dispatch_error is None


def test_deleted():
    s, _ = decide(build("Working"), Deleted())
    assert s.deleted


def test_every_condition_carries_a_documented_reason():
    for phase in builds.TRANSITIONS:
        assert phase[0] in ("Pending", "Planning", "Working", "Merging", "Finalizing", "Succeeded", "Failed")
    for s in (build("Working"), build("Finalizing"), build("Merging"), build("Failed", outcome=("TestsFailed", "x"))):
        for e in builds.summary(s):
            assert e.reason in conditions.REASONS


def _obj(conds: list[dict[str, Any]], max_iterations: int = 1, **status: Any) -> objects.BuildRequest:
    return objects.parse({"metadata": {"name": "b", "namespace": "ns", "uid": "u"},
                          "spec": {"request": "r", "repository": {"url": "https://h/r.git"},
                                   "planner": {"maxIterations": max_iterations}},
                          "status": {"conditions": conds, **status}}, objects.BuildRequest)


def c_(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": ""}


def test_phase_rebuilt_from_status_after_a_restart():
    assert BuildState.from_build(_obj([])).phase == "Pending"
    assert BuildState.from_build(_obj([], plannerTask="b-planner")).phase == "Planning"
    assert BuildState.from_build(_obj([c_("Planned", "True", "PlanAccepted")],
                                      tasks={"total": 2, "running": 1})).phase == "Working"
    assert BuildState.from_build(_obj([c_("Planned", "True", "PlanAccepted")],
                                      tasks={"total": 2, "succeeded": 2})).phase == "Finalizing"
    # with iterations left, a finished iteration is still Working (the next one starts once the queue drained)
    assert BuildState.from_build(_obj([c_("Planned", "True", "PlanAccepted")], max_iterations=3, iteration=1,
                                      tasks={"total": 2, "succeeded": 2})).phase == "Working"
    assert BuildState.from_build(_obj([c_("Planned", "True", "PlanAccepted")], max_iterations=3, iteration=3,
                                      tasks={"total": 2, "succeeded": 2})).phase == "Finalizing"
    assert BuildState.from_build(_obj([c_("Planned", "True", "RequestMet")], max_iterations=3, iteration=2,
                                      tasks={"total": 2, "succeeded": 2})).phase == "Finalizing"
    assert BuildState.from_build(_obj([c_("Planned", "Unknown", "NextIteration")], max_iterations=3,
                                      iteration=2, tasks={"total": 2, "succeeded": 2})).phase == "Planning"
    assert BuildState.from_build(_obj([c_("Ready", "True", "Succeeded")])).phase == "Succeeded"
    assert BuildState.from_build(_obj([c_("Stalled", "True", "TestsFailed")])).phase == "Failed"
    # a stall that waits on a person is not a failure
    assert BuildState.from_build(_obj([c_("Planned", "True", "PlanAccepted"), c_("Stalled", "True", "TaskBlocked")],
                                      tasks={"total": 1, "failed": 1, "stopped": 1})).phase == "Working"


def test_counts_from_phases():
    c = TaskCounts.from_phases(["Pending", "Running", "Succeeded", "Backoff", None, "Failed"], blocked=1)
    assert c == TaskCounts(total=6, pending=3, running=1, succeeded=1, failed=1, blocked=1)
    assert c.progress == "2/6" and not c.all_terminal
    assert TaskCounts(total=2, succeeded=1, pending=1, blocked=1).all_terminal


# --- issue 14: iterations, intake, people in the loop -------------------------------------------------


def iterating(phase: str = "Working", iteration: int = 1, max_iterations: int = 3, **kw: Any) -> BuildState:
    return build(phase, iteration=iteration, max_iterations=max_iterations, **kw)


def test_an_iteration_that_ended_waits_for_the_queue_then_plans_again():
    s = iterating(planner_task="b-planner")
    # every task ended: the build keeps working until the shell says the merge queue drained
    s, effects = decide(s, TaskCountsChanged(counts(total=2, succeeded=2)))
    assert s.phase == "Working" and not of(effects, CreatePlannerTask)
    s, effects = decide(s, builds.IterationEnded())
    assert s.phase == "Planning" and s.iteration == 2 and s.planner_task == "b-planner-i2"
    (p,) = of(effects, CreatePlannerTask)
    assert p.manifest["metadata"]["labels"]["longshot.dev/iteration"] == "2"
    assert cond(effects, "Planned").status == "Unknown" and cond(effects, "Planned").reason == "NextIteration"
    assert "iteration 2 of 3" in cond(effects, "Planned").message
    assert of(effects, builds.StartEarlySweep) == [builds.StartEarlySweep(2)]  # the final sweep starts beside it
    assert s.to_status()["iteration"] == 2
    # the next plan is taken in with the iteration's number
    s, effects = decide(s, PlannerFinished(planned("c"), replace(top(), iteration=2)))
    assert s.phase == "Working" and "iteration 2 of 3: 1 tasks planned" in cond(effects, "Planned").message
    assert of(effects, CreateTasks)[0].manifests[0]["metadata"]["labels"]["longshot.dev/iteration"] == "2"


def test_the_planners_done_or_an_empty_later_plan_ends_planning_and_finalization_starts():
    s = iterating("Planning", iteration=2, planner_task="b-planner-i2", counts=counts(total=3, succeeded=3))
    for event in (PlannerFinished([], replace(top(), iteration=2), done=True),
                  PlannerFinished([], replace(top(), iteration=2))):
        new, effects = decide(s, event)
        assert new.request_met and new.planning_done and not of(effects, CreateTasks)
        assert (cond(effects, "Planned").status, cond(effects, "Planned").reason) == ("True", "RequestMet")
        new, _ = decide(new, TaskCountsChanged(counts(total=3, succeeded=3)))
        assert new.phase == "Finalizing"
        assert decide(new, builds.IterationEnded())[0] == new  # too late to iterate


def test_an_empty_first_plan_is_still_rejected_but_done_is_accepted():
    s = iterating("Planning", planner_task="b-planner")
    new, effects = decide(s, PlannerFinished([], top()))
    assert new.replans == 1 and of(effects, CreatePlannerTask)  # re-planned
    new, effects = decide(s, PlannerFinished([], top(), done=True))
    assert new.request_met and cond(effects, "Planned").reason == "RequestMet"
    # nothing to do at all: finalization (the final sweep) decides
    new, _ = decide(new, TaskCountsChanged(counts()))
    assert new.phase == "Finalizing"


def test_max_iterations_bounds_planning():
    s = iterating(iteration=3, max_iterations=3)
    assert s.planning_done
    new, _ = decide(s, TaskCountsChanged(counts(total=1, succeeded=1)))
    assert new.phase == "Finalizing"
    assert decide(s, builds.IterationEnded()) == (s, builds.summary(s))


def test_a_later_iterations_replans_keep_its_number():
    s = iterating("Planning", iteration=2, planner_task="b-planner-i2")
    new, effects = decide(s, PlanInvalid("bad"))
    (p,) = of(effects, CreatePlannerTask)
    assert p.manifest["metadata"]["name"] == "b-planner-i2-1" and new.iteration == 2


def test_a_roadmap_build_plans_without_a_planner_task():
    s = build(source="roadmap", max_iterations=2)
    new, effects = decide(s, Created())
    assert new.phase == "Planning" and new.iteration == 1 and new.planner_task is None
    assert not of(effects, CreatePlannerTask) and "roadmap" in cond(effects, "Planned").message
    new, effects = decide(new, builds.IntakeChecked(None))
    new, effects = decide(new, PlannerFinished(planned("a"), top()))
    assert new.phase == "Working"
    new, _ = decide(new, TaskCountsChanged(counts(total=1, succeeded=1)))
    new, effects = decide(new, builds.IterationEnded())
    assert new.phase == "Planning" and new.iteration == 2 and not of(effects, CreatePlannerTask)
    # everything checked off: nothing left, the request is met
    new, effects = decide(new, PlannerFinished([], replace(top(), iteration=2)))
    assert new.request_met and "the roadmap file has nothing left" in cond(effects, "Planned").message
    # an invalid roadmap is the source's fault: no re-plan, the build fails and says so
    bad = build("Planning", source="roadmap", iteration=1)
    new, effects = decide(bad, PlannerFinished(planned("a", deps={"a": ["x"]}), top()))
    assert new.phase == "Failed" and not of(effects, CreatePlannerTask)
    assert "roadmap file are not a valid plan" in cond(effects, "Planned").message


@pytest.mark.parametrize("fc,reason,stalled", [("Auth", "AuthFailed", "True"),
                                               ("Configuration", "Configuration", "True"),
                                               ("RateLimited", "RateLimited", "False"),
                                               ("Infrastructure", "IntakeFailed", "False")])
def test_intake_failures_map_to_conditions(fc, reason, stalled):
    s = build("Planning", source="issues", iteration=1)
    new, effects = decide(s, builds.IntakeChecked((fc, f"github issue listing of o/r: {fc}")))
    got = summary(effects)
    assert got["Ready"] == ("False", reason)
    assert got["Stalled"] == (stalled, reason if stalled == "True" else "NotStalled")
    assert [e.reason for e in of(effects, EmitEvent)] == ["RateLimited" if fc == "RateLimited" else "IntakeFailed"]
    new, effects = decide(new, builds.IntakeChecked(None))
    assert summary(effects)["Ready"][1] == "Planning"
    assert decide(new, builds.IntakeChecked(None))[1] == builds.summary(new)  # no repeated Event


def test_a_question_names_the_task_and_stalls_only_when_nothing_else_can_run():
    ask = TaskIssue("b-api", "awaiting", "Which port?")
    busy = build("Working", counts=counts(total=3, running=1, pending=1, succeeded=1))
    _, effects = decide(busy, IssuesChanged((ask,)))
    got = summary(effects)
    assert got["Ready"] == ("False", "AwaitingInput") and got["Stalled"] == ("False", "NotStalled")
    assert "task b-api asked: Which port?" in cond(effects, "Ready").message
    assert got["Reconciling"][0] == "True"
    idle = build("Working", counts=counts(total=2, pending=1, succeeded=1))
    _, effects = decide(idle, IssuesChanged((ask,)))
    got = summary(effects)
    # a wait on a person is not a failure: Stalled=False (kstatus InProgress), Ready=False names it (Argo CD Suspended)
    assert got["Stalled"] == ("False", "AwaitingInput") and got["Reconciling"] == ("False", "AwaitingInput")
    approval = TaskIssue("b-api", "approval", "waiting for spec.approved")
    _, effects = decide(build("Finalizing", counts=counts(total=1, succeeded=1)), IssuesChanged((approval,)))
    assert summary(effects)["Stalled"] == ("False", "AwaitingApproval")
    assert "MergeJob b-api" in cond(effects, "Ready").message


def test_refused_planners_are_the_replaced_ones_of_each_iteration_not_the_earlier_iterations_planners():
    """An earlier iteration's planner did its work (its plan was carried out): it stays in the counts. Only a
    planner a re-plan replaced is left out (the current iteration's, and an earlier iteration's refused ones).
    CI saw the build's progress drop from 2/2 to 1/2 when iteration 2 began, the first planner uncounted."""
    P = builds.PlannerView
    # iteration 2 running: the first planner was accepted and stays
    assert builds.refused_planners([P("b-planner", 1), P("b-planner-i2", 2)], 2, "b-planner-i2") == frozenset()
    # iteration 1 re-planned once: the first planner is refused
    assert builds.refused_planners([P("b-planner", 1), P("b-planner-1", 1, 1)], 1, "b-planner-1") == {"b-planner"}
    # iteration 3: of iteration 1 the last re-plan stayed, of iteration 3 the current one
    ps = [P("b-planner", 1), P("b-planner-1", 1, 1), P("b-planner-2", 1, 2), P("b-planner-i2", 2),
          P("b-planner-i3-3", 3, 3), P("b-planner-i3-4", 3, 4)]
    assert builds.refused_planners(ps, 3, "b-planner-i3-4") == {"b-planner", "b-planner-1", "b-planner-i3-3"}
    # unlabelled re-plans (made before the label existed) are ordered by creation time
    old = [P("b-planner", 1, 0, "2026-01-01T00:00:00Z"), P("b-planner-1", 1, 0, "2026-01-01T00:01:00Z"),
           P("b-planner-i2", 2)]
    assert builds.refused_planners(old, 2, "b-planner-i2") == {"b-planner"}
    # a build that reads a roadmap has no planner of its own
    assert builds.refused_planners([], 2, None) == frozenset()


def test_the_early_final_sweep_starts_only_with_a_planner_and_finalization_enabled():
    ended = TaskCountsChanged(counts(total=2, succeeded=2))
    off = decide(iterating(planner_task="b-planner", finalization_enabled=False), ended)[0]
    new, effects = decide(off, builds.IterationEnded())
    assert new.phase == "Planning" and of(effects, CreatePlannerTask) and not of(effects, builds.StartEarlySweep)
    roadmap = decide(iterating(source="roadmap", max_iterations=2), ended)[0]
    new, effects = decide(roadmap, builds.IterationEnded())  # the shell reads the file again: nothing to overlap
    assert new.phase == "Planning" and not of(effects, builds.StartEarlySweep)
    last = decide(iterating(iteration=3, max_iterations=3), ended)[0]
    assert not of(decide(last, builds.IterationEnded())[1], builds.StartEarlySweep)  # finalization's own sweep


def test_the_crd_s_default_status_is_what_the_decider_says_of_a_build_nobody_has_looked_at():
    # the first write flips none of them (kstatus and kubectl wait see no change of state), and a restarted
    # operator reads the defaulted status as a build that has not started
    from longshot.api import buildrequest

    fresh = [(e.type, e.status, e.reason, e.message) for e in builds.summary(build())]
    assert fresh == list(buildrequest.INITIAL_CONDITIONS)
    defaulted = buildrequest.initial_status()
    assert builds.phase_from_status(defaulted["conditions"], counts(), None, True) == builds.PENDING
    assert defaulted["phase"] == build().display_phase


def test_a_replaced_planners_plan_delivered_again_does_not_replan_twice():
    """Seen on a loaded machine: the build took the refused plan in twice (once read back from the planner's Pod,
    once handed over by the planner's reconcile), so one refusal made two re-plans (``b-planner-2`` too)."""
    cyclic = [PlannedTask(name="a", description="A", depends_on=["b"]),
              PlannedTask(name="b", description="B", depends_on=["a"])]
    s = build("Planning", planner_task="b-planner", max_replans=2)
    s, effects = decide(s, PlannerFinished(cyclic, top(), planner="b-planner"))
    assert s.replans == 1 and s.planner_task == "b-planner-1" and of(effects, CreatePlannerTask)
    again, effects = decide(s, PlannerFinished(cyclic, top(), planner="b-planner"))
    assert again == s and not of(effects, CreatePlannerTask) and not of(effects, EmitEvent)
    # the current planner's plan is taken in as before
    s, effects = decide(s, PlannerFinished(planned("x"), top(), planner="b-planner-1"))
    assert s.phase == "Working" and of(effects, CreateTasks)
