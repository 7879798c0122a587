"""The standing intake (``spec.intake``) on the real API server: a BuildRequest that watches the local tracker
(tracker_server.py, GitHub's API) and starts a child build per eligible issue, comments, closes, takes webhook
deliveries and never starts two builds for one issue across an operator restart.

Child builds run the real agent runner (scripted backend) through the process kubelet and merge into a real git
repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time

import httpx
import pytest
import sample_repo
from k8s_builders import GROUP, VERSION, condition, create, dump, get, list_of
from test_delivery import add_tests, delivery_build, script_configmap
from tracker_server import tracker_server

import forge_contract
import github_wire as gw
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

TOKEN = "ghp_intake-token-0123456789"
HOOK = "hook-s3cret-value"


def child_script():
    def work(name, op):
        return [{"write": {"path": f"calc/{name}.py", "content": f"def {name}(a, b):\n    return a {op} b\n"}},
                {"write": {"path": f"tests/test_{name}.py", "content": add_tests(name, op)}},
                {"finish": f"Add {name}()"}]

    return {
        "roles": {"planner": [{"finish": {"summary": "one task", "tasks": [
            {"name": "fix", "description": "Do what the issue asks"}]}}]},
        "tasks": {"intake-i1-fix": work("add", "+"), "intake-i2-fix": work("mul", "*"),
                  "intake-i5-fix": work("sub", "-")},
    }


@pytest.fixture
def tracker():
    with tracker_server(time.time, TOKEN) as s:
        project = s.project("org/app")
        project.add(1, "Add add()", body="calc/add.py with add(a, b)", labels=["longshot"], assignees=["bot"])
        project.add(2, "Add mul()", body="calc/mul.py", labels=["longshot", "easy"], assignees=["bot"])
        project.add(3, "Not for the bot", labels=["question"], assignees=["bot"])
        project.add(4, "Someone else's", labels=["longshot"], assignees=["ann"])
        project.add(6, "A pull request", labels=["longshot"], assignees=["bot"], pull_request=True)
        yield s


def secrets(core_v1, namespace):
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "tracker-token"},
                                                 "stringData": {"token": TOKEN}})
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "intake-hook"},
                                                 "stringData": {"token": HOOK}})


def intake_build(url, tracker_url, poll_seconds=3600, **intake):
    b = delivery_build(url)
    b["metadata"]["name"] = "intake"
    b["spec"]["request"] = "Work on the issue below."
    b["spec"]["intake"] = {"tracker": {"provider": "github", "url": tracker_url, "repository": "org/app",
                                       "credentialsSecret": "tracker-token"},
                           "labels": ["longshot"], "assignee": "bot", "pollSeconds": poll_seconds,
                           "maxActiveBuilds": 3, "webhook": {"name": "intake-hook"}, **intake}
    return b


def children(custom, namespace):
    return {b["metadata"]["name"]: b for b in list_of(custom, namespace, "buildrequests")
            if (b["metadata"].get("labels") or {}).get("longshot.dev/intake") == "intake"}


def phase(custom, namespace, name):
    return (get(custom, namespace, "buildrequests", name).get("status") or {}).get("phase")


def sign(body: bytes, secret: str = HOOK) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_eligible_issues_become_builds_that_finalize_comment_close_and_a_webhook_brings_the_next(
        operator, operator_env, kubelet, core_v1, custom, namespace, tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, child_script())
    secrets(core_v1, namespace)
    create(custom, namespace, intake_build(url, tracker.github_url))
    project = tracker.projects["org/app"]

    def both_done():
        kids = children(custom, namespace)
        done = {n: (b.get("status") or {}).get("phase") for n, b in kids.items()}
        return kids if set(kids) == {"intake-i1", "intake-i2"} and all(
            p in ("Succeeded", "Failed") for p in done.values()) else None

    try:
        kids = wait_for(both_done, timeout=240, what="two child builds finished")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
    assert {n: b["status"]["phase"] for n, b in kids.items()} == {"intake-i1": "Succeeded",
                                                                 "intake-i2": "Succeeded"}, dump(custom, namespace)
    k1 = kids["intake-i1"]
    assert k1["metadata"]["annotations"]["longshot.dev/intake-issues"] == "1"
    assert k1["metadata"]["ownerReferences"][0]["name"] == "intake"
    assert "Add add()" in k1["spec"]["request"] and "intake" not in k1["spec"]
    # the intake itself never planned: no task of its own
    assert not [t for t in list_of(custom, namespace, "agenttasks") if t["spec"]["buildRef"]["name"] == "intake"]
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")

    def closed_and_commented():
        return all(project.issues[n].state == "closed" and len(project.issues[n].comments) == 2 for n in (1, 2))

    wait_for(closed_and_commented, timeout=60, what="issues 1 and 2 closed with two comments each")
    started, finished = project.issues[1].comments
    assert "started build `intake-i1`" in started
    assert "`intake-i1` finished: Succeeded" in finished
    # not eligible: another label, another assignee, a pull request
    for n in (3, 4, 6):
        assert project.issues[n].state == "open" and not project.issues[n].comments
    # the status is written after the tracker calls of the same reconcile
    def settled():
        b = get(custom, namespace, "buildrequests", "intake")
        return b if ((b.get("status") or {}).get("intake") or {}).get("active") == 0 else None

    intake = wait_for(settled, timeout=30, what="the intake's status: no build active")
    st = intake["status"]["intake"]
    assert st["lastPoll"] and st["started"] == 2 and st["waiting"] == 0
    assert {(e["build"], e["outcome"]) for e in st["builds"]} == {("intake-i1", "Succeeded"),
                                                                  ("intake-i2", "Succeeded")}
    assert (condition(intake, "Ready")["status"], condition(intake, "Ready")["reason"]) == ("True", "Watching")
    assert TOKEN not in json.dumps(intake) and HOOK not in json.dumps(intake)

    # a new issue; pollSeconds is an hour, so only a webhook delivery brings it in
    project.add(5, "Add sub()", body="calc/sub.py", labels=["longshot"], assignees=["bot"])
    hook = f"http://127.0.0.1:{operator_env['LONGSHOT_WEBHOOK_PORT']}/intake/{namespace}/intake"
    # a delivery as GitHub sends it (its payload and headers checked against GitHub's webhooks description), about
    # an issue 99 the tracker does not have: the body is never read, a delivery only brings the next poll forward
    body = json.dumps(gw.issues_event("opened", "org/app", gw.issue(
        "org/app", 99, "Not read", labels=["longshot"], assignees=["bot"], association="OWNER"))).encode()
    assert forge_contract.webhook_violations("issues", tracker.hook_headers("issues", body, HOOK), body) == []
    bad = httpx.post(hook, content=body, headers={"X-Hub-Signature-256": sign(body, "wrong"),
                                                  "X-GitHub-Event": "issues"})
    assert (bad.status_code, bad.text) == (401, "no such intake, or a bad signature\n")
    gitlab = httpx.post(hook, content=body, headers={"X-Gitlab-Token": "wrong"})
    # no such intake: the same answer as a bad signature (nothing tells a stranger which intakes exist)
    nowhere = httpx.post(hook.replace("/intake/" + namespace, "/intake/nowhere"), content=body,
                         headers={"X-Hub-Signature-256": sign(body)})
    assert (gitlab.status_code, gitlab.text) == (nowhere.status_code, nowhere.text) == (bad.status_code, bad.text)
    # the webhook is not served on the metrics port
    metrics_port = operator_env["LONGSHOT_METRICS_PORT"]
    assert httpx.post(f"http://127.0.0.1:{metrics_port}/intake/{namespace}/intake", content=body,
                      headers={"X-Hub-Signature-256": sign(body)}).status_code == 404
    big = b"x" * (1024 * 1024 + 1)
    assert httpx.post(hook, content=big, headers={"X-Hub-Signature-256": sign(big)}).status_code == 413
    assert "intake-i5" not in children(custom, namespace)  # nothing polled on a refused delivery
    good = httpx.post(hook, content=body, headers=tracker.hook_headers("issues", body, HOOK))
    assert good.status_code == 202, good.text
    wait_for(lambda: "intake-i5" in children(custom, namespace), timeout=30, what="issue 5's build")
    wait_for(lambda: phase(custom, namespace, "intake-i5") in ("Succeeded", "Failed"), timeout=180,
             what="issue 5's build finished")
    assert phase(custom, namespace, "intake-i5") == "Succeeded", dump(custom, namespace)
    wait_for(lambda: project.issues[5].state == "closed", timeout=60, what="issue 5 closed")
    assert set(children(custom, namespace)) == {"intake-i1", "intake-i2", "intake-i5"}
    # the body's number (99) was never used: only a poll
    assert all("/issues/99" not in r.path for r in tracker.api_requests())
    text = httpx.get(f"http://127.0.0.1:{operator_env['LONGSHOT_METRICS_PORT']}/metrics").text
    assert 'longshot_intake_webhooks_total{result="refused"}' in text
    assert "longshot_intake_builds_total" in text and 'longshot_intake_polls_total{result="ok"}' in text


def test_a_bad_tracker_setting_is_a_condition_naming_the_field(operator, core_v1, custom, namespace, tmp_path,
                                                               tracker):
    url = sample_repo.make(tmp_path)
    # its Secret does not exist yet; a configuration error is tried again after pollSeconds, at most 30 s
    create(custom, namespace, intake_build(url, tracker.github_url, poll_seconds=10))

    def ready_reason(want):
        def check():
            b = get(custom, namespace, "buildrequests", "intake")
            c = condition(b, "Ready")
            return b if c and c.get("reason") == want and c.get("observedGeneration") == b["metadata"][
                "generation"] else None
        return check

    b = wait_for(ready_reason("Configuration"), timeout=60, what="Ready=False/Configuration")
    assert "spec.intake.tracker.credentialsSecret" in condition(b, "Ready")["message"]
    assert condition(b, "Stalled")["status"] == "True"
    assert not children(custom, namespace) and not list_of(custom, namespace, "agenttasks")
    secrets(core_v1, namespace)
    # the next try reads the Secret: the intake watches, and starts issue 1's and 2's builds
    wait_for(ready_reason("Watching"), timeout=60, what="Ready=True/Watching")
    wait_for(lambda: set(children(custom, namespace)) == {"intake-i1", "intake-i2"}, timeout=30,
             what="the two builds")


def test_a_restarted_operator_never_starts_a_second_build_for_an_issue(operator_process, core_v1, custom, namespace,
                                                                      tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    secrets(core_v1, namespace)
    project = tracker.projects["org/app"]
    project.issues[2].assignees = []  # only issue 1 is eligible
    create(custom, namespace, intake_build(url, tracker.github_url, poll_seconds=10))
    first = operator_process()
    wait_for(lambda: (children(custom, namespace).get("intake-i1") or {}).get("metadata", {}).get(
        "annotations", {}).get("longshot.dev/intake-started"), timeout=60, what="issue 1's build, commented")
    assert len(project.issues[1].comments) == 1
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # as if it had died between posting the comment and recording it
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "intake-i1",
                                          {"metadata": {"annotations": {"longshot.dev/intake-started": None}}})
    before = get(custom, namespace, "buildrequests", "intake")["status"]["intake"]["lastPoll"]
    polls = len([r for r in tracker.api_requests() if r.method == "GET" and r.path.endswith("/issues")])

    operator_process()

    def polled_twice_more():
        n = len([r for r in tracker.api_requests() if r.method == "GET" and r.path.endswith("/issues")])
        b = get(custom, namespace, "buildrequests", "intake")
        return b if n >= polls + 2 and b["status"]["intake"]["lastPoll"] != before else None

    wait_for(polled_twice_more, timeout=60, what="two polls by the new operator")
    wait_for(lambda: (get(custom, namespace, "buildrequests", "intake-i1")["metadata"].get("annotations") or {}).get(
        "longshot.dev/intake-started"), timeout=30, what="the started comment recorded again")
    assert set(children(custom, namespace)) == {"intake-i1"}
    assert len(project.issues[1].comments) == 1  # the marker kept it from being posted twice
    b = get(custom, namespace, "buildrequests", "intake")
    assert b["status"]["intake"]["started"] == 1 and b["status"]["intake"]["active"] == 1
