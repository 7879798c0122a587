"""Intake from Jira and Linear on the real API server (issue 54): a standing intake fed from the Jira stand-in and
one fed from the Linear stand-in (tracker_server.py: Jira's REST API v2; Linear's GraphQL executed on Linear's
schema) start child builds that finalize, write back (a comment, then a transition or a state change, seen by the
stand-in) and take webhook deliveries with each provider's signature scheme (a good one accepted, a bad one, a
replayed one and another provider's refused); a build's issue planner fed from each.

Child builds run the real agent runner (scripted backend) through the process kubelet and merge into a real git
repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time

import httpx
import pytest
import sample_repo
from k8s_builders import condition, create, dump, get, list_of
from test_delivery import add_tests, delivery_build, finalized, script_configmap
from tracker_server import tracker_server

from longshot_testing import wait_for

pytestmark = pytest.mark.integration

TOKEN = "tracker-api-token-0123456789"
EMAIL = "bot@example.com"
HOOK = "hook-s3cret-value"


def work(name, op):
    return [{"write": {"path": f"calc/{name}.py", "content": f"def {name}(a, b):\n    return a {op} b\n"}},
            {"write": {"path": f"tests/test_{name}.py", "content": add_tests(name, op)}},
            {"finish": f"Add {name}()"}]


def child_script():
    return {"roles": {"planner": [{"finish": {"summary": "one task", "tasks": [
        {"name": "fix", "description": "Do what the issue asks"}]}}]},
        "tasks": {"intake-i1-fix": work("add", "+"), "intake-i4-fix": work("mul", "*")}}


@pytest.fixture
def tracker():
    with tracker_server(time.time, TOKEN) as s:
        for key in ("PROJ", "ENG"):
            project = s.project(key)
            project.add(1, "Add add()", body="calc/add.py with add(a, b)", labels=["longshot"], assignees=["bot"])
            project.add(2, "A stranger's", labels=["longshot"], assignees=["bot"], author="mallory")
            project.add(3, "Not for the bot", labels=["question"], assignees=["bot"])
        yield s


def secrets(core_v1, namespace, *, email=None):
    data = {"token": TOKEN, **({"email": email} if email else {})}
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "tracker-token"}, "stringData": data})
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "intake-hook"}, "stringData": {"token": HOOK}})


def intake_build(url, provider, tracker_url, repository):
    b = delivery_build(url)
    b["metadata"]["name"] = "intake"
    b["spec"]["request"] = "Work on the issue below."
    b["spec"]["intake"] = {"tracker": {"provider": provider, "url": tracker_url, "repository": repository,
                                       "credentialsSecret": "tracker-token"},
                           "labels": ["longshot"], "assignee": "bot", "pollSeconds": 3600, "maxActiveBuilds": 3,
                           "webhook": {"name": "intake-hook"}}
    return b


def children(custom, namespace):
    return {b["metadata"]["name"]: b for b in list_of(custom, namespace, "buildrequests")
            if (b["metadata"].get("labels") or {}).get("longshot.dev/intake") == "intake"}


def phase(custom, namespace, name):
    return (get(custom, namespace, "buildrequests", name).get("status") or {}).get("phase")


def first_build_written_back(custom, namespace, project):
    """intake-i1 finalized; issue 1 closed with its two comments; the stranger's and the unlabelled issue left."""
    wait_for(lambda: phase(custom, namespace, "intake-i1") in ("Succeeded", "Failed"), timeout=240,
             what="issue 1's build finished")
    assert phase(custom, namespace, "intake-i1") == "Succeeded", dump(custom, namespace)
    wait_for(lambda: project.issues[1].state == "closed" and len(project.issues[1].comments) == 2, timeout=60,
             what="issue 1 closed with two comments")
    started, finished = project.issues[1].comments
    assert "started build `intake-i1`" in started and "[longshot:intake/intake-i1/started/1]" in started
    assert "`intake-i1` finished: Succeeded" in finished
    assert set(children(custom, namespace)) == {"intake-i1"}  # issue 2: a stranger's; issue 3: no label
    for n in (2, 3):
        assert project.issues[n].state == "open" and not project.issues[n].comments


def test_a_jira_intake_builds_transitions_to_done_and_takes_signed_deliveries(
        operator, operator_env, kubelet, core_v1, custom, namespace, tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, child_script())
    secrets(core_v1, namespace, email=EMAIL)
    create(custom, namespace, intake_build(url, "jira", tracker.jira_url, "PROJ"))
    project = tracker.projects["PROJ"]
    first_build_written_back(custom, namespace, project)
    # Jira Cloud: the search/jql endpoint, basic auth; closed with the transition into Done; the stranger's access
    # was asked (the permission search), a member's too
    calls = [r for r in tracker.api_requests() if r.path.startswith("/jira/")]
    assert any(r.path == "/jira/rest/api/2/search/jql" for r in calls)
    assert [r.body for r in calls if r.path.endswith("/PROJ-1/transitions")] == [{"transition": {"id": "31"}}]
    assert {r.query["accountId"] for r in calls if r.path.endswith("/permission/search")} == {"alice", "mallory"}
    assert all(r.headers["authorization"].startswith("Basic ") for r in calls)
    intake = get(custom, namespace, "buildrequests", "intake")
    assert TOKEN not in json.dumps(intake) and HOOK not in json.dumps(intake)

    # a new issue; pollSeconds is an hour, so only a webhook delivery brings it in
    project.add(4, "Add mul()", body="calc/mul.py", labels=["longshot"], assignees=["bot"])
    hook = f"http://127.0.0.1:{operator_env['LONGSHOT_WEBHOOK_PORT']}/intake/{namespace}/intake"
    body, headers = tracker.jira_event(HOOK)
    _, wrong = tracker.jira_event("wrong")
    refused = [httpx.post(hook, content=body, headers=wrong),
               # GitHub's header with Jira's HMAC: not Jira's scheme
               httpx.post(hook, content=body, headers={"X-Hub-Signature-256": headers["X-Hub-Signature"]}),
               httpx.post(hook, content=body)]
    assert [(r.status_code, r.text) for r in refused] == [(401, "no such intake, or a bad signature\n")] * 3
    assert "intake-i4" not in children(custom, namespace)
    good = httpx.post(hook, content=body, headers=headers)
    assert good.status_code == 202, good.text
    wait_for(lambda: "intake-i4" in children(custom, namespace), timeout=30, what="issue 4's build")
    wait_for(lambda: project.issues[4].comments, timeout=30, what="issue 4's started comment")


