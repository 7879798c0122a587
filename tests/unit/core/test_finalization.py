from __future__ import annotations

import pytest

from longshot.core import finalization as f
from longshot.core.finalization import (
    AdoptEarlySweep,
    BeginAttempt,
    Finish,
    FixFailingSweep,
    JobView,
    RequeueJobs,
    Snapshot,
    StartFinalSweep,
    SweepView,
    TaskView,
    Wait,
)

pytestmark = pytest.mark.unit


def snap(**kw: object) -> Snapshot:
    base: dict[str, object] = {"build": "b", "enabled": True, "attempt": 0, "max_attempts": 2, "tasks": (),
                               "jobs": (), "final_sweep": None, "sweep_fixers_left": 3}
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


MERGED = JobView("b-a", "Merged", finished=True, delivered=True)


def test_a_failed_planned_task_is_never_a_pass():
    """The false success of issue 10: the only worker failed, nothing merged -> TasksFailed, not Passed."""
    s = snap(tasks=(TaskView("b-a", "Failed", failure="push blocked by the secret scan"),))
    (eff,) = f.decide(s)
    assert isinstance(eff, Finish) and not eff.passed and eff.reason == "TasksFailed"
    assert "b-a failed: push blocked by the secret scan" in eff.message


def test_blocked_tasks_count_as_failed_and_a_failed_fixer_does_not():
    s = snap(tasks=(TaskView("b-b", "Pending", blocked="dependency b-a was cancelled"),
                    TaskView("b-a", "Cancelled")))
    (eff,) = f.decide(s)
    assert isinstance(eff, Finish) and eff.reason == "TasksFailed" and "b-b is blocked" in eff.message
    s = snap(tasks=(TaskView("b-a-fix", "Failed", role="fixer"),), jobs=(MERGED,))
    assert isinstance(f.decide(s)[0], BeginAttempt)


def test_waits_while_the_queue_drains_or_fixers_run():
    s = snap(jobs=(JobView("b-a", "Queued"),))
    assert isinstance(f.decide(s)[0], Wait)
    s = snap(jobs=(MERGED,), tasks=(TaskView("b-x-fix", "Running", role="fixer"),))
    assert isinstance(f.decide(s)[0], Wait)


def test_first_attempt_requeues_retryable_unmerged_and_sweeps():
    jobs = (MERGED, JobView("b-c", "Conflicted", finished=True, retryable=True),
            JobView("b-d", "Failed", finished=True, retryable=True, carried_by="b-d-fix"))
    effects = f.decide(snap(jobs=jobs))
    assert effects == [BeginAttempt(1), RequeueJobs(("b-c",)), StartFinalSweep(1)]


def test_pass_needs_a_passing_sweep_and_everything_delivered():
    s = snap(attempt=1, jobs=(MERGED,), final_sweep=SweepView("b-final-1", finished=True, passed=True))
    (eff,) = f.decide(s)
    assert isinstance(eff, Finish) and eff.passed and eff.reason == "Passed"


def test_failing_sweep_gets_a_fixer_then_fails_with_tests_failed():
    s = snap(attempt=1, jobs=(MERGED,), final_sweep=SweepView("b-final-1", True, False, "1 test failed"))
    effects = f.decide(s)
    assert effects[0] == BeginAttempt(2) and isinstance(effects[-1], FixFailingSweep)
    s = snap(attempt=2, jobs=(MERGED,), final_sweep=SweepView("b-final-2", True, False, "1 test failed"))
    (eff,) = f.decide(s)
    assert isinstance(eff, Finish) and eff.reason == "TestsFailed" and "1 test failed" in eff.message


def test_unmerged_branches_after_the_last_attempt():
    job = JobView("b-c", "Conflicted", finished=True, message="conflicts in a.py")
    s = snap(attempt=2, jobs=(MERGED, job), final_sweep=SweepView("b-final-2", True, True))
    (eff,) = f.decide(s)
    assert isinstance(eff, Finish) and eff.reason == "UnmergedBranches" and "b-c (conflicts in a.py)" in eff.message


