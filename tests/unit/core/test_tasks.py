from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.api import objects
from longshot.api.agenttask import Attempt
from longshot.api.buildrequest import RetryPolicy
from longshot.api.handoff import Failure, Handoff, HandoffError, PlannedTask
from longshot.core import tasks
from longshot.core.effects import EmitEvent, SetCondition
from longshot.core.tasks import (
    Admitted,
    BackoffElapsed,
    CancelRequested,
    CountUsage,
    CreateMergeJob,
    CreatePod,
    DeletePod,
    InvalidTransition,
    Killswitch,
    PlanReturned,
    PodFinished,
    PodVanished,
    RecordAttempt,
    RecordHandoff,
    RetryRequested,
    ScheduleRetry,
    TaskState,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def rand() -> float:
    return 1.0


def state(phase: str = "Pending", *, attempt: int = 0, role: str = "worker", name: str = "b-t1",
          **kw: Any) -> TaskState:
    return TaskState(name=name, role=role, phase=phase, attempt=attempt, **kw)  # type: ignore[arg-type]


def decide(s: TaskState, event: Any, now: datetime = NOW):
    new, effects = tasks.decide(s, event, now=now, rand=rand)
    return new, checked(effects)




def exited(code: int = 0, reason: str | None = None) -> dict[str, Any]:
    return {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
        {"name": "agent", "state": {"terminated": {"exitCode": code, "reason": reason or "Completed"}}}]}


def handoff(outcome: str = "succeeded", *, role: str = "worker", attempt: int = 1, failure: str | None = None,
            commit: str | None = "abcdef1", tokens: int = 100, tasks_: list[PlannedTask] | None = None
            ) -> Handoff:
    return Handoff(task="b-t1", attempt=attempt, role=role, outcome=outcome,  # type: ignore[arg-type]
                   branch="longshot/b/t1" if commit else None, commit=commit, summary="did it",
                   usage={"input_tokens": tokens, "output_tokens": 0, "cost": 0.5},  # type: ignore[arg-type]
                   failure=Failure(failure_class=failure) if failure else None, tasks=tasks_ or [])


def running(attempt: int = 1, **kw: Any) -> TaskState:
    return state("Running", attempt=attempt, **kw)


# --- Pending ----------------------------------------------------------------------------------------


def test_admitted_creates_the_pod_of_the_next_attempt():
    new, effects = decide(state(), Admitted())
    assert new.phase == "Running" and new.attempt == 1
    assert of(effects, CreatePod) == [CreatePod(1, "b-t1-a1")]
    assert of(effects, RecordAttempt) == [RecordAttempt(1, "b-t1-a1", start_time=NOW)]
    assert cond(effects, "Running").status == "True"


def test_restart_idempotence_no_duplicate_pod():
    s = state(attempt=2, retry_base=0)
    first = decide(s, Admitted(3))
    again = decide(s, Admitted(3))  # status write lost: same state, same event
    assert of(first[1], CreatePod) == of(again[1], CreatePod) == [CreatePod(3, "b-t1-a3")]
    new, effects = decide(first[0], Admitted(3))  # the event delivered once more after the write
    assert new == first[0] and effects == []


def test_admitted_with_a_wrong_attempt_is_a_bug():
    with pytest.raises(InvalidTransition):
        decide(state(attempt=1), Admitted(5))
    with pytest.raises(InvalidTransition):
        decide(running(1), Admitted(3))


def test_pod_finished_while_pending_adopts_the_attempt():
    # The operator created Pod a1 and died before writing status; the Pod then finished.
    new, effects = decide(state(), PodFinished(exited(0), handoff(), attempt=1))
    assert new.phase == "Succeeded" and new.attempt == 1
    assert of(effects, CreatePod) == []


@pytest.mark.parametrize("event", [PodFinished(exited(0), None, attempt=1), PodVanished(attempt=1),
                                   BackoffElapsed(), Killswitch()])
def test_pending_ignores_stale_events(event):
    s = state(attempt=1)
    assert decide(s, event) == (s, [])


def test_pending_pod_event_from_the_future_is_a_bug():
    with pytest.raises(InvalidTransition):
        decide(state(attempt=1), PodFinished(exited(0), None, attempt=5))


def test_cancel_pending():
    new, effects = decide(state(), CancelRequested())
    assert new.phase == "Cancelled" and of(effects, DeletePod) == []
    assert cond(effects, "Succeeded").reason == "Cancelled"


