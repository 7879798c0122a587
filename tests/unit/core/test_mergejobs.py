from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.core import mergejobs as mj
from longshot.core.mergejobs import (
    BatchJoined,
    BatchRef,
    ChangesRequested,
    ChecksPassed,
    Conflict,
    CreateFixer,
    Error,
    Evicted,
    FixerLanded,
    InvalidTransition,
    JobState,
    Landed,
    Observed,
    Requeued,
    Retry,
    ScheduleRetry,
    SecretFound,
    TargetMoved,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)
BATCH = BatchRef("abc", 1, "base000", "spec001")


def job(phase: str = "Queued", **kw: Any) -> JobState:
    return JobState(name="b-a", task="b-a", branch="longshot/b/b-a", phase=phase, **kw)  # type: ignore[arg-type]


def decide(s: JobState, event: Any):
    new, effects = mj.decide(s, event, now=NOW)
    return new, checked(effects)


def test_observed_writes_queued_conditions():
    _, effects = decide(job(), Observed())
    assert cond(effects, "Queued").status == "True" and cond(effects, "Reconciling").status == "True"
    assert cond(effects, "Ready").status == "False"


def test_ready_after_checks_then_batch_then_merged():
    s, _ = decide(job(), ChecksPassed())
    assert s.ready
    s, effects = decide(s, BatchJoined(BATCH))
    assert s.phase == "Testing" and s.batch == BATCH and cond(effects, "GatesPassed").status == "Unknown"
    s, effects = decide(s, Landed("spec001"))
    assert s.phase == "Merged" and s.delivered and s.merged_commit == "spec001"
    assert cond(effects, "Ready").status == "True" and cond(effects, "GatesPassed").status == "True"


def test_conflict_is_retried_when_the_target_moves_then_gets_a_fixer():
    """Issue 10: after the bounded retries a conflict ALWAYS creates a fixer scoped to the files."""
    s = job(checks="passed", max_conflict_retries=1)
    s, effects = decide(s, Conflict(("a.py",), "t1"))
    assert s.phase == "Conflicted" and not s.terminal and not of(effects, CreateFixer)
    s, _ = decide(s, TargetMoved("t1"))
    assert s.phase == "Conflicted"  # the same head: no retry
    s, _ = decide(s, TargetMoved("t2"))
    assert s.phase == "Queued"
    s, effects = decide(s, Conflict(("a.py", "b.py"), "t2"))
    assert s.phase == "Conflicted" and s.terminal and s.fixer == "b-a-fix"
    (fixer,) = of(effects, CreateFixer)
    assert fixer.scope == ("a.py", "b.py") and fixer.branch == "longshot/b/b-a" and fixer.fix_depth == 1
    assert "a.py, b.py" in fixer.description
    assert cond(effects, "Stalled").status == "False"  # a fixer carries it: nobody needs to act


@pytest.mark.parametrize(("enforce", "task_scope", "expected"), [
    (True, ("src", "tests/**"), ("src", "tests/**")),  # spec.scope.enforce: the task's own scope, no wider
    (True, (), ()),                                     # an unscoped task's fixer is not limited either
    (False, ("src", "tests/**"), ("src/a.py",)),        # otherwise the conflicting files, a scheduling hint
])
def test_a_fixer_inherits_the_fixed_tasks_scope_when_the_build_enforces_scopes(enforce, task_scope, expected):
    s = job(checks="passed", max_conflict_retries=0, task_scope=task_scope, enforce_scope=enforce)
    s, effects = decide(s, Conflict(("src/a.py",), "t1"))
    (fixer,) = of(effects, CreateFixer)
    assert fixer.scope == expected


def test_a_conflict_goes_to_a_fixer_when_nothing_else_will_move_the_target():
    """Seen with a real model (make e2e-llm): two tasks wrote hello.txt, one merged, the other conflicted with
    retries left and waited for a target move that no other job would make: the build never finished."""
    s = job(checks="passed", max_conflict_retries=2)
    s, _ = decide(s, Conflict(("hello.txt",), "t1"))
    assert s.phase == "Conflicted" and not s.terminal
    same, effects = decide(s, mj.TargetIdle("t2"))  # the target moved meanwhile: TargetMoved requeues it
    assert same == s and effects == []
    s, effects = decide(s, mj.TargetIdle("t1"))
    assert s.phase == "Conflicted" and s.terminal and s.fixer == "b-a-fix"
    (fixer,) = of(effects, CreateFixer)
    assert fixer.scope == ("hello.txt",) and "hello.txt" in fixer.description
    assert "nothing else in the queue will move the target" in cond(effects, "Conflicted").message
    again, effects = decide(s, mj.TargetIdle("t1"))  # handed over already: nothing more
    assert again == s and effects == []