def test_disabled_finalization_decides_on_the_drained_queue():
    assert f.decide(snap(enabled=False, jobs=(MERGED,))) == [Finish(True, "Passed", "every planned task succeeded "
                                                                    "and every branch merged", 0)]
    (eff,) = f.decide(snap(enabled=False, jobs=(JobView("b-c", "Failed", finished=True),)))
    assert isinstance(eff, Finish) and eff.reason == "UnmergedBranches"


def test_sweep_running_waits_and_missing_sweep_starts():
    assert isinstance(f.decide(snap(attempt=1, jobs=(MERGED,)))[0], StartFinalSweep)
    s = snap(attempt=1, jobs=(MERGED,), final_sweep=SweepView("b-final-1", finished=False))
    assert isinstance(f.decide(s)[0], Wait)


EARLY = SweepView("b-final-i2", finished=False)


def test_the_first_attempt_adopts_an_early_sweep_that_still_tests_the_tip():
    assert f.decide(snap(jobs=(MERGED,), early_sweep=EARLY)) == [BeginAttempt(1), AdoptEarlySweep("b-final-i2", 1)]
    done = SweepView("b-final-i2", finished=True, passed=True)
    assert f.decide(snap(jobs=(MERGED,), early_sweep=done)) == [BeginAttempt(1), AdoptEarlySweep("b-final-i2", 1)]
    # re-queued branches move the tip: the early sweep no longer tests what the build ends with
    jobs = (MERGED, JobView("b-c", "Conflicted", finished=True, retryable=True))
    assert f.decide(snap(jobs=jobs, early_sweep=EARLY)) == [BeginAttempt(1), RequeueJobs(("b-c",)),
                                                           StartFinalSweep(1)]
    # an unmerged branch that will not be retried does not move it
    jobs = (MERGED, JobView("b-d", "Failed", finished=True))
    assert f.decide(snap(jobs=jobs, early_sweep=EARLY)) == [BeginAttempt(1), AdoptEarlySweep("b-final-i2", 1)]


def test_an_adopted_early_sweep_is_the_attempt_s_sweep_and_never_replaces_a_later_one():
    passed = SweepView("b-final-i2", finished=True, passed=True)
    (eff,) = f.decide(snap(jobs=(MERGED,), attempt=1, final_sweep=passed))
    assert isinstance(eff, Finish) and eff.passed
    # after the first attempt an early sweep is not offered again (the shell passes it before attempt 1 only)
    assert f.decide(snap(jobs=(MERGED,), attempt=2, early_sweep=EARLY)) == [StartFinalSweep(2)]


GATED = SweepView("b-gate-1-2", finished=True, passed=True)


def test_the_first_attempt_adopts_the_gate_run_that_tested_the_tip_with_the_reconciler_command():
    """Issue 13: the tail of a build was its last batch's gate, then a final sweep running the same command on
    the same commit."""
    assert f.decide(snap(jobs=(MERGED,), tested_tip=GATED)) == [BeginAttempt(1), AdoptEarlySweep("b-gate-1-2", 1)]
    # an early sweep is preferred (it was started for this), and a re-queued branch moves the tip
    assert f.decide(snap(jobs=(MERGED,), early_sweep=EARLY, tested_tip=GATED)) == [
        BeginAttempt(1), AdoptEarlySweep("b-final-i2", 1)]
    jobs = (MERGED, JobView("b-c", "Conflicted", finished=True, retryable=True))
    assert f.decide(snap(jobs=jobs, tested_tip=GATED)) == [BeginAttempt(1), RequeueJobs(("b-c",)),
                                                          StartFinalSweep(1)]
    # a run that did not pass is no sweep of the tip; after the first attempt none is offered
    failed = SweepView("b-gate-1-2", finished=True, passed=False)
    assert f.decide(snap(jobs=(MERGED,), tested_tip=failed)) == [BeginAttempt(1), StartFinalSweep(1)]
    assert f.decide(snap(jobs=(MERGED,), attempt=2, tested_tip=GATED)) == [StartFinalSweep(2)]
    # the adopted run is attempt 1's sweep: it passed, so the build passed
    (eff,) = f.decide(snap(jobs=(MERGED,), attempt=1, final_sweep=GATED))
    assert isinstance(eff, Finish) and eff.passed and eff.reason == "Passed"