def test_retry_token_while_pending_is_only_remembered():
    new, effects = decide(state(), RetryRequested("x"))
    assert new.phase == "Pending" and new.retry_token == "x" and effects == []


# --- Running ----------------------------------------------------------------------------------------


def test_worker_success_creates_merge_job_and_usage():
    new, effects = decide(running(), PodFinished(exited(0), handoff()))
    assert new.phase == "Succeeded"
    assert of(effects, CreateMergeJob) == [CreateMergeJob("longshot/b/t1", "abcdef1", name="b-t1")]
    assert new.merge_job == "b-t1" and new.to_status()["mergeJob"] == "b-t1"
    assert of(effects, CountUsage) == [CountUsage(100, 0.5)]
    (h,) = of(effects, RecordHandoff)
    assert h.handoff["commit"] == "abcdef1" and h.handoff["tokens"] == 100
    assert cond(effects, "Succeeded").status == "True" and cond(effects, "Ready").status == "True"
    (rec,) = of(effects, RecordAttempt)
    Attempt.model_validate(rec.to_wire())


def test_empty_outcome_succeeds_without_merge():
    new, effects = decide(running(), PodFinished(exited(0), handoff("empty", commit=None)))
    assert new.phase == "Succeeded" and of(effects, CreateMergeJob) == []


def test_planner_success_returns_the_plan():
    plan = [PlannedTask(name="a", description="x")]
    new, effects = decide(running(role="planner"),
                          PodFinished(exited(0), handoff(role="planner", commit=None, tasks_=plan)))
    assert new.phase == "Succeeded" and of(effects, PlanReturned) == [PlanReturned(tuple(plan))]
    assert of(effects, CreateMergeJob) == []


def test_failure_schedules_retry_with_backoff():
    s = running(policy=RetryPolicy(max_attempts=3, backoff_seconds=10))
    new, effects = decide(s, PodFinished(exited(1), None))
    assert new.phase == "Backoff" and new.last_failure == "AgentError"
    assert new.next_attempt_time == NOW + timedelta(seconds=10)
    assert of(effects, ScheduleRetry) == [ScheduleRetry(NOW + timedelta(seconds=10))]
    (rec,) = of(effects, RecordAttempt)
    assert rec.failure_class == "AgentError" and rec.exit_code == 1 and rec.end_time == NOW
    assert cond(effects, "Ready").reason == "RetryScheduled"


def test_oom_is_retried():
    new, effects = decide(running(), PodFinished(exited(137, "OOMKilled"), None))
    assert new.phase == "Backoff" and of(effects, RecordAttempt)[0].failure_class == "OOMKilled"


def test_failure_with_no_retries_left_fails():
    s = running(3, policy=RetryPolicy(max_attempts=3))
    new, effects = decide(s, PodFinished(exited(1), None, attempt=3))
    assert new.phase == "Failed"
    assert cond(effects, "Succeeded") == SetCondition("Succeeded", "False", "Failed", cond(
        effects, "Succeeded").message)
    assert of(effects, ScheduleRetry) == []
    assert any(isinstance(e, EmitEvent) and e.type == "Warning" for e in effects)


def test_invalid_handoff_fails_after_one_retry():
    new, _ = decide(running(1), PodFinished(exited(0), HandoffError("the handoff is not JSON")))
    assert new.phase == "Backoff"
    new, effects = decide(running(2), PodFinished(exited(0), None, attempt=2))
    assert new.phase == "Failed" and cond(effects, "Succeeded").reason == "InvalidHandoff"


@pytest.mark.parametrize("event", [PodFinished(exited(3), None),
                                   PodFinished(exited(1), handoff("failed", failure="Auth"))])
def test_auth_failure_stops_and_asks(event):
    new, effects = decide(running(policy=RetryPolicy(max_attempts=10)), event)
    assert new.phase == "Failed" and new.last_failure == "Auth"
    assert cond(effects, "Authenticated") == SetCondition("Authenticated", "False", "AuthFailed",
                                                         cond(effects, "Authenticated").message)
    assert of(effects, ScheduleRetry) == []


def test_pod_vanished_is_infrastructure():
    new, effects = decide(running(), PodVanished())
    assert new.phase == "Backoff" and of(effects, RecordAttempt)[0].failure_class == "Infrastructure"