@pytest.mark.parametrize(("state", "head", "moving", "event"), [
    (job("Queued"), "t1", False, None),  # not conflicted: nothing to learn
    (job("Conflicted", conflicts=1, conflict_base="t1"), "t2", False, mj.TargetMoved("t2")),
    (job("Conflicted", conflicts=1, conflict_base="t1"), "t1", True, None),  # another job may move it: wait
    (job("Conflicted", conflicts=1, conflict_base="t1"), "t1", False, mj.TargetIdle("t1")),
    (job("Conflicted", conflicts=3, conflict_base="t1", max_conflict_retries=2), "t2", False, None),  # terminal
])
def test_what_a_conflicted_job_learns_from_the_target_s_head(state: Any, head: str, moving: bool,
                                                               event: Any) -> None:
    assert mj.target_event(state, head, moving) == event


def test_a_stacked_job_waiting_for_its_dependencies_does_not_count_as_moving_the_target():
    """A stacked job waiting for the conflicted job it depends on cannot move the target before that one merges:
    counted, the conflicted job waited for it and it for the conflicted job, for ever."""
    conflicted = job("Conflicted", conflicts=1, conflict_base="t1")
    waiting = job(checks="pending", waiting="waiting for b-a to merge")
    assert not mj.target_can_move([conflicted, waiting])
    assert mj.target_can_move([conflicted, waiting, job(checks="passed")])
    assert mj.target_can_move([conflicted, job("Testing", checks="passed", batch=BATCH)])
    assert mj.target_can_move([conflicted, job("AwaitingApproval", checks="passed")])  # a person will act
    assert not mj.target_can_move([conflicted, job("Merged"), job("Failed"), job("Superseded")])


def test_a_conflict_with_candidates_ahead_is_not_counted():
    s, _effects = decide(job("Testing", checks="passed", batch=BATCH), Conflict(("a.py",), "t1", counted=False))
    assert s.phase == "Queued" and s.conflicts == 0 and s.batch is None


def test_evicted_culprit_gets_a_fixer_with_the_gate_output():
    s, effects = decide(job("Testing", batch=BATCH), Evicted("make test", "FAILED test_add\nassert 3 == 4"))
    assert s.phase == "Failed" and s.fixer == "b-a-fix"
    (fixer,) = of(effects, CreateFixer)
    assert "make test" in fixer.description and "assert 3 == 4" in fixer.description
    assert cond(effects, "GatesPassed").status == "False"


def test_changes_requested_and_secret_found_get_fixers():
    s, effects = decide(job(), ChangesRequested("b-a-review", ("rename x",)))
    assert s.phase == "Failed" and "rename x" in of(effects, CreateFixer)[0].description
    s, effects = decide(job(), SecretFound(("config.py:3: AWS access key",)))
    assert s.phase == "Failed" and "AWS access key" in of(effects, CreateFixer)[0].description


def test_a_scan_past_its_deadline_fails_the_job_and_gets_a_fixer_as_a_found_secret_does():
    s, effects = decide(job(), mj.ScanTimedOut(90))
    assert s.phase == "Failed" and s.checks == "failed"
    assert cond(effects, "ChecksPassed").reason == "ScanTimedOut" and "90s" in cond(effects, "ChecksPassed").message
    assert "did not finish within 90s" in of(effects, CreateFixer)[0].description
    s, effects = decide(job(fixers_left=0), mj.ScanTimedOut(90))
    assert s.phase == "Failed" and not of(effects, CreateFixer)  # no fixer left: a person (NoFixer)
    assert cond(effects, "Stalled").status == "True"


def test_fix_of_a_fix_counts_and_the_limit_says_why():
    s, effects = decide(job("Testing", batch=BATCH, fix_depth=1), Evicted("make test", "x"))
    assert of(effects, CreateFixer)[0].fix_depth == 2
    s, effects = decide(job("Testing", batch=BATCH, fix_depth=2), Evicted("make test", "x"))
    assert not of(effects, CreateFixer) and s.fixer is None
    assert cond(effects, "Ready").reason == "NoFixer" and cond(effects, "Stalled").status == "True"
    assert "fix of a fix" in cond(effects, "Ready").message
    s, effects = decide(job("Testing", batch=BATCH, fixers_left=0), Evicted("make test", "x"))
    assert not of(effects, CreateFixer) and "maxFixers" in cond(effects, "Ready").message


