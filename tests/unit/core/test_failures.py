from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from longshot.api.handoff import Failure, Handoff, HandoffError
from longshot.core import failures

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def pod_status(exit_code: int | None = 0, *, reason: str | None = None, term_reason: str | None = None,
               phase: str | None = None, message: str = "", waiting: str | None = None) -> dict[str, Any]:
    """A Pod status as the API server returns it."""
    state: dict[str, Any] = {}
    if waiting is not None:
        state["waiting"] = {"reason": waiting, "message": "boom"}
    elif exit_code is not None:
        state["terminated"] = {"exitCode": exit_code, "reason": term_reason or
                               ("Completed" if exit_code == 0 else "Error"), "message": message}
    st: dict[str, Any] = {
        "phase": phase or ("Pending" if waiting else "Succeeded" if exit_code == 0 else "Failed"),
        "containerStatuses": [{"name": "agent", "state": state}] if state else [],
    }
    if reason:
        st["reason"] = reason
    return st


def handoff(outcome: str = "succeeded", *, failure: str | None = None, task: str = "t1",
            attempt: int = 1) -> Handoff:
    return Handoff(task=task, attempt=attempt, role="worker", outcome=outcome,  # type: ignore[arg-type]
                   branch="longshot/b/t1", commit="abcdef1",
                   failure=Failure(failure_class=failure, message="said so") if failure else None)


def test_success():
    out = failures.classify(pod_status(0), handoff(), task="t1", attempt=1)
    assert out.ok and out.failure_class is None and out.exit_code == 0


def test_oom_killed():
    out = failures.classify(pod_status(137, term_reason="OOMKilled"), None)
    assert out.failure_class == "OOMKilled"
    assert "memory" in out.message


def test_deadline_exceeded_is_timeout():
    st = {**pod_status(137, reason="DeadlineExceeded", phase="Failed"), "startTime": "2025-01-01T00:00:00Z"}
    assert failures.classify(st, None).failure_class == "Timeout"


def test_a_pod_that_never_started_is_not_called_a_timeout():
    """Issue 12: a Pod stuck in ContainerCreating until its deadline must not advise a longer timeout."""
    st = {**pod_status(waiting="CreateContainerConfigError"), "phase": "Failed", "reason": "DeadlineExceeded"}
    out = failures.classify(st, None)
    assert out.failure_class == "Configuration" and "timeoutSeconds" not in out.message
    assert "never started" in out.message
    st = {**pod_status(waiting="ContainerCreating"), "phase": "Failed", "reason": "DeadlineExceeded"}
    assert failures.classify(st, None).failure_class == "Infrastructure"


def test_eviction_is_infrastructure():
    st = pod_status(None, reason="Evicted", phase="Failed")
    out = failures.classify(st, None)
    assert out.failure_class == "Infrastructure" and out.reason == "Evicted"


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"])
def test_image_pull_and_config_errors_are_configuration(reason):
    out = failures.classify(pod_status(waiting=reason), None)
    assert out.failure_class == "Configuration"
    assert reason in out.message and "spec.agent" in out.message


def test_other_start_errors_are_infrastructure():
    assert failures.classify(pod_status(waiting="RunContainerError"), None).failure_class == "Infrastructure"


@pytest.mark.parametrize(("code", "cls"), [(1, "AgentError"), (3, "Auth"), (4, "RateLimited"),
                                           (5, "Infrastructure"), (2, "Configuration"), (6, "Timeout"),
                                               (7, "BudgetExceeded"), (143, "Infrastructure"), (9, "AgentError")])
def test_exit_codes(code, cls):
    assert failures.classify(pod_status(code), None).failure_class == cls


def test_handoff_failure_class_wins_over_exit_code_and_kubelet():
    st = pod_status(1)
    assert failures.classify(st, handoff("failed", failure="RateLimited")).failure_class == "RateLimited"
    st = pod_status(None, reason="DeadlineExceeded", phase="Failed")
    assert failures.classify(st, handoff("failed", failure="Auth")).failure_class == "Auth"


