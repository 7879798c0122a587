"""Per-task control (issue 31): ``spec.suspend``, relaunch by ``spec.retryToken`` in any state, the MergeJob of a
relaunched task, and the model chain with fallbacks (``core.tasks``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from effect_helpers import checked, cond, of

from longshot.api import objects
from longshot.api.buildrequest import RetryPolicy
from longshot.api.handoff import Handoff
from longshot.core import names, tasks
from longshot.core.effects import EmitEvent
from longshot.core.tasks import (
    Admitted,
    BackoffElapsed,
    CreateMergeJob,
    CreatePod,
    DeletePod,
    PodFinished,
    RecordAttempt,
    RetryRequested,
    SuspendChanged,
    TaskState,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def decide(s: TaskState, event: Any, now: datetime = NOW) -> tuple[TaskState, list[Any]]:
    new, effects = tasks.decide(s, event, now=now, rand=lambda: 1.0)
    return new, checked(effects)


def state(phase: str = "Pending", *, attempt: int = 0, **kw: Any) -> TaskState:
    return TaskState(name="b-t1", phase=phase, attempt=attempt, **kw)  # type: ignore[arg-type]


def exited(code: int = 0) -> dict[str, Any]:
    return {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
        {"name": "agent", "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                   "message": ""}}}]}


def success(attempt: int) -> Handoff:
    return Handoff(task="b-t1", attempt=attempt, role="worker", outcome="succeeded", branch="longshot/b/t1",
                   commit=f"abcdef{attempt}", summary="did it")


# --- suspend ------------------------------------------------------------------------------------------


def test_suspending_a_running_attempt_deletes_its_pod_and_goes_back_to_pending_without_a_failure():
    s = state("Running", attempt=1, policy=RetryPolicy(max_attempts=1))
    new, effects = decide(s, SuspendChanged(True))
    assert new.phase == "Pending" and new.suspended and new.retry_base == 1
    assert of(effects, DeletePod) == [DeletePod("b-t1-a1")]
    (rec,) = of(effects, RecordAttempt)
    assert rec.exit_reason == tasks.SUSPENDED_EXIT and rec.failure_class is None and rec.end_time == NOW
    assert (cond(effects, "Suspended").status, cond(effects, "Suspended").reason) == ("True", "Suspended")
    assert cond(effects, "Stalled").status == "False" and cond(effects, "Reconciling").reason == "Suspended"
    assert [e.reason for e in of(effects, EmitEvent)] == ["Suspended"]
    # the stop did not count: with max_attempts 1, the next attempt's failure is the first one that counts
    resumed, effects = decide(new, SuspendChanged(False))
    assert not resumed.suspended and resumed.phase == "Pending"
    assert (cond(effects, "Suspended").status, cond(effects, "Suspended").reason) == ("False", "Resumed")
    started, effects = decide(resumed, Admitted())
    assert started.attempt == 2 and of(effects, CreatePod) == [CreatePod(2, "b-t1-a2")]
    failed, _ = decide(started, PodFinished(exited(1), None))
    assert failed.phase == "Failed"


def test_suspend_is_idempotent_and_resume_without_suspend_does_nothing():
    s = state("Pending", attempt=1, suspended=True)
    assert decide(s, SuspendChanged(True)) == (s, [])
    assert decide(state(), SuspendChanged(False)) == (state(), [])


def test_suspending_a_backoff_drops_the_wait_and_a_late_timer_changes_nothing():
    s = state("Backoff", attempt=1, next_attempt_time=NOW + timedelta(seconds=60), last_failure="AgentError")
    new, effects = decide(s, SuspendChanged(True))
    assert new.phase == "Pending" and new.next_attempt_time is None and new.suspended
    assert of(effects, DeletePod) == [] and new.retry_base == 0  # the failed attempt still counts
    assert decide(new, BackoffElapsed()) == (new, [])


@pytest.mark.parametrize("phase", ["AwaitingInput", "Succeeded", "Failed", "Cancelled"])
def test_suspending_a_waiting_or_finished_task_only_marks_it(phase):
    new, effects = decide(state(phase, attempt=1), SuspendChanged(True))
    assert new.phase == phase and new.suspended
    assert of(effects, DeletePod) == [] and cond(effects, "Suspended").status == "True"
    back, effects = decide(new, SuspendChanged(True))
    assert back == new and effects == []


def test_suspended_flag_comes_from_the_condition():
    obj = objects.parse({
        "metadata": {"name": "b-t1"},
        "spec": {"buildRef": {"name": "b"}, "description": "x", "suspend": True},
        "status": {"phase": "Pending", "mergeJob": "b-t1-a3",
                   "conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended", "message": "m",
                                   "lastTransitionTime": "2025-01-01T12:00:00Z"}],
                   "attempts": [{"number": 1, "pod": "b-t1-a1", "model": "m2"}]},
    }, objects.AgentTask)
    s = TaskState.from_task(obj, None, ("m1", "m2"))
    assert s.suspended and s.merge_job == "b-t1-a3" and s.last_model == "m2" and s.models == ("m1", "m2")


# --- relaunch -----------------------------------------------------------------------------------------


def test_relaunching_a_running_attempt_stops_it_and_waits_for_a_new_one():
    s = state("Running", attempt=2, retry_base=0, retry_token="old")
    new, effects = decide(s, RetryRequested("new"))
    assert new.phase == "Pending" and new.retry_token == "new" and new.retry_base == 2
    assert of(effects, DeletePod) == [DeletePod("b-t1-a2")]
    (rec,) = of(effects, RecordAttempt)
    assert rec.failure_class is None and "relaunched" in (rec.exit_reason or "")
    assert cond(effects, "Running").reason == "Relaunched"
    assert decide(s, RetryRequested("old")) == (s, [])  # the token already acted on


def test_a_new_token_while_pending_restarts_the_retry_count():
    new, effects = decide(state("Pending", attempt=2, retry_token="a"), RetryRequested("b"))
    assert (new.phase, new.retry_token, new.retry_base, effects) == ("Pending", "b", 2, [])


def test_a_relaunched_succeeded_task_gets_a_new_merge_job_named_by_its_attempt():
    done, effects = decide(state("Running", attempt=1), PodFinished(exited(0), success(1)))
    assert of(effects, CreateMergeJob)[0].name == "b-t1" and done.merge_job == "b-t1"
    again, effects = decide(done, RetryRequested("r1"))
    assert again.phase == "Pending" and again.merge_job == "b-t1"  # the old one stays current until the next
    assert [e.reason for e in of(effects, EmitEvent)] == ["RetryRequested"]
    running, _ = decide(again, Admitted())
    finished, effects = decide(running, PodFinished(exited(0), success(2)))
    (job,) = of(effects, CreateMergeJob)
    assert job.name == "b-t1-a2" != "b-t1" and job.commit == "abcdef2"
    assert finished.merge_job == "b-t1-a2" and finished.to_status()["mergeJob"] == "b-t1-a2"


def test_merge_job_names_fit_and_never_collide():
    long = "t" * 63
    assert names.merge_job_name(long, 1, first=True) == long
    later = names.merge_job_name(long, 2, first=False)
    assert later != long and len(later) <= 63 and later.endswith("-a2")


def test_a_relaunched_best_of_n_winner_gets_a_new_merge_job_too():
    winner = {"branch": "longshot/b/b-t1-c1", "commit": "c1c1c1c"}
    s = state("Running", attempt=2, merge_job="b-t1")
    _, effects = decide(s, tasks.FanoutFinished(winner, "picked c1"))
    assert of(effects, CreateMergeJob)[0].name == "b-t1-a2"


# --- models -------------------------------------------------------------------------------------------


def test_model_chain_puts_the_primary_first_and_drops_repeats():
    assert tasks.model_chain("a", ["b", "a", "c", ""]) == ("a", "b", "c")
    assert tasks.model_chain(None, ["b"]) == ()


@pytest.mark.parametrize(("failure", "message", "upstream"), [
    ("RateLimited", "gave up after 5 attempts: the OpenAI-compatible API answered 429: slow down", True),
    ("Infrastructure", "gave up after 5 attempts: the Anthropic API answered 529: overloaded", True),
    ("Infrastructure", "cannot reach the model API at http://gw: ConnectError", True),
    ("Infrastructure", "git push failed: the remote hung up", False),
    ("AgentError", "the model API produced nonsense", False),
    ("Timeout", "", False),
    (None, "", False),
])
def test_upstream_failures_are_rate_limits_and_model_api_outages(failure, message, upstream):
    assert tasks.upstream_failure(failure, message) is upstream


# (models, last model, last failure, last message) -> the next attempt's model
MODEL_TABLE = [
    ((), None, None, "", None),
    (("a", "b", "c"), None, None, "", "a"),
    (("a", "b", "c"), "a", "RateLimited", "", "b"),
    (("a", "b", "c"), "b", "Infrastructure", "the Anthropic API answered 503", "c"),
    (("a", "b", "c"), "c", "RateLimited", "", "a"),
    (("a", "b", "c"), "b", "AgentError", "wrong", "b"),
    (("a", "b", "c"), "b", None, "", "b"),
    (("x", "b"), "a", "RateLimited", "", "x"),
]


@pytest.mark.parametrize(("models", "last", "failure", "message", "expected"), MODEL_TABLE)
def test_next_model(models, last, failure, message, expected):
    s = state(models=models, last_model=last, last_failure=failure, last_message=message)
    assert tasks.next_model(s) == expected


def test_a_rate_limited_attempt_makes_the_next_one_use_the_fallback_and_records_it():
    s = state(models=("primary", "fallback"))
    run1, effects = decide(s, Admitted())
    assert of(effects, CreatePod) == [CreatePod(1, "b-t1-a1", "primary")]
    assert of(effects, RecordAttempt)[0].model == "primary"
    assert of(effects, RecordAttempt)[0].to_wire()["model"] == "primary"
    failed, _ = decide(run1, PodFinished(exited(4), None))
    assert failed.phase == "Backoff" and failed.last_failure == "RateLimited"
    pending, _ = decide(failed, BackoffElapsed(), NOW + timedelta(hours=1))
    run2, effects = decide(pending, Admitted())
    assert of(effects, CreatePod) == [CreatePod(2, "b-t1-a2", "fallback")]
    assert run2.last_model == "fallback"


def test_an_agent_error_keeps_the_model():
    s = state(models=("primary", "fallback"))
    run1, _ = decide(s, Admitted())
    failed, _ = decide(run1, PodFinished(exited(1), None))
    pending, _ = decide(failed, BackoffElapsed(), NOW + timedelta(hours=1))
    _, effects = decide(pending, Admitted())
    assert of(effects, CreatePod)[0].model == "primary"