def test_a_linear_intake_builds_completes_the_issue_and_takes_signed_fresh_deliveries(
        operator, operator_env, kubelet, core_v1, custom, namespace, tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, child_script())
    secrets(core_v1, namespace)
    create(custom, namespace, intake_build(url, "linear", tracker.linear_url, "ENG"))
    project = tracker.projects["ENG"]
    first_build_written_back(custom, namespace, project)
    assert project.issues[1].linear_state == "st-done"  # the team's first state of type completed
    calls = [r for r in tracker.api_requests() if r.path == "/linear/graphql"]
    assert calls and all(r.headers["authorization"] == TOKEN for r in calls)
    assert all(r.status == 200 for r in calls), [r.answer for r in calls if r.status != 200]

    project.add(4, "Add mul()", body="calc/mul.py", labels=["longshot"], assignees=["bot"])
    hook = f"http://127.0.0.1:{operator_env['LONGSHOT_WEBHOOK_PORT']}/intake/{namespace}/intake"
    now_ms = int(time.time() * 1000)
    stale, stale_headers = tracker.linear_event(HOOK, timestamp_ms=now_ms - 120_000)  # a replay: 2 minutes old
    body, headers = tracker.linear_event(HOOK, timestamp_ms=now_ms)
    bad = dict(headers, **{"Linear-Signature": hmac.new(b"wrong", body, hashlib.sha256).hexdigest()})
    refused = [httpx.post(hook, content=stale, headers=stale_headers), httpx.post(hook, content=body, headers=bad),
               httpx.post(hook, content=body, headers={"X-Hub-Signature-256": "sha256=" + headers["Linear-Signature"]})]
    assert [(r.status_code, r.text) for r in refused] == [(401, "no such intake, or a bad signature\n")] * 3
    assert "intake-i4" not in children(custom, namespace)
    good = httpx.post(hook, content=body, headers=headers)
    assert good.status_code == 202, good.text
    wait_for(lambda: "intake-i4" in children(custom, namespace), timeout=30, what="issue 4's build")
    wait_for(lambda: project.issues[4].comments, timeout=30, what="issue 4's started comment")


def issue_script():
    return {"tasks": {"issue-1": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                                  {"finish": "add()"}],
                      "issue-2": [{"fail": {"class": "AgentError", "message": "out of my depth"}}]}}


@pytest.mark.parametrize("provider", ["jira", "linear"])
def test_a_builds_issue_planner_fed_from_jira_and_linear(operator, kubelet, core_v1, custom, namespace, tmp_path,
                                                         tracker, provider):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, issue_script())
    secrets(core_v1, namespace, email=EMAIL if provider == "jira" else None)
    key = "PROJ" if provider == "jira" else "ENG"
    tracker_url = tracker.jira_url if provider == "jira" else tracker.linear_url
    create(custom, namespace, delivery_build(url, planner={"source": "issues", "maxIterations": 1, "issues": {
        "provider": provider, "url": tracker_url, "repository": key, "labels": ["longshot"],
        "credentialsSecret": "tracker-token"}}, qualityGate={"profile": "minimal", "testCommand": "true"},
        retry={"maxAttempts": 1}))
    b = finalized(custom, namespace, timeout=150)
    job = wait_for(lambda: (lambda j: j if (j.get("status") or {}).get("mergedCommit") else None)(
        get(custom, namespace, "mergejobs", "demo-issue-1")), timeout=60, what="issue 1 merged")
    message = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log", "-1", "--format=%B",
                              job["status"]["mergedCommit"]], check=True, capture_output=True, text=True).stdout
    assert f"Refs {key}-1" in message  # the issue key, which Jira's and Linear's integrations link
    workers = {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "worker"}
    # the planner takes every open labelled issue (authors are the standing intake's filter); issue 2's task fails,
    # issue 1's merges
    assert workers == {"demo-issue-1", "demo-issue-2"}, dump(custom, namespace)
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    project = tracker.projects[key]
    wait_for(lambda: project.issues[1].comments and project.issues[2].comments, timeout=60,
             what="a result comment on issues 1 and 2")
    (c1,) = project.issues[1].comments
    assert "merged a change for this issue" in c1 and "[longshot:demo/demo-issue-1]" in c1
    assert "could not complete this issue" in project.issues[2].comments[0]
    assert not project.issues[3].comments
