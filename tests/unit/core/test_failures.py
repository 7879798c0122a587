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


# --- a repository that cannot be resolved or reached: Configuration, naming spec.repository.url ---------------

URL = "https://git.example.invalid/org/app.git"
VIA_GATEWAY = ("clone of the repository failed: remote: the gateway could not fetch the repository "
               "https://git.example.invalid/org/app.git: fatal: unable to access "
               "'https://git.example.invalid/org/app.git/': Could not resolve host: git.example.invalid; fatal: "
               "unable to access 'http://longshot-gateway.longshot:8080/git/app/': The requested URL returned "
               "error: 502")


def infra(message: str) -> Handoff:
    return Handoff(task="t1", attempt=1, role="worker", outcome="failed",
                   failure=Failure(failure_class="Infrastructure", message=message))


def test_a_repository_host_that_does_not_resolve_is_configuration_naming_the_field():
    out = failures.classify(pod_status(5), infra(VIA_GATEWAY), task="t1", attempt=1, repository=URL)
    assert out.failure_class == "Configuration"
    assert out.message.startswith("spec.repository.url: the repository host git.example.invalid does not resolve "
                                  "(Could not resolve host: git.example.invalid); fix the URL")
    # without the build's URL nothing changes (and the same failure was Infrastructure, retried 3 times)
    assert failures.classify(pod_status(5), infra(VIA_GATEWAY), task="t1", attempt=1).failure_class == \
        "Infrastructure"


@pytest.mark.parametrize(("url", "message"), [
    ("https://git.example.invalid/a.git", "fatal: unable to access 'x': Could not resolve host: git.example.invalid"),
    ("git@git.example.invalid:org/a.git", "ssh: Could not resolve hostname git.example.invalid: Name or service "
                                          "not known"),
    ("git://git.example.invalid/a.git", "fatal: unable to look up git.example.invalid (port 9418) (Name or service "
                                        "not known)"),
    ("http://10.0.0.7:3000/a.git", "fatal: unable to access 'http://10.0.0.7:3000/a.git/': Failed to connect to "
                                   "10.0.0.7 port 3000 after 0 ms: Couldn't connect to server"),
    ("http://Git.Example.com/a.git", "Failed to connect to git.example.com port 80: Connection refused"),
    ("ssh://git@git.example.com:2222/a.git", "ssh: connect to host git.example.com port 2222: Connection refused"),
    ("git://127.0.0.1:1/x.git", "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: "
                                "errno=Connection refused"),
])
def test_what_git_says_of_an_unresolvable_or_refusing_host_is_configuration(url, message):
    # the messages are git 2.39's own (curl, ssh and git:// transports), taken from real runs
    why = failures.unreachable_repository(message, url)
    assert why is not None and why.startswith("spec.repository.url: the repository host "), message


@pytest.mark.parametrize(("url", "message"), [
    # transient: the upstream timed out, answered 5xx, or the DNS server did not answer
    (URL, "fatal: unable to access 'x': Failed to connect to git.example.invalid port 443 after 130001 ms: "
          "Connection timed out"),
    (URL, "fatal: unable to access 'x': The requested URL returned error: 503"),
    ("git@git.example.invalid:a.git", "ssh: Could not resolve hostname git.example.invalid: Temporary failure in "
                                      "name resolution"),
    # another host: the gateway's own Service name is the cluster's problem, not the spec's
    (URL, "fatal: unable to access 'http://longshot-gateway.longshot:8080/git/a/': Could not resolve host: "
          "longshot-gateway.longshot"),
    (URL, "Failed to connect to longshot-gateway.longshot port 8080 after 1 ms: Couldn't connect to server"),
    # no host to compare with
    ("file:///srv/git/a.git", "Could not resolve host: a"),
])
def test_transient_failures_and_other_hosts_stay_infrastructure(url, message):
    assert failures.unreachable_repository(message, url) is None
    out = failures.classify(pod_status(5), infra(message), task="t1", attempt=1, repository=url)
    assert out.failure_class == "Infrastructure"


def test_only_infrastructure_failures_are_reclassified():
    # an agent error that merely quotes such a line (a test's output) is the agent's
    h = Handoff(task="t1", attempt=1, role="worker", outcome="failed",
                failure=Failure(failure_class="AgentError", message=VIA_GATEWAY))
    assert failures.classify(pod_status(1), h, task="t1", attempt=1, repository=URL).failure_class == "AgentError"


def test_the_exit_code_path_is_reclassified_too():
    st = pod_status(5, message="clone failed: Could not resolve host: git.example.invalid")
    out = failures.classify(st, None, task="t1", attempt=1, repository=URL)
    assert out.failure_class == "Configuration" and out.exit_code == 5


@pytest.mark.parametrize(("url", "host"), [
    ("https://user:tok@Git.Example.com:8443/a.git", "git.example.com"), ("git@host.example:org/a", "host.example"),
    ("ssh://git@[::1]:22/a.git", "::1"), ("file:///srv/a.git", None), ("host:path", "host")])
def test_repository_host(url, host):
    assert failures.repository_host(url) == host
