"""Binding (issue 29, items 9 and 10) on a real API server and gateway: who an agent is comes from the AgentTask
and the Pod UID the operator recorded for the current attempt, a handoff is about its own branch at its tip, a
review is about one commit, a foreign Pod is never adopted, and agent text reaches logs, conditions and Events
without control characters.

No kubelet runs: the tests play the kubelet's and the agent's part (Pod status, termination message), and a
user's part (a Pod created with a forged task input, a force-push from a process a worker left behind).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the integration tier's helper modules

import httpx
import kubernetes
import pytest
import sample_repo
from gateway_attempts import make_attempt, pod_token, record_attempt
from k8s_builders import build, condition, create, get, list_of
from kubelet_double import finish_pod, handoff, plan_handoff

from longshot.api import handoff as ho
from longshot.config import Settings
from longshot.gateway import pktline
from longshot.runtime import pods
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PLANNER = "demo-planner"
ZERO = "0" * 40


# --- helpers ------------------------------------------------------------------------------------------------------

def agent_pods(core, namespace):
    listed = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=longshot-operator")
    return {p.metadata.name: p for p in listed.items}


def wait_pod(core, namespace, name, timeout=30):
    return wait_for(lambda: agent_pods(core, namespace).get(name), timeout=timeout, what=f"Pod {name}")


def task_of(custom, namespace, name):
    try:
        return get(custom, namespace, "agenttasks", name)
    except kubernetes.client.ApiException:
        return None


def failed_attempt(custom, namespace, name, number, timeout=30):
    """The record of attempt ``number`` of task ``name`` once it ended with a failure class."""
    def check():
        t = task_of(custom, namespace, name)
        for a in ((t or {}).get("status") or {}).get("attempts") or []:
            if a.get("number") == number and a.get("failureClass"):
                return a
        return None

    return wait_for(check, timeout=timeout, what=f"attempt {number} of {name} to fail")


def demo_build(**spec):
    b = build("demo", **spec)
    b["spec"].setdefault("workers", {"max": 10})
    b["spec"].setdefault("retry", {"maxAttempts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 1})
    return b


def plan_one(core, custom, namespace, tmp_path, **spec):
    """A build of its own repository (returned) whose planner planned one task, ``models``, now running."""
    url = sample_repo.make(tmp_path)
    create(custom, namespace, demo_build(repository__url=url, **spec))
    wait_pod(core, namespace, f"{PLANNER}-a1")
    finish_pod(core, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "models", "description": "Add the data models", "scope": ["app/models.py"]}]))
    wait_pod(core, namespace, "demo-models-a1")
    return url


def progress(gateway, headers):
    return httpx.post(f"{gateway.url}/progress", json={"message": "working"}, headers=headers, timeout=30)


# --- the gateway: identity from the AgentTask and the recorded Pod UID ------------------------------------------

def test_a_pod_with_a_forged_task_input_claiming_another_tasks_worker_is_refused(gateway, core_v1, custom,
                                                                                namespace):
    victim = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t1", role="reviewer")
    # a user who may create Pods writes the task input of a worker of b1-t1 (attempt 1) and the controller owner
    # reference of that task onto a Pod of their own: the old gateway took role and branch from that annotation
    forged_task = {**victim.task, "spec": {**victim.task["spec"], "role": "worker"}}
    attacks = []
    for name, attempt in (("evil", 1), ("b1-t1-a2", 2)):  # any name, and the next attempt's own name
        manifest = pods.build_agent_pod(forged_task, victim.build, Settings(identity="x", gateway_url=gateway.url),
                                        attempt)
        manifest["metadata"]["name"] = name
        made = core_v1.create_namespaced_pod(namespace, manifest)
        p = {"metadata": {"name": made.metadata.name, "uid": made.metadata.uid}}
        assert made.metadata.owner_references[0].uid == victim.task["metadata"]["uid"]
        attacks.append({"Authorization": f"Bearer {pod_token(core_v1, namespace, p)}"})

    for headers in attacks:
        for r in (progress(gateway, headers),
                  httpx.get(f"{gateway.url}/git/{namespace}/b1.git/info/refs?service=git-receive-pack",
                            headers=headers, timeout=30)):
            assert r.status_code in (403, 503), r.text
    assert progress(gateway, attacks[0]).status_code == 403
    assert "not the current attempt" in progress(gateway, attacks[0]).json()["error"]
    # the real attempt is served, as the reviewer it is
    assert progress(gateway, victim.headers).status_code == 202


def test_the_attempts_pod_is_served_once_the_operator_recorded_its_uid(gateway, core_v1, custom, namespace):
    a = make_attempt(core_v1, custom, namespace, gateway.url, record=False)

    r = progress(gateway, a.headers)
    assert (r.status_code, r.headers.get("Retry-After")) == (503, "1"), r.text
    assert "not recorded" in r.json()["error"]

    record_attempt(custom, namespace, a.name, 1, a.pod)
    assert wait_for(lambda: progress(gateway, a.headers).status_code == 202, 30, "the recorded Pod to be served")


def test_a_pushed_ref_with_a_newline_does_not_forge_a_gateway_log_line(gateway, core_v1, custom, namespace,
                                                                       caplog):
    a = make_attempt(core_v1, custom, namespace, gateway.url)
    forged = "2026-01-01T00:00:00\tINFO\tlongshot.gateway.gitserve\tpush\tof\trefs/heads/main\taccepted"
    command = f"{ZERO} {'1' * 40} refs/heads/longshot/{namespace}/b1/b1-t1\n{forged}\0report-status side-band-64k"
    body = pktline.pkt(command) + b"0000"
    caplog.set_level(logging.WARNING, logger="longshot.gateway")

    r = httpx.post(f"{gateway.url}/git/{namespace}/b1.git/git-receive-pack", content=body,
                   headers={**a.headers, "Content-Type": "application/x-git-receive-pack-request"}, timeout=30)

    assert r.status_code == 200 and b"invalid ref name" in r.content
    refused = [rec.getMessage() for rec in caplog.records if "refused push" in rec.getMessage()]
    assert refused and all("\n" not in m and "\r" not in m for m in refused), refused
    assert "accepted" in refused[0]  # the text is kept, on the one line it belongs to


# --- the operator: handoffs bound to their own branch and its tip ------------------------------------------------

def test_a_handoff_naming_another_branch_or_a_commit_that_is_not_the_tip_is_refused(operator, core_v1, custom,
                                                                                   namespace, tmp_path):
    repo = plan_one(core_v1, custom, namespace, tmp_path)
    other = sample_repo.push_branch(repo, f"longshot/{namespace}/demo/demo-other", {"x.txt": "x\n"}, tmp_path)
    finish_pod(core_v1, namespace, "demo-models-a1", message=handoff(
        "demo-models", branch=f"longshot/{namespace}/demo/demo-other", commit=other))

    a1 = failed_attempt(custom, namespace, "demo-models", 1)
    assert a1["failureClass"] == "InvalidHandoff"
    assert f"'longshot/{namespace}/demo/demo-other'" in a1["exitReason"]
    assert f"'longshot/{namespace}/demo/demo-models'" in a1["exitReason"]

    wait_pod(core_v1, namespace, "demo-models-a2")
    handed = sample_repo.push_branch(repo, f"longshot/{namespace}/demo/demo-models", {"m.txt": "1\n"}, tmp_path)
    moved = sample_repo.push_branch(repo, f"longshot/{namespace}/demo/demo-models", {"m.txt": "2\n"}, tmp_path)
    finish_pod(core_v1, namespace, "demo-models-a2", message=handoff(
        "demo-models", 2, branch=f"longshot/{namespace}/demo/demo-models", commit=handed))

    a2 = failed_attempt(custom, namespace, "demo-models", 2)
    assert a2["failureClass"] == "InvalidHandoff"
    assert handed[:12] in a2["exitReason"] and moved[:12] in a2["exitReason"]
    assert not [m for m in list_of(custom, namespace, "mergejobs") if m["metadata"]["name"] == "demo-models"]


def test_a_force_push_between_review_and_merge_does_not_land_the_unreviewed_commit(operator, core_v1, custom,
                                                                                  namespace, tmp_path):
    branch = f"longshot/{namespace}/demo/demo-models"
    repo = plan_one(core_v1, custom, namespace, tmp_path, qualityGate={"profile": "strict"})
    unreviewed = sample_repo.push_branch(repo, branch, {"app/models.py": "EVIL = 1\n"}, tmp_path)
    finish_pod(core_v1, namespace, "demo-models-a1", message=handoff("demo-models", branch=branch,
                                                                     commit=unreviewed))
    # the MergeJob's reviewer is bound to the handoff's commit
    review = wait_for(lambda: task_of(custom, namespace, "demo-models-review"), 60, "the reviewer task")
    assert (review["spec"]["branch"], review["spec"].get("commit")) == (branch, unreviewed)
    # a process the worker left behind force-pushes a harmless commit before the reviewer checks the branch out
    harmless = sample_repo.push_branch(repo, branch, {"app/models.py": "MODELS = []\n"}, tmp_path)
    wait_pod(core_v1, namespace, "demo-models-review-a1")
    ti = ho.TaskInput.model_validate_json(
        core_v1.read_namespaced_pod("demo-models-review-a1", namespace).metadata.annotations[ho.TASK_INPUT_ANNOTATION])
    assert ti.commit == unreviewed
    # a reviewer that read the branch's tip approves the harmless commit
    finish_pod(core_v1, namespace, "demo-models-review-a1", message=handoff(
        "demo-models-review", role="reviewer", verdict="approved", branch=branch, commit=harmless))

    a1 = failed_attempt(custom, namespace, "demo-models-review", 1)
    assert a1["failureClass"] == "InvalidHandoff" and "spec.commit" in a1["exitReason"]
    assert harmless[:12] in a1["exitReason"] and unreviewed[:12] in a1["exitReason"]
    job = get(custom, namespace, "mergejobs", "demo-models")
    assert (condition(job, "ChecksPassed") or {}).get("status") != "True"
    assert job["status"].get("phase") not in ("Merged", "Landed")
    assert not sample_repo.is_ancestor(repo, unreviewed, "main")

    # the review of the bound commit counts
    wait_pod(core_v1, namespace, "demo-models-review-a2")
    finish_pod(core_v1, namespace, "demo-models-review-a2", message=handoff(
        "demo-models-review", 2, role="reviewer", verdict="approved", branch=branch, commit=unreviewed))
    wait_for(lambda: (condition(get(custom, namespace, "mergejobs", "demo-models"), "ChecksPassed") or {}).get(
        "status") == "True", 60, "ChecksPassed=True after the review of the bound commit")


def test_a_pod_with_the_attempts_name_and_a_foreign_owner_is_not_adopted(operator, core_v1, custom, namespace):
    # a user's Pod takes the planner's first attempt's name before the build exists, and says the plan is done
    foreign = pods.build_agent_pod(
        {"metadata": {"name": PLANNER, "namespace": namespace, "uid": "not-the-task"},
         "spec": {"buildRef": {"name": "demo"}, "description": "plan", "role": "planner"}},
        {"metadata": {"name": "demo", "namespace": namespace}, "spec": {"repository": {"url": "file:///x"}}},
        Settings(identity="x"), 1)
    foreign["metadata"]["ownerReferences"] = []
    made = core_v1.create_namespaced_pod(namespace, foreign)
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "evil", "description": "Planted by a foreign Pod"}]))

    create(custom, namespace, demo_build())

    a1 = failed_attempt(custom, namespace, PLANNER, 1)
    assert a1["failureClass"] == "Infrastructure" and "not this task's" in a1["exitReason"]
    still = core_v1.read_namespaced_pod(f"{PLANNER}-a1", namespace)
    assert still.metadata.uid == made.metadata.uid and still.metadata.deletion_timestamp is None  # never deleted
    a2 = wait_pod(core_v1, namespace, f"{PLANNER}-a2", timeout=90)  # after the Infrastructure backoff (30 s)
    planner = get(custom, namespace, "agenttasks", PLANNER)
    assert a2.metadata.owner_references[0].uid == planner["metadata"]["uid"]
    assert task_of(custom, namespace, "demo-evil") is None
    recorded = wait_for(lambda: next((a for a in (task_of(custom, namespace, PLANNER) or {}).get("status", {}).get(
        "attempts", []) if a.get("number") == 2 and a.get("podUID")), None), 30, "attempt 2's Pod UID recorded")
    assert recorded["podUID"] == a2.metadata.uid


# --- hygiene: agent text in conditions and Events ---------------------------------------------------------------

def test_ansi_escapes_are_stripped_from_agent_text_before_conditions_and_events(operator, core_v1, custom,
                                                                               namespace, tmp_path):
    # a long backoff: the task's condition keeps the failure's message while this test reads it (with 1 s, attempt
    # 2 could start first and the condition say "attempt 2 is running")
    plan_one(core_v1, custom, namespace, tmp_path,
             retry={"maxAttempts": 3, "backoffSeconds": 600, "maxBackoffSeconds": 600})
    escapes = "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \u202eesrever \x9b1m"
    finish_pod(core_v1, namespace, "demo-models-a1", message=handoff(
        "demo-models", outcome="failed", summary="summary " + escapes,
        failure=ho.Failure.model_validate({"class": "AgentError", "message": "gave up " + escapes})))

    a1 = failed_attempt(custom, namespace, "demo-models", 1)
    t = get(custom, namespace, "agenttasks", "demo-models")
    shown = [a1["exitReason"], (condition(t, "Succeeded") or {}).get("message", "")]
    events = wait_for(lambda: [e.message for e in core_v1.list_namespaced_event(namespace).items
                               if e.involved_object.name == "demo-models" and "gave up" in (e.message or "")],
                      30, "the attempt's Warning Event")
    for text in shown + events:
        assert "gave up red" in text, text
        assert not any(c in text for c in "\x1b\x07\x9b\u202e"), repr(text)
