"""A spec that cannot work stops at once and says which field and how to fix it (issue 12), on a real API server:
no Pod is created, the build is Stalled with reason Configuration (or TaskBlocked naming the task), and editing
the spec resumes it."""

from __future__ import annotations

import pytest
from k8s_builders import build, condition, create, get
from kubelet_double import finish_pod
from test_orchestration import PLANNER, agent_pods, wait_pod

from longshot_testing import wait_for


def stalled(custom, namespace, reason: str, timeout: float = 30):
    def check():
        b = get(custom, namespace, "buildrequests", "demo")
        s = condition(b, "Stalled") or {}
        return b if s.get("status") == "True" and s.get("reason") == reason else None

    return wait_for(check, timeout=timeout, what=f"Stalled=True/{reason}")


def patch_spec(custom, namespace, spec):
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": spec})


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"repository__baseBranch": "release"}, "spec.repository.baseBranch", "branch 'release' does not exist"),
    ({"repository__credentialsSecret": "missing-token"}, "spec.repository.credentialsSecret",
     "Secret 'missing-token' does not exist"),
    ({"repository__url": "https://git.nonexistent.invalid/org/app.git"}, "spec.repository.url",
     "is not a reachable git repository"),
], ids=["missing-base-branch", "missing-secret", "invalid-url"])
def test_a_spec_error_stops_before_any_pod_names_the_field_and_an_edit_resumes(
        operator, core_v1, custom, namespace, spec, field, words, sample_repository):
    create(custom, namespace, build("demo", **spec))
    b = stalled(custom, namespace, "Configuration")
    ready = condition(b, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Configuration")
    assert ready["message"].startswith(field) and words in ready["message"]
    assert condition(b, "Reconciling")["status"] == "False"
    assert agent_pods(core_v1, namespace) == {}  # nothing ran, nothing retried
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo").items
    assert any(e.reason == "Configuration" and field in e.message for e in events)
    if field == "spec.repository.url":
        return  # the URL is immutable: a new BuildRequest is the fix (the API server says so on an edit)
    # fix the spec: the check runs again and the build goes on
    patch_spec(custom, namespace, {"repository": {"baseBranch": "main", "credentialsSecret": None}})
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    # the build's own status write clears Stalled, in the same or a later reconcile than the Pod's creation
    wait_for(lambda: (condition(get(custom, namespace, "buildrequests", "demo"), "Stalled") or {}).get("status")
             == "False", timeout=30, what="Stalled=False after the edit")


def test_a_secret_without_the_key_is_named(operator, core_v1, custom, namespace):
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "git-token"},
                                                 "stringData": {"user": "bot"}})
    create(custom, namespace, build("demo", repository__credentialsSecret="git-token"))
    b = stalled(custom, namespace, "Configuration")
    assert "Secret 'git-token' has none of the keys token, password, ssh-privatekey" in condition(b, "Ready")["message"]


def test_an_image_that_cannot_be_pulled_stops_the_task_and_the_build_names_it(operator, core_v1, custom, namespace):
    create(custom, namespace, build("demo", agent__image="registry.invalid/agent:nope"))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    # the kubelet's word: the image is not there and will not be pulled
    pod = core_v1.read_namespaced_pod(f"{PLANNER}-a1", namespace)
    core_v1.patch_namespaced_pod_status(f"{PLANNER}-a1", namespace, {"status": {"phase": "Pending",
        "containerStatuses": [{"name": "agent", "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"waiting": {"reason": "ErrImageNeverPull",
                                                                        "message": "image not present"}}}]}})
    b = stalled(custom, namespace, "TaskBlocked")
    message = condition(b, "Ready")["message"]
    assert message.startswith(f"task {PLANNER}:") and "spec.agent.image" in message
    task = get(custom, namespace, "agenttasks", PLANNER)
    assert task["status"]["phase"] == "Failed" and task["status"]["attempts"][-1]["failureClass"] == "Configuration"
    assert len(task["status"]["attempts"]) == 1  # not retried with backoff
    assert condition(task, "Stalled")["reason"] == "Configuration"
    # editing the build's spec (the image) resumes the stopped task with a new attempt
    patch_spec(custom, namespace, {"agent": {"image": "longshot-agent:dev"}})
    wait_pod(core_v1, namespace, f"{PLANNER}-a2")
    finish_pod(core_v1, namespace, f"{PLANNER}-a2", exit_code=1, reason="Error")


def test_a_runtime_class_that_does_not_exist_stops_the_build_and_one_that_does_reaches_its_pods(
        operator, core_v1, custom, namespace, kubectl, sample_repository):
    """``spec.agent.runtimeClassName`` (issue 56): a RuntimeClass missing from the cluster is a Configuration stop
    naming the field, before any Pod; once it exists and the spec names it, the build's Pods carry it (the real API
    server's RuntimeClass admission accepts them)."""
    name = f"sandboxed-{namespace[-6:]}"
    create(custom, namespace, build("demo", agent__runtimeClassName=name))
    b = stalled(custom, namespace, "Configuration")
    ready = condition(b, "Ready")
    assert ready["message"].startswith(f"spec.agent.runtimeClassName: RuntimeClass '{name}' does not exist")
    assert agent_pods(core_v1, namespace) == {}
    kubectl("apply", "-f", "-", input=f'{{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", '
                                      f'"metadata": {{"name": "{name}"}}, "handler": "runc"}}')
    try:
        patch_spec(custom, namespace, {"agent": {"runtimeClassName": name, "timeoutSeconds": 1801}})
        pod = wait_pod(core_v1, namespace, f"{PLANNER}-a1")
        assert pod.spec.runtime_class_name == name
    finally:
        kubectl("delete", "runtimeclass", name, "--wait=false", check=False)