def test_cancel_running_deletes_the_pod():
    new, effects = decide(running(2), CancelRequested())
    assert new.phase == "Cancelled" and of(effects, DeletePod) == [DeletePod("b-t1-a2")]


def test_killswitch_stops_the_pod_without_burning_an_attempt():
    new, effects = decide(running(1, policy=RetryPolicy(max_attempts=1)), Killswitch())
    assert new.phase == "Pending" and new.retry_base == 1
    assert of(effects, DeletePod) == [DeletePod("b-t1-a1")]
    # attempt 2 still has the whole budget of one attempt: a failure now is final, not before
    started, _ = decide(new, Admitted())
    assert started.attempt == 2
    failed, _ = decide(started, PodFinished(exited(1), None))
    assert failed.phase == "Failed"


@pytest.mark.parametrize("event", [PodFinished(exited(1), None, attempt=1), BackoffElapsed()])
def test_running_ignores_stale_and_irrelevant_events(event):
    s = running(2)
    new, effects = decide(s, event)
    assert effects == [] and new.phase == "Running"


# --- Backoff ----------------------------------------------------------------------------------------


def test_backoff_elapsed_returns_to_pending():
    s = state("Backoff", attempt=1, next_attempt_time=NOW)
    new, _ = decide(s, BackoffElapsed(), NOW + timedelta(seconds=1))
    assert new.phase == "Pending" and new.next_attempt_time is None


def test_early_backoff_timer_waits_again():
    at = NOW + timedelta(seconds=30)
    s = state("Backoff", attempt=1, next_attempt_time=at)
    assert decide(s, BackoffElapsed()) == (s, [ScheduleRetry(at)])


def test_admission_during_backoff_is_impossible():
    with pytest.raises(InvalidTransition):
        decide(state("Backoff", attempt=1), Admitted())


def test_retry_during_backoff_skips_the_wait():
    new, _ = decide(state("Backoff", attempt=2, next_attempt_time=NOW), RetryRequested("go"))
    assert new.phase == "Pending" and new.retry_base == 2


def test_cancel_during_backoff():
    assert decide(state("Backoff", attempt=1), CancelRequested())[0].phase == "Cancelled"


# --- terminal ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_terminal_phases_cannot_be_admitted(phase):
    with pytest.raises(InvalidTransition):
        decide(state(phase, attempt=1), Admitted())


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
@pytest.mark.parametrize("event", [PodFinished(exited(0), None, attempt=1), PodVanished(1), CancelRequested(),
                                   BackoffElapsed(), Killswitch()])
def test_terminal_phases_ignore_late_events(phase, event):
    s = state(phase, attempt=1)
    assert decide(s, event) == (s, [])


@pytest.mark.parametrize("phase", ["Failed", "Cancelled"])
def test_retry_from_failed_or_cancelled_with_a_fresh_budget(phase):
    s = state(phase, attempt=3, last_failure="Auth", retry_token="old")
    new, effects = decide(s, RetryRequested("new"))
    assert new.phase == "Pending" and new.retry_base == 3 and new.retry_token == "new"
    assert cond(effects, "Authenticated").status == "Unknown"
    assert decide(new, RetryRequested("new")) == (new, [])  # the same token again: nothing
    started, effects = decide(new, Admitted())
    assert started.attempt == 4 and of(effects, CreatePod) == [CreatePod(4, "b-t1-a4")]


def test_same_retry_token_does_not_retry():
    s = state("Failed", attempt=1, retry_token="t")
    assert decide(s, RetryRequested("t")) == (s, [])


def test_retry_token_after_success_relaunches_the_task():
    new, effects = decide(state("Succeeded", attempt=1), RetryRequested("t"))
    assert new.phase == "Pending" and new.retry_token == "t" and new.retry_base == 1
    assert cond(effects, "Ready").status == "False" and cond(effects, "Succeeded").status == "Unknown"


# --- the table and the state -------------------------------------------------------------------------


def test_every_phase_has_a_row_for_every_event_but_the_impossible_ones():
    events = {tasks.Admitted, tasks.PodFinished, tasks.PodVanished, tasks.CancelRequested,
              tasks.RetryRequested, tasks.BackoffElapsed, tasks.Killswitch, tasks.SuspendChanged}
    missing = {(p, e.__name__) for p in tasks.PHASES for e in events if (p, e) not in tasks.TRANSITIONS}
    assert missing == {("Backoff", "Admitted"), ("Succeeded", "Admitted"), ("Failed", "Admitted"),
                       ("Cancelled", "Admitted"), ("AwaitingInput", "Admitted")}