def test_fixer_landing_supersedes_the_job():
    s, _ = decide(job("Testing", batch=BATCH), Evicted("make test", "x"))
    s, effects = decide(s, FixerLanded("fff"))
    assert s.phase == "Superseded" and s.delivered and cond(effects, "Ready").status == "True"
    with pytest.raises(InvalidTransition):
        mj.decide(job("Failed"), FixerLanded("x"), now=NOW)


def test_errors_back_off_then_fail():
    s, effects = decide(job(checks="passed"), Error("push refused"))
    assert s.errors == 1 and s.not_before is not None and of(effects, ScheduleRetry)
    s, _ = decide(s, Error("push refused"))
    s, effects = decide(s, Error("push refused"))
    assert s.phase == "Failed" and "gave up after 3 tries" in cond(effects, "Ready").message


def test_requeue_and_finalization_retry():
    s, _ = decide(job("Testing", batch=BATCH), Requeued("batch broke elsewhere"))
    assert s.phase == "Queued" and s.batch is None
    s, _ = decide(job("Conflicted", conflicts=3, max_conflict_retries=2), Retry("finalization"))
    assert s.phase == "Queued" and s.conflicts == 2  # one more counted try


def test_impossible_transitions():
    for phase, event in (("Merged", BatchJoined(BATCH)), ("Failed", BatchJoined(BATCH)),
                         ("Queued", Evicted("x", "y")), ("Superseded", Evicted("x", "y"))):
        with pytest.raises(InvalidTransition):
            mj.decide(job(phase), event, now=NOW)


def test_status_round_trip_fields():
    st = replace(job("Testing", batch=BATCH), not_before=NOW).to_status()
    assert st["batch"] == {"id": "abc", "position": 1, "base": "base000", "commit": "spec001"}
    assert st["notBefore"] == "2025-01-01T00:00:00Z" and st["phase"] == "Testing"


# --- approval (spec.merge.requireApproval) -------------------------------------------------------------


def test_a_job_that_passed_its_checks_waits_for_approval_then_joins_the_queue():
    s = job(needs_approval=True)
    _, effects = decide(s, mj.Observed())
    assert (cond(effects, "AwaitingApproval").status, cond(effects, "AwaitingApproval").reason) == ("Unknown",
                                                                                                 "Pending")
    s, effects = decide(s, ChecksPassed())
    assert s.phase == "AwaitingApproval" and s.checks == "passed" and not s.ready
    c = cond(effects, "AwaitingApproval")
    assert (c.status, c.reason) == ("True", "AwaitingApproval") and "spec.approved" in c.message
    assert (cond(effects, "Stalled").status, cond(effects, "Ready").reason) == ("False", "AwaitingApproval")
    assert any(e.reason == "AwaitingApproval" for e in effects if isinstance(e, mj.EmitEvent))
    assert s.to_status()["phase"] == "AwaitingApproval"
    # nothing but the approval moves it on; a merge found after a restart is recorded
    for event in (mj.TargetMoved("t2"), mj.Requeued("x"), mj.Retry("x"), ChecksPassed()):
        assert decide(s, event) == (s, [])
    assert decide(s, mj.Landed("c1", already=True))[0].phase == "Merged"
    s, effects = decide(s, mj.Approved())
    assert s.phase == "Queued" and s.ready
    assert (cond(effects, "AwaitingApproval").status, cond(effects, "AwaitingApproval").reason) == ("False",
                                                                                                 "Approved")


def test_without_required_approval_or_once_approved_nothing_waits():
    _, effects = decide(job(), mj.Observed())
    assert cond(effects, "AwaitingApproval").reason == "NotRequired"
    s, _ = decide(job(needs_approval=False), ChecksPassed())
    assert s.phase == "Queued" and s.ready
    with pytest.raises(mj.InvalidTransition):
        decide(job("Testing", checks="passed", batch=BATCH), mj.Approved())


def test_a_job_with_the_crd_s_default_status_is_not_seen_yet_and_one_written_by_the_operator_is():
    from longshot.api import conditions as c
    from longshot.api import mergejob

    defaulted = mergejob.MergeJobStatus.model_validate(mergejob.initial_status())
    assert defaulted.conditions and not mergejob.seen(defaulted)  # the MergeJob reconciler writes its conditions
    assert not mergejob.seen(mergejob.MergeJobStatus())
    written, _ = c.set_condition(mergejob.initial_status()["conditions"], c.QUEUED, c.TRUE, "Queued", "waiting",
                                 now=NOW)
    assert mergejob.seen(mergejob.MergeJobStatus.model_validate({"conditions": written}))