@pytest.mark.parametrize("h", [None, HandoffError("invalid handoff: outcome: bad")])
def test_exit_zero_without_valid_handoff_is_invalid_handoff(h):
    out = failures.classify(pod_status(0), h)
    assert out.failure_class == "InvalidHandoff"
    if h is not None:
        assert "outcome" in out.message


def test_handoff_of_another_task_or_attempt_is_invalid():
    assert failures.classify(pod_status(0), handoff(task="other"), task="t1").failure_class == "InvalidHandoff"
    assert failures.classify(pod_status(0), handoff(attempt=2), attempt=1).failure_class == "InvalidHandoff"


def test_failed_outcome_without_failure_is_agent_error():
    assert failures.classify(pod_status(0), handoff("failed")).failure_class == "AgentError"


def test_stuck_waiting():
    st = pod_status(waiting="ImagePullBackOff")
    assert failures.stuck(st, created=T0, now=T0 + timedelta(seconds=10)) is None
    out = failures.stuck(st, created=T0, now=T0 + timedelta(seconds=300))
    assert out is not None and out.failure_class == "Configuration" and "spec.agent.image" in out.message
    out = failures.stuck(pod_status(waiting="RunContainerError"), created=T0, now=T0 + timedelta(seconds=300))
    assert out is not None and out.failure_class == "Infrastructure"
    assert failures.stuck(pod_status(waiting="InvalidImageName"), created=T0, now=T0) is not None
    assert failures.stuck(pod_status(waiting="ContainerCreating"), created=T0,
                          now=T0 + timedelta(hours=1)) is None
    assert failures.stuck(pod_status(0), created=T0, now=T0 + timedelta(hours=1)) is None


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_failed_mount_is_a_configuration_error_only_when_it_goes_on_for_the_grace_from_its_first_failure():
    # bench-e2e with 2 replicas: a Pod waited 78 s for room (Insufficient cpu), was bound, and the kubelet's first
    # token request was refused once ("a pod scheduled on a different node": the API server's cache had not seen
    # the binding); counted from the Pod's creation, that one failure stopped the task as a Configuration error.
    scheduled = T0 + timedelta(seconds=78)
    pending = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": _iso(scheduled)}]}
    events = [{"reason": "FailedMount", "firstTimestamp": _iso(scheduled + timedelta(seconds=1)),
               "message": 'failed to fetch token: node requested token bound to a pod scheduled on a different node'}]
    at = scheduled + timedelta(seconds=2)
    assert failures.stuck(pending, created=T0, now=at, events=events) is None
    assert failures.stuck(pending, created=T0, now=scheduled + timedelta(seconds=30), events=events) is None
    out = failures.stuck(pending, created=T0, now=scheduled + timedelta(seconds=31), events=events)
    assert out is not None and out.failure_class == "Configuration" and "different node" in out.message
    # an event without a time counts from the scheduling, not from the creation
    untimed = [{"reason": "FailedMount", "message": 'configmap "script" not found'}]
    assert failures.stuck(pending, created=T0, now=scheduled + timedelta(seconds=29), events=untimed) is None
    assert failures.stuck(pending, created=T0, now=scheduled + timedelta(seconds=30), events=untimed) is not None


def test_a_pull_error_counts_its_grace_from_the_scheduling_not_from_the_creation():
    scheduled = T0 + timedelta(seconds=120)
    st = pod_status(waiting="ImagePullBackOff")
    st["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _iso(scheduled)}]
    assert failures.stuck(st, created=T0, now=scheduled + timedelta(seconds=10)) is None
    assert failures.stuck(st, created=T0, now=scheduled + timedelta(seconds=60)) is not None
    st["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    assert failures.stuck(st, created=T0, now=T0 + timedelta(seconds=60)) is not None  # not bound: from creation


def test_failed_mount_events_are_a_configuration_error_after_a_grace():
    pending = {"phase": "Pending"}
    events = [{"reason": "FailedMount", "message": 'configmap "script" not found'}]
    assert failures.stuck(pending, created=T0, now=T0 + timedelta(seconds=5), events=events) is None
    out = failures.stuck(pending, created=T0, now=T0 + timedelta(seconds=40), events=events)
    assert out is not None and out.failure_class == "Configuration" and 'configmap "script"' in out.message