def test_long_task_names_give_short_deterministic_pod_names():
    s = state(name="x" * 63)
    _, effects = decide(s, Admitted())
    (pod,) = of(effects, CreatePod)
    assert len(pod.name) <= 63 and pod.name.endswith("-a1")
    assert pod == of(decide(s, Admitted())[1], CreatePod)[0]


def test_state_from_resource_round_trip():
    obj = objects.parse({
        "metadata": {"name": "b-t1"},
        "spec": {"role": "fixer", "branch": "longshot/b/t0", "buildRef": {"name": "b"}, "description": "fix"},
        "status": {"phase": "Backoff", "retryToken": "r", "nextAttemptTime": "2025-01-01T12:00:30Z",
                   "attempts": [{"number": 1, "pod": "b-t1-a1"},
                                {"number": 2, "pod": "b-t1-a2", "failureClass": "Timeout", "exitReason": "slow"}]},
    }, objects.AgentTask)
    s = TaskState.from_task(obj, RetryPolicy(max_attempts=5, backoff_seconds=7))
    assert s == TaskState(name="b-t1", role="fixer", phase="Backoff", attempt=2, retry_token="r",
                          next_attempt_time=NOW + timedelta(seconds=30), last_failure="Timeout", last_message="slow",
                          policy=RetryPolicy(max_attempts=5, backoff_seconds=7))
    assert s.to_status()["nextAttemptTime"] == "2025-01-01T12:00:30Z"
    assert replace(s, phase="Running").pod == "b-t1-a2"


# --- issue 14: questions, answers, hung attempts, best-of-N -------------------------------------------


def asking(question: str = "Which port?", attempt: int = 1) -> Handoff:
    return Handoff(task="b-t1", attempt=attempt, role="worker", outcome="needs-input", question=question,
                   branch="longshot/b/t1", commit="abcdef1", summary="half done")


def test_a_question_waits_for_a_person_without_counting_as_a_failure():
    new, effects = decide(running(1), PodFinished(exited(0), asking()))
    assert new.phase == "AwaitingInput" and new.question == "Which port?" and new.retry_base == 1
    assert of(effects, CreateMergeJob) == [] and of(effects, ScheduleRetry) == []
    (rec,) = of(effects, RecordAttempt)
    assert rec.failure_class is None and rec.exit_reason == "asked a question: Which port?"
    assert (cond(effects, "AwaitingInput").status, cond(effects, "AwaitingInput").reason) == ("True", "QuestionAsked")
    assert cond(effects, "AwaitingInput").message == "Which port?"
    assert (cond(effects, "Stalled").status, cond(effects, "Reconciling").status) == ("False", "False")
    assert "spec" in cond(effects, "Ready").message and "answer" in cond(effects, "Ready").message
    assert [e.reason for e in of(effects, EmitEvent)] == ["QuestionAsked"]
    assert new.to_status()["question"] == "Which port?"


def test_an_answer_starts_the_next_attempt_once():
    waiting = replace(running(1), phase="AwaitingInput", question="Which port?", retry_base=1)
    new, effects = decide(waiting, tasks.Answered("8080"))
    assert new.phase == "Pending" and new.answer == "8080" and new.question == "Which port?"
    assert (cond(effects, "AwaitingInput").status, cond(effects, "AwaitingInput").reason) == ("False", "Answered")
    assert new.to_status()["answer"] == "8080"
    # the same answer again (a restart before the status write was seen) changes nothing
    assert decide(replace(waiting, answer="8080"), tasks.Answered("8080")) == (replace(waiting, answer="8080"), [])
    # the answered attempt does not use the retry budget: attempt 2 is counted as the first
    started, _ = decide(new, Admitted())
    assert started.attempt == 2 and started.attempt - started.retry_base == 1


@pytest.mark.parametrize("phase", ["Pending", "Running", "Backoff", "Succeeded", "Failed", "Cancelled"])
def test_an_answer_without_an_open_question_is_ignored(phase):
    s = state(phase, attempt=1)
    assert decide(s, tasks.Answered("x")) == (s, [])


def test_cancel_or_retry_while_waiting_drops_the_question():
    waiting = replace(running(1), phase="AwaitingInput", question="Q")
    new, effects = decide(waiting, CancelRequested())
    assert new.phase == "Cancelled" and cond(effects, "AwaitingInput").status == "False"
    new, effects = decide(waiting, RetryRequested("r1"))
    assert new.phase == "Pending" and cond(effects, "AwaitingInput").reason == "NotRequired"


def test_a_silent_attempt_is_hung_killed_and_failed_as_timeout():
    new, effects = decide(running(1), tasks.HeartbeatLost(400.0, 300.0, attempt=1))
    assert new.phase == "Backoff" and new.last_failure == "Timeout"
    assert of(effects, DeletePod) == [DeletePod("b-t1-a1")]
    (rec,) = of(effects, RecordAttempt)
    assert rec.failure_class == "Timeout" and "no heartbeat for 400s" in (rec.exit_reason or "")
    assert "HeartbeatLost" in [e.reason for e in of(effects, EmitEvent)]
    # out of retries: failed for good
    new, _ = decide(running(3), tasks.HeartbeatLost(400.0, 300.0))
    assert new.phase == "Failed"
    # about an older attempt, or in another phase: nothing
    assert decide(running(2), tasks.HeartbeatLost(400.0, 300.0, attempt=1)) == (running(2), [])
    assert decide(state("Backoff", attempt=1), tasks.HeartbeatLost(1.0, 1.0)) == (state("Backoff", attempt=1), [])


def test_heartbeat_silence_counts_from_the_later_of_beat_and_start():
    start = NOW - timedelta(seconds=600)
    assert tasks.heartbeat_silence(None, start, NOW) == 600
    assert tasks.heartbeat_silence(NOW - timedelta(seconds=20), start, NOW) == 20
    assert tasks.heartbeat_silence(start - timedelta(hours=1), start, NOW) == 600  # a beat of an older attempt
    assert tasks.heartbeat_silence(None, None, NOW) is None


def test_a_best_of_n_task_starts_candidates_instead_of_a_pod():
    new, effects = decide(state(), tasks.StartFanout(3))
    assert new.phase == "Running" and new.attempt == 1 and of(effects, CreatePod) == []
    assert of(effects, tasks.StartCandidates) == [tasks.StartCandidates(1, 3)]
    assert of(effects, RecordAttempt)[0].pod == "b-t1-c*"
    assert cond(effects, "Running").reason == "FanningOut"
    with pytest.raises(InvalidTransition):
        decide(running(1), tasks.StartFanout(3))


def test_the_judges_pick_is_merged_and_no_pick_fails_the_task():
    winner = {"branch": "longshot/b/b-t1-c2", "commit": "c2c2c2c", "baseCommit": "base000", "summary": "c2"}
    new, effects = decide(running(1), tasks.FanoutFinished(winner, "the judge picked b-t1-c2"))
    assert new.phase == "Succeeded"
    assert of(effects, CreateMergeJob) == [CreateMergeJob("longshot/b/b-t1-c2", "c2c2c2c", "base000", name="b-t1")]
    assert of(effects, RecordHandoff) == [RecordHandoff(winner)]
    assert cond(effects, "Succeeded").reason == "Judged"
    new, effects = decide(running(1), tasks.FanoutFinished(None, "no candidate passed: c1: failed"))
    assert new.phase == "Failed" and of(effects, CreateMergeJob) == []
    assert (cond(effects, "Stalled").status, cond(effects, "Stalled").reason) == ("True", "NoCandidatePassed")
    assert "c1: failed" in cond(effects, "Succeeded").message


def test_a_candidate_succeeds_without_a_merge_job():
    new, effects = decide(running(1, merges=False), PodFinished(exited(0), handoff()))
    assert new.phase == "Succeeded" and of(effects, CreateMergeJob) == []


def test_a_planner_that_is_done_returns_an_empty_plan_marked_done():
    done = Handoff(task="b-t1", attempt=1, role="planner", outcome="succeeded", done=True, summary="met")
    _, effects = decide(running(1, role="planner"), PodFinished(exited(0), done))
    assert of(effects, PlanReturned) == [PlanReturned((), True)]
    empty = Handoff(task="b-t1", attempt=1, role="planner", outcome="empty", summary="nothing")
    _, effects = decide(running(1, role="planner"), PodFinished(exited(0), empty))
    assert of(effects, PlanReturned) == [PlanReturned((), False)]


def test_question_and_answer_survive_a_round_trip_through_the_status():
    task = objects.parse({"metadata": {"name": "b-t1", "labels": {"longshot.dev/fanout-of": "b-t0"}},
                          "spec": {"buildRef": {"name": "b"}, "description": "d"},
                          "status": {"phase": "AwaitingInput", "question": "Q?", "answer": "A",
                                     "attempts": [{"number": 1, "pod": "b-t1-a1"}]}}, objects.AgentTask)
    s = TaskState.from_task(task)
    assert (s.phase, s.question, s.answer, s.merges) == ("AwaitingInput", "Q?", "A", False)


def test_a_repository_host_that_does_not_resolve_stops_the_task_at_the_first_attempt():
    h = handoff("failed", failure="Infrastructure")
    h = h.model_copy(update={"failure": Failure(failure_class="Infrastructure", message=(
        "clone of the repository failed: Could not resolve host: git.example.invalid"))})
    url = "https://git.example.invalid/org/app.git"
    new, effects = decide(running(policy=RetryPolicy(max_attempts=3)), PodFinished(exited(5), h, repository=url))
    assert new.phase == "Failed" and new.last_failure == "Configuration"
    assert of(effects, ScheduleRetry) == []
    assert "spec.repository.url" in cond(effects, "Stalled").message
    # the same failure for a build whose repository is elsewhere: Infrastructure, retried
    new, effects = decide(running(policy=RetryPolicy(max_attempts=3)),
                          PodFinished(exited(5), h, repository="https://git.example.com/org/app.git"))
    assert new.phase == "Backoff" and of(effects, ScheduleRetry)


def test_a_pod_that_will_never_start_is_deleted_at_once_whatever_the_event_means() -> None:
    """The stuck-Pod deletion is the core's decision (it was the shell's): a Pod that will never start is deleted
    with no grace, first; a foreign Pod's outcome (not stuck) deletes nothing; a stale stuck Pod is deleted too."""
    from longshot.core import failures

    never = failures.Outcome("Configuration", "image InvalidImageName", None, "InvalidImageName")
    s, effects = decide(running(1), PodFinished({}, None, 1, outcome=never, stuck=True))
    assert effects[0] == DeletePod("b-t1-a1", grace_seconds=0)
    assert of(effects, RecordAttempt)[0].failure_class == "Configuration" and s.phase != "Running"
    _, effects = decide(running(1), PodFinished({}, None, 1, outcome=never))  # a foreign Pod: refused, kept
    assert not of(effects, DeletePod)
    _, effects = decide(running(2), PodFinished({}, None, 1, outcome=never, stuck=True))  # an older attempt's
    assert of(effects, DeletePod) == [DeletePod("b-t1-a1", grace_seconds=0)]


# --- a call metered after its attempt ended ----------------------------------------------------------------------


@pytest.mark.parametrize(("ended", "recorded", "metered", "expected"), [
    (True, tasks.Usage(1000, 0.25), tasks.Usage(1700, 0.5),
     [tasks.RecordAttempt(2, "t-a2", tokens=1700, cost=0.5), tasks.CountUsage(700, 0.25)]),
    (True, tasks.Usage(1000, 0.25), tasks.Usage(1000, 0.25), []),  # nothing grew
    (True, tasks.Usage(1200, 0.25), tasks.Usage(1000, 0.25), []),  # the handoff said more: the record stays
    (True, tasks.Usage(1000, 0.25), tasks.Usage(900, 0.3),  # field by field the larger
     [tasks.RecordAttempt(2, "t-a2", tokens=1000, cost=0.3), tasks.CountUsage(0, 0.05)]),
    (False, tasks.Usage(0, 0.0), tasks.Usage(1700, 0.5), []),  # running: its end records the meter
    (True, tasks.Usage(1000, 0.25), None, []),  # the progress is another attempt's
])
def test_an_ended_attempt_s_record_rises_to_what_the_gateway_metered_after_its_end(
        ended: bool, recorded: tasks.Usage, metered: tasks.Usage | None, expected: list[Any]) -> None:
    assert tasks.late_usage(2, "t-a2", ended, recorded, metered) == expected
