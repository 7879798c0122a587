"""Issue 14 on the real API server with real git and the process kubelet (agent Pods run the real runner with the
scripted backend): iterative planning, roadmap and issue intake, best-of-N with a judge, dependency policies,
hung attempts, questions and answers, merge approval."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import sample_repo
from k8s_builders import condition, create, dump, get, list_of
from test_delivery import delivery_build, finalized, script_configmap
from tracker_server import tracker_server

import status_tools as st
from longshot_testing import wait_for

TEST = sample_repo.TEST_COMMAND
GROUP, VERSION = "longshot.dev", "v1alpha1"


def unit_test(module: str, name: str, body: str) -> str:
    return (f"import unittest\n\nfrom calc.{module} import {name}\n\n\nclass T(unittest.TestCase):\n"
            f"    def test_it(self):\n        {body}\n")


def labels(obj) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def task_input(core_v1, namespace: str, pod: str) -> dict:
    p = core_v1.read_namespaced_pod(pod, namespace)
    return json.loads(p.metadata.annotations["longshot.dev/task-input"])


def git_out(url: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", url.removeprefix("file://"), *args], check=True,
                          capture_output=True, text=True).stdout


def patch(custom, namespace, plural, name, body):
    return custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)


# --- 1. iterative planning ---------------------------------------------------------------------------

ITERATIONS = {
    "roles": {"planner": {"iteration": {
        1: [{"finish": {"summary": "models first", "tasks": [
            {"name": "models", "description": "Add calc/models.py with a User class"}]}}],
        # iteration 2 starts from the new target tip: the merged models are there
        2: [{"read": {"path": "calc/models.py"}, "check": True},
            {"finish": {"summary": "api on the models", "tasks": [
                {"name": "api", "description": "Add calc/api.py using calc.models.User"}]}}],
        3: [{"finish": {"summary": "the request is met", "done": True}}],
    }}},
    "tasks": {
        "models": [{"write": {"path": "calc/models.py", "content": "class User:\n    name = 'ada'\n"}},
                   {"finish": "User model"}],
        # iteration 2's task needs iteration 1's merged code
        "api": [{"read": {"path": "calc/models.py"}, "check": True},
                {"write": {"path": "calc/api.py",
                           "content": "from calc.models import User\n\n\ndef user():\n    return User.name\n"}},
                {"write": {"path": "tests/test_api.py",
                           "content": unit_test("api", "user", "self.assertEqual(user(), 'ada')")}},
                {"finish": "api on User"}],
    },
}


def test_a_build_plans_again_on_the_merged_code_until_the_planner_is_done(operator, kubelet, core_v1, custom,
                                                                        namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, ITERATIONS)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 5}))

    b = finalized(custom, namespace, timeout=180)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    st = b["status"]
    assert st["iteration"] == 3 and condition(b, "Planned")["reason"] == "RequestMet"
    assert "iteration 3" in condition(b, "Planned")["message"]
    assert st["iterations"] == [{"number": 1, "tasks": 1, "merged": 1, "failed": 0},
                                {"number": 2, "tasks": 1, "merged": 1, "failed": 0},
                                {"number": 3, "tasks": 0, "merged": 0, "failed": 0}]
    ts = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert {"demo-planner", "demo-planner-i2", "demo-planner-i3"} <= set(ts)
    assert labels(ts["demo-models"])["longshot.dev/iteration"] == "1"
    assert labels(ts["demo-api"])["longshot.dev/iteration"] == "2"
    assert labels(ts["demo-planner-i2"])["longshot.dev/iteration"] == "2"
    # iteration 2's planner was told what iteration 1 did, and how it ended
    given = task_input(core_v1, namespace, "demo-planner-i2-a1")
    assert (given["iteration"], given["maxIterations"]) == (2, 5)
    (prev,) = given["previous"]
    assert prev["task"] == "models" and prev["outcome"] == "merged" and prev["filesChanged"] == ["calc/models.py"]
    assert prev["summary"] == "User model"
    assert task_input(core_v1, namespace, "demo-planner-a1")["iteration"] == 1
    # api ran on a target that had models merged, and both are on main
    models_job = get(custom, namespace, "mergejobs", "demo-models")
    api_base = ts["demo-api"]["status"]["handoff"]["baseCommit"]
    assert sample_repo.is_ancestor(url, models_job["status"]["mergedCommit"], api_base)
    assert sample_repo.show(url, "calc/api.py") and sample_repo.run_tests(url, tmp_path) == 0
    assert len(ts["demo-api"]["status"]["attempts"]) == 1  # its grep found the merged model at once


def test_planning_stops_at_max_iterations(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script = {"roles": {"planner": {"iteration": {
        1: [{"finish": {"summary": "one", "tasks": [{"name": "one", "description": "file one"}]}}],
        2: [{"finish": {"summary": "two", "tasks": [{"name": "two", "description": "file two"}]}}],
        3: [{"finish": {"summary": "three", "tasks": [{"name": "three", "description": "file three"}]}}]}}},
        "tasks": {n: [{"write": {"path": f"{n}.txt", "content": n}}, {"finish": n}] for n in ("one", "two", "three")}}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 2},
                                             qualityGate={"profile": "minimal", "testCommand": "true"}))
    b = finalized(custom, namespace, timeout=150)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    assert b["status"]["iteration"] == 2 and [i["tasks"] for i in b["status"]["iterations"]] == [1, 1]
    names = {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")}
    assert "demo-planner-i3" not in names and "demo-three" not in names
    assert sample_repo.show(url, "two.txt") == "two" and sample_repo.show(url, "three.txt") is None


# --- 2. intake: a roadmap ----------------------------------------------------------------------------

ROADMAP = "# Roadmap\n\n- [ ] add\n- [ ] mul\n  - [ ] mul docs\n- [x] skeleton\n"


def roadmap_script():
    return {"tasks": {
        # the first item's worker finds more work and writes it down: iteration 2 plans it
        "add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                {"edit": {"path": "ROADMAP.md", "old": "- [x] skeleton\n", "new": "- [x] skeleton\n- [ ] sub\n"}},
                {"finish": "add(), and sub is next"}],
        "mul": [{"read": {"path": "MUL.md"}, "check": True},
                {"write": {"path": "calc/mul.py", "content": "def mul(a, b):\n    return a * b\n"}},
                {"finish": "mul()"}],
        "mul-docs": [{"write": {"path": "MUL.md", "content": "mul multiplies\n"}}, {"finish": "mul docs"}],
        "sub": [{"write": {"path": "calc/sub.py", "content": "def sub(a, b):\n    return a - b\n"}},
                {"finish": "sub()"}],
    }}


def test_a_roadmap_is_planned_without_a_planner_and_checked_off_in_the_merges(operator, kubelet, core_v1, custom,
                                                                            namespace, tmp_path):
    url = sample_repo.make(tmp_path, {"ROADMAP.md": ROADMAP})
    script_configmap(core_v1, namespace, roadmap_script())
    create(custom, namespace, delivery_build(url, planner={"source": "roadmap", "maxIterations": 3},
                                             qualityGate={"profile": "minimal", "testCommand": TEST}))
    b = finalized(custom, namespace, timeout=180)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    ts = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert not [n for n, t in ts.items() if t["spec"]["role"] == "planner"]  # no planner Pod ran
    # nested items run first: mul depends on its sub-item
    assert ts["demo-mul"]["spec"]["dependsOn"] == ["demo-mul-docs"]
    assert {n: labels(ts[n])["longshot.dev/iteration"] for n in ("demo-add", "demo-mul", "demo-sub")} == {
        "demo-add": "1", "demo-mul": "1", "demo-sub": "2"}
    assert b["status"]["iteration"] == 3 and condition(b, "Planned")["reason"] == "RequestMet"
    # every item is checked off on main, each in the same commit as its work
    assert sample_repo.show(url, "ROADMAP.md") == ("# Roadmap\n\n- [x] add\n- [x] mul\n  - [x] mul docs\n"
                                                    "- [x] skeleton\n- [x] sub\n")
    for name, path in (("demo-add", "calc/add.py"), ("demo-mul", "calc/mul.py"), ("demo-sub", "calc/sub.py")):
        commit = get(custom, namespace, "mergejobs", name)["status"]["mergedCommit"]
        changed = git_out(url, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).split()
        assert sorted(changed) == sorted([path, "ROADMAP.md"]), (name, changed)
        item = name.removeprefix("demo-")
        assert f"- [x] {item}\n" in git_out(url, "show", f"{commit}:ROADMAP.md")
        assert f"- [ ] {item}\n" in git_out(url, "show", f"{commit}^:ROADMAP.md")


def test_a_missing_roadmap_stalls_the_build_until_the_path_is_fixed(operator, kubelet, core_v1, custom, namespace,
                                                                    tmp_path):
    url = sample_repo.make(tmp_path, {"ROADMAP.md": "- [ ] add\n"})
    script_configmap(core_v1, namespace, roadmap_script())
    create(custom, namespace, delivery_build(url, planner={"source": "roadmap", "roadmapPath": "docs/PLAN.md",
                                                           "maxIterations": 1},
                                             qualityGate={"profile": "minimal", "testCommand": "true"}))

    def stalled():
        b = get(custom, namespace, "buildrequests", "demo")
        c = condition(b, "Stalled")
        return b if c and c["status"] == "True" else None

    b = wait_for(stalled, timeout=60, what="Stalled=True")
    c = condition(b, "Stalled")
    assert c["reason"] == "Configuration" and "spec.planner.roadmapPath: docs/PLAN.md does not exist" in c["message"]
    assert condition(b, "Ready")["status"] == "False" and not list_of(custom, namespace, "agenttasks")
    patch(custom, namespace, "buildrequests", "demo", {"spec": {"planner": {"roadmapPath": "ROADMAP.md"}}})
    b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    assert sample_repo.show(url, "ROADMAP.md") == "- [x] add\n"


# --- 2. intake: an issue tracker ---------------------------------------------------------------------

TOKEN = "ghp_integration-token-0123456789"


@pytest.fixture
def tracker():
    with tracker_server(time.time, TOKEN) as s:
        project = s.project("org/app")
        project.add(1, "Add add()", body="calc/add.py with add(a, b)", labels=["longshot"])
        project.add(2, "Add mul()", body="calc/mul.py", labels=["longshot", "easy"])
        project.add(3, "Not for the bot", labels=["question"])
        project.add(4, "A pull request", labels=["longshot"], pull_request=True)
        yield s


def issues_build(url, tracker_url, **spec):
    return delivery_build(url, planner={"source": "issues", "maxIterations": 1, "issues": {
        "provider": "github", "url": tracker_url, "repository": "org/app", "labels": ["longshot"],
        "credentialsSecret": "tracker-token"}}, qualityGate={"profile": "minimal", "testCommand": "true"}, **spec)


def tracker_secret(core_v1, namespace, token=TOKEN):
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "tracker-token"},
                                                 "stringData": {"token": token}})


def issue_script():
    return {"tasks": {
        "issue-1": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                    {"finish": "add()"}],
        "issue-2": [{"fail": {"class": "AgentError", "message": "mul is out of my depth"}}],
    }}


def test_issues_become_tasks_whose_merges_reference_them_and_get_a_result_comment(
        operator, kubelet, core_v1, custom, namespace, tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, issue_script())
    tracker_secret(core_v1, namespace)
    create(custom, namespace, issues_build(url, tracker.github_url, retry={"maxAttempts": 1}))
    b = finalized(custom, namespace, timeout=150)
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    ts = {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "worker"}
    assert ts == {"demo-issue-1", "demo-issue-2"}  # labelled, open, no pull request
    # the build failed at once (issue 2's task failed for good); issue 1's branch still lands
    job = wait_for(lambda: (lambda j: j if (j.get("status") or {}).get("mergedCommit") else None)(
        get(custom, namespace, "mergejobs", "demo-issue-1")), timeout=60, what="issue 1 merged")
    assert "Refs #1" in git_out(url, "log", "-1", "--format=%B", job["status"]["mergedCommit"])
    project = tracker.projects["org/app"]

    def commented():
        return project.issues[1].comments and project.issues[2].comments

    wait_for(commented, timeout=60, what="a comment on issues 1 and 2")
    (c1,) = project.issues[1].comments
    assert "merged a change for this issue" in c1 and job["status"]["mergedCommit"] in c1
    assert "<!-- longshot:demo/demo-issue-1 -->" in c1
    (c2,) = project.issues[2].comments
    assert "could not complete this issue" in c2 and "mul is out of my depth" in c2
    assert not project.issues[3].comments
    # the token went only into the Authorization header
    assert all(TOKEN not in r.path and TOKEN not in r.query for r in tracker.api_requests())
    assert TOKEN not in json.dumps(list_of(custom, namespace, "buildrequests"))
    # comments are posted once: a restart or another reconcile finds the annotation (and the marker); the
    # annotation is written after the comment is posted
    wait_for(lambda: (get(custom, namespace, "agenttasks", "demo-issue-1")["metadata"].get("annotations") or {}).get(
        "longshot.dev/issue-comment") == "merged", timeout=30, what="issue 1's task annotated as commented")


def test_a_refused_token_stalls_and_a_rate_limit_waits_for_its_reset(operator, kubelet, core_v1, custom,
                                                                     namespace, tmp_path, tracker):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, issue_script())
    tracker_secret(core_v1, namespace, token="wrong")
    create(custom, namespace, issues_build(url, tracker.github_url, retry={"maxAttempts": 1}))

    def reason(want):
        def check():
            b = get(custom, namespace, "buildrequests", "demo")
            c = condition(b, "Ready")
            return b if c and c["reason"] == want else None
        return check

    b = wait_for(reason("AuthFailed"), timeout=60, what="Ready=False/AuthFailed")
    assert (condition(b, "Stalled")["status"], condition(b, "Stalled")["reason"]) == ("True", "AuthFailed")
    assert "credentialsSecret" in condition(b, "Stalled")["message"] and "wrong" not in json.dumps(b)
    # a fixed Secret and a spec edit: now the tracker's rate limit is spent for 8 s, longer than a reconcile waits
    core_v1.patch_namespaced_secret("tracker-token", namespace, {"stringData": {"token": TOKEN}})
    tracker.rate_limit(1, seconds=8)
    patch(custom, namespace, "buildrequests", "demo", {"spec": {"planner": {"issues": {"labels": ["longshot"],
                                                                                       "comment": False}}}})
    b = wait_for(reason("RateLimited"), timeout=60, what="Ready=False/RateLimited")
    assert condition(b, "Stalled")["status"] == "False" and condition(b, "Reconciling")["status"] == "True"
    b = finalized(custom, namespace, timeout=150)
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    assert not tracker.projects["org/app"].issues[1].comments  # comment: false


# --- 3. best-of-N with a judge -----------------------------------------------------------------------

def fanout_script(judge_pick: str = "demo-api-c3"):
    def candidate(body: str, test: str) -> list:
        return [{"write": {"path": "calc/api.py", "content": body}},
                {"write": {"path": "tests/test_api.py", "content": test}}, {"finish": "api"}]

    ok = unit_test("api", "answer", "self.assertEqual(answer(), 42)")
    return {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "api", "description": "answer()"}]}}],
                  "reviewer": {"judging": [{"finish": {"summary": "c3 is simplest", "winner": judge_pick,
                                                        "reasons": ["smallest diff", "clear name"]}}]}},
        "tasks": {
            "api-c1": candidate("def answer():\n    return 6 * 7\n", ok),
            "api-c2": candidate("def answer():\n    return 41\n", ok),  # its gate fails
            "api-c3": candidate("def answer():\n    return 42\n", ok),
        },
    }


def test_best_of_three_gates_each_candidate_and_merges_only_the_judges_pick(operator, kubelet, core_v1, custom,
                                                                           namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, fanout_script())
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1},
                                             fanout={"count": 3, "models": ["m-a", "m-b"]}))
    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    api = get(custom, namespace, "agenttasks", "demo-api")
    fan = api["status"]["fanout"]
    assert [(c["name"], c["gate"], c.get("model")) for c in fan["candidates"]] == [
        ("demo-api-c1", "Passed", "m-a"), ("demo-api-c2", "Failed", "m-b"), ("demo-api-c3", "Passed", "m-a")]
    assert fan["candidates"][1]["branch"] == f"longshot/{namespace}/demo/demo-api-c2"
    assert "failed its gate" in fan["candidates"][1]["reason"]
    assert fan["judgeTask"] == "demo-api-judge" and fan["winner"] == "demo-api-c3"
    assert fan["reasons"] == ["smallest diff", "clear name"]
    assert condition(api, "Succeeded")["reason"] == "Judged"
    # only the winner's branch has a MergeJob, and its code is on main
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    assert set(jobs) == {"demo-api"} and jobs["demo-api"]["spec"]["branch"] == f"longshot/{namespace}/demo/demo-api-c3"
    assert sample_repo.show(url, "calc/api.py") == "def answer():\n    return 42\n"
    # candidates ran in parallel, each with its own model; the judge saw the passing ones only
    assert task_input(core_v1, namespace, "demo-api-c2-a1")["backend"]["model"] == "m-b"
    judged = task_input(core_v1, namespace, "demo-api-judge-a1")["candidates"]
    assert [c["name"] for c in judged] == ["demo-api-c1", "demo-api-c3"] and all(c["gate"] == "Passed" for c in judged)
    ts = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert ts["demo-api-c1"]["metadata"]["ownerReferences"][0]["name"] == "demo-api"
    assert ts["demo-api-judge"]["spec"]["role"] == "reviewer"


def test_a_judge_that_names_no_passing_candidate_is_not_trusted(operator, kubelet, core_v1, custom, namespace,
                                                                tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, fanout_script(judge_pick="demo-api-c2"))
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}, fanout={"count": 3}))
    b = finalized(custom, namespace, timeout=240)
    # the agent itself refuses a failed candidate, so the judge fails: the task fails with that reason
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    api = get(custom, namespace, "agenttasks", "demo-api")
    assert api["status"]["phase"] == "Failed" and condition(api, "Succeeded")["reason"] == "NoCandidatePassed"
    assert "judge" in condition(api, "Succeeded")["message"]
    assert not list_of(custom, namespace, "mergejobs") and sample_repo.show(url, "calc/api.py") is None


def test_when_every_candidate_fails_the_task_fails_with_each_reason(operator, kubelet, core_v1, custom, namespace,
                                                                    tmp_path):
    url = sample_repo.make(tmp_path)
    script = fanout_script()
    script["tasks"] = {"api-c1": [{"fail": {"class": "AgentError", "message": "no idea"}}],
                       "api-c2": script["tasks"]["api-c2"]}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}, retry={"maxAttempts": 1},
                                             fanout={"count": 2}))
    b = finalized(custom, namespace, timeout=180)
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    api = get(custom, namespace, "agenttasks", "demo-api")
    reasons = api["status"]["fanout"]["reasons"]
    assert len(reasons) == 2 and "demo-api-c1: failed: " in reasons[0] and "no idea" in reasons[0]
    assert reasons[1].startswith("demo-api-c2: failed its gate")
    assert condition(api, "Stalled")["reason"] == "NoCandidatePassed"
    assert not list_of(custom, namespace, "mergejobs")


def test_candidates_on_two_backends_compared_without_a_judge_the_least_costly_merges(operator, kubelet, core_v1,
                                                                                      custom, namespace, tmp_path):
    """fanout.backends: one candidate runs the scripted agent, the other a CLI agent (the command backend); with
    judge: compare no judge task runs: both passed, cost and tokens tie (none used a model), and the CLI's
    candidate changed fewer files, so it wins and only its branch merges."""
    url = sample_repo.make(tmp_path)
    script = fanout_script()
    script["tasks"] = {"api-c1": script["tasks"]["api-c1"]}  # 6 * 7, with its own test: two files
    script_configmap(core_v1, namespace, script)
    cli = "mkdir -p calc && printf 'def answer():\\n    return 42\\n' > calc/api.py"
    create(custom, namespace, delivery_build(
        url, planner={"maxIterations": 1}, fanout={"count": 2, "backends": ["scripted", "command"],
                                                   "judge": "compare"},
        agent={"backend": "scripted", "script": {"name": "script"}, "command": cli}))
    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    api = get(custom, namespace, "agenttasks", "demo-api")
    fan = api["status"]["fanout"]
    assert [(c["name"], c["gate"], c.get("backend")) for c in fan["candidates"]] == [
        ("demo-api-c1", "Passed", "scripted"), ("demo-api-c2", "Passed", "command")]
    assert fan["winner"] == "demo-api-c2" and "judgeTask" not in fan
    assert fan["reasons"][0] == "compared on cost, then tokens, then files changed (judge: compare)"
    first = fan["reasons"][1]
    assert first.startswith("1. demo-api-c2 (command): passed its gate") and "1 file(s)" in first
    assert task_input(core_v1, namespace, "demo-api-c1-a1")["backend"]["name"] == "scripted"
    assert task_input(core_v1, namespace, "demo-api-c2-a1")["backend"]["name"] == "command"
    assert "demo-api-judge" not in {t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")}
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    assert jobs["demo-api"]["spec"]["branch"] == f"longshot/{namespace}/demo/demo-api-c2"
    assert sample_repo.show(url, "calc/api.py") == "def answer():\n    return 42\n"


def test_a_summarize_judge_compares_every_candidate_that_committed_and_its_summary_is_recorded(
        operator, kubelet, core_v1, custom, namespace, tmp_path):
    """judge: summarize: the judge is also shown the candidate that failed its gate, must compare all three by
    name, and its comparison lands in status.fanout.summary beside its pick; only the pick merges."""
    url = sample_repo.make(tmp_path)
    summary = ("demo-api-c1 computes 6 * 7 and tests it; demo-api-c2 returns 41, so its gate failed; "
               "demo-api-c3 returns the constant 42, the smallest change.")
    script = fanout_script()
    script["roles"]["reviewer"]["judging"][0]["finish"]["summary"] = summary
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1},
                                             fanout={"count": 3, "judge": "summarize"}))
    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    fan = get(custom, namespace, "agenttasks", "demo-api")["status"]["fanout"]
    assert fan["winner"] == "demo-api-c3" and fan["summary"] == summary
    assert fan["reasons"] == ["smallest diff", "clear name"]
    judge = get(custom, namespace, "agenttasks", "demo-api-judge")
    assert judge["metadata"]["annotations"]["longshot.dev/reduction"] == "summarize"
    given = task_input(core_v1, namespace, "demo-api-judge-a1")
    assert given["reduction"] == "summarize"
    assert [(c["name"], c["gate"]) for c in given["candidates"]] == [
        ("demo-api-c1", "Passed"), ("demo-api-c3", "Passed"), ("demo-api-c2", "Failed")]
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    assert jobs["demo-api"]["spec"]["branch"] == f"longshot/{namespace}/demo/demo-api-c3"
    assert sample_repo.show(url, "calc/api.py") == "def answer():\n    return 42\n"


# --- 4. awaits: dependency policies, progress and hung attempts --------------------------------------

def hand_task(name, depends_on, policy, description):
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"buildRef": {"name": "demo"}, "description": description, "dependsOn": depends_on,
                     "dependsOnPolicy": policy}}


def test_any_and_quorum_start_on_enough_merged_dependencies_and_all_blocks_on_a_failure(
        operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    files = {n: [{"write": {"path": f"{n}.txt", "content": n}}, {"finish": f"wrote {n}"}] for n in ("a", "c")}
    script = {"roles": {"planner": [{"finish": {"summary": "three", "tasks": [
        {"name": n, "description": f"file {n}"} for n in ("a", "b", "c")]}}]},
        "tasks": {**files, "b": [{"fail": {"class": "AgentError", "message": "b cannot be done"}}],
                  "any": [{"read": {"path": "c.txt"}, "check": True}, {"finish": "saw c"}],
                  "quorum": [{"read": {"path": "a.txt"}, "check": True}, {"read": {"path": "c.txt"}, "check": True},
                             {"finish": "saw a and c"}]}}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}, retry={"maxAttempts": 1},
                                             qualityGate={"profile": "minimal", "testCommand": "true"}))
    create(custom, namespace, hand_task("demo-any", ["demo-b", "demo-c"], {"type": "any"}, "after b or c"))
    create(custom, namespace, hand_task("demo-quorum", ["demo-a", "demo-b", "demo-c"], {"type": "quorum", "k": 2},
                                        "after two of a, b, c"))
    create(custom, namespace, hand_task("demo-all", ["demo-a", "demo-b"], {"type": "all"}, "after a and b"))
    b = finalized(custom, namespace, timeout=180)
    assert condition(b, "Finalized")["reason"] == "TasksFailed", dump(custom, namespace)
    ts = {t["metadata"]["name"]: t for t in list_of(custom, namespace, "agenttasks")}
    assert ts["demo-b"]["status"]["phase"] == "Failed"
    for name, needed in (("demo-any", ["demo-c"]), ("demo-quorum", ["demo-a", "demo-c"])):
        assert ts[name]["status"]["phase"] == "Succeeded", name
        given = task_input(core_v1, namespace, f"{name}-a1")
        assert sorted(d["task"] for d in given["dependencies"]) == sorted(n.removeprefix("demo-") for n in needed)
        for dep in needed:  # started from a target that has the dependencies' merged work
            merged = get(custom, namespace, "mergejobs", dep)["status"]["mergedCommit"]
            assert sample_repo.is_ancestor(url, merged, ts[name]["status"]["handoff"]["baseCommit"] or merged)
    blocked = ts["demo-all"]
    assert not blocked["status"].get("attempts")
    assert (condition(blocked, "Blocked")["status"], condition(blocked, "Blocked")["reason"]) == ("True",
                                                                                               "DependencyFailed")
    assert "demo-b failed" in condition(blocked, "Blocked")["message"]


@pytest.fixture
def heartbeat_bound(operator_env, monkeypatch):
    """The operator under test treats 4 s without a heartbeat as hung."""
    operator_env["LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS"] = "4"
    monkeypatch.setenv("LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS", "4")
    return 4


@pytest.fixture
def roomy_heartbeat_bound(operator_env, monkeypatch):
    """The operator under test treats 8 s without a heartbeat as hung. Silence counts from the attempt's admission,
    so an agent's start (its Pod made, its runner up, its first heartbeat through the gateway) must fit in it too:
    4 s did not on a loaded CI machine, where every attempt of a quick worker failed as hung."""
    operator_env["LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS"] = "8"
    monkeypatch.setenv("LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS", "8")
    return 8


def test_heartbeats_through_the_gateway_keep_a_long_attempt_alive(roomy_heartbeat_bound, operator, api_client,
                                                                   core_v1, custom, namespace, tmp_path):
    from process_kubelet import ProcessKubelet

    url = sample_repo.make(tmp_path)
    script = {"roles": {"planner": [{"run": {"command": "sleep 18", "check": True}},
                                    {"finish": {"summary": "slow", "tasks": [{"name": "a", "description": "a"}]}}]},
              "tasks": {"a": [{"write": {"path": "a.txt", "content": "a\n"}}, {"finish": "a"}]}}
    script_configmap(core_v1, namespace, script)
    # the runner beats every second; the attempt runs for 18 s, more than twice the bound
    with ProcessKubelet(api_client, namespace, tmp_path / "kubelet", env={"LONGSHOT_HEARTBEAT_SECONDS": "1"}):
        create(custom, namespace, delivery_build(url, planner={"maxIterations": 1},
                                                 qualityGate={"profile": "minimal", "testCommand": "true"}))
        b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    planner = get(custom, namespace, "agenttasks", "demo-planner")
    (attempt,) = planner["status"]["attempts"]
    assert not attempt.get("failureClass")
    progress = planner["status"]["progress"]
    assert progress["attempt"] == 1 and progress["lastHeartbeat"]


def test_a_silent_running_attempt_is_hung_killed_and_retried_as_timeout(heartbeat_bound, operator, core_v1, custom,
                                                                       namespace, tmp_path):
    from kubelet_double import run_pod

    script_configmap(core_v1, namespace, {"steps": [{"finish": "never runs"}]})
    create(custom, namespace, delivery_build(sample_repo.make(tmp_path), planner={"maxIterations": 1},
                                             retry={"backoffSeconds": 1}))
    # no kubelet: the test marks the Pod running, and its agent never reports
    wait_for(lambda: _pod(core_v1, namespace, "demo-planner-a1"), timeout=60, what="the planner's Pod")
    run_pod(core_v1, namespace, "demo-planner-a1")

    def failed():
        t = get(custom, namespace, "agenttasks", "demo-planner")
        atts = t["status"].get("attempts") or []
        return t if atts and atts[0].get("failureClass") else None

    t = wait_for(failed, timeout=40, what="attempt 1 failed")
    first = t["status"]["attempts"][0]
    assert first["failureClass"] == "Timeout" and "no heartbeat" in first["exitReason"]
    assert "LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS" in first["exitReason"]
    wait_for(lambda: _pod(core_v1, namespace, "demo-planner-a1") is None or None, timeout=30,
             what="the hung Pod deleted")
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo-planner").items
    assert any(e.reason == "HeartbeatLost" for e in events)
    # Timeout is retried: the next attempt gets a new Pod
    wait_for(lambda: _pod(core_v1, namespace, "demo-planner-a2"), timeout=60, what="attempt 2's Pod")
    t = wait_for(lambda: (lambda t: t if len(t["status"].get("attempts") or []) == 2 else None)(
        get(custom, namespace, "agenttasks", "demo-planner")), timeout=30, what="attempt 2 recorded")
    assert t["status"]["attempts"][1]["pod"] == "demo-planner-a2" and t["status"]["phase"] == "Running"


def _pod(core_v1, namespace, name):
    from kubernetes.client.exceptions import ApiException
    try:
        p = core_v1.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return None if p.metadata.deletion_timestamp else p


# --- 5. people in the loop ---------------------------------------------------------------------------

def test_a_question_waits_for_an_answer_while_other_work_goes_on(operator, kubelet, core_v1, custom, namespace,
                                                                 tmp_path):
    url = sample_repo.make(tmp_path)
    script = {"roles": {"planner": [{"finish": {"summary": "two", "tasks": [
        {"name": "server", "description": "the server's port"}, {"name": "docs", "description": "docs"}]}}]},
        "tasks": {
            "server": {"answered": [{"edit": {"path": "server.py", "old": "PORT = None", "new": "PORT = 8080"}},
                                    {"finish": "port 8080"}],
                       "steps": [{"write": {"path": "server.py", "content": "PORT = None\n"}},
                                 {"ask": "Which port, 8080 or 9090?"}]},
            "docs": [{"write": {"path": "DOCS.md", "content": "docs\n"}}, {"finish": "docs"}]}}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1},
                                             qualityGate={"profile": "minimal", "testCommand": "true"}))

    def asked():
        t = get(custom, namespace, "agenttasks", "demo-server")
        c = condition(t, "AwaitingInput")
        return t if c and c["status"] == "True" else None

    t = wait_for(asked, timeout=90, what="AwaitingInput=True")
    assert t["status"]["phase"] == "AwaitingInput" and t["status"]["question"] == "Which port, 8080 or 9090?"
    c = condition(t, "AwaitingInput")
    assert c["reason"] == "QuestionAsked" and c["message"] == "Which port, 8080 or 9090?"
    assert not t["status"]["attempts"][0].get("failureClass")
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo-server").items
    assert any(e.reason == "QuestionAsked" for e in events)
    assert not any(j["metadata"]["name"] == "demo-server" for j in list_of(custom, namespace, "mergejobs"))

    # the other task is merged meanwhile; the build says who waits, and once nothing else can run it is a wait on
    # a person, not a failure: Ready=False/AwaitingInput, Reconciling=False, Stalled=False (kstatus InProgress)
    def docs_merged():
        b = get(custom, namespace, "buildrequests", "demo")
        return b if sample_repo.show(url, "DOCS.md") and condition(b, "Reconciling")["reason"] == "AwaitingInput" \
            else None

    b = wait_for(docs_merged, timeout=90, what="docs merged and the build waiting on the question")
    assert condition(b, "Ready")["reason"] == "AwaitingInput"
    assert "task demo-server asked: Which port" in condition(b, "Ready")["message"]
    assert (condition(b, "Stalled")["status"], condition(b, "Reconciling")["status"]) == ("False", "False")
    assert condition(t, "Stalled")["status"] == "False"
    # what Argo CD shows of the objects the operator wrote (the chart's health checks; kstatus: test_status_tools)
    assert st.argo_health(b)[0] == "Suspended" and st.argo_health(t)[0] == "Suspended"

    patch(custom, namespace, "agenttasks", "demo-server", {"spec": {"answer": "8080, like the others"}})
    b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    t = get(custom, namespace, "agenttasks", "demo-server")
    assert len(t["status"]["attempts"]) == 2 and t["status"]["answer"] == "8080, like the others"
    assert condition(t, "AwaitingInput")["status"] == "False" and t["status"]["retryBase"] >= 1
    given = task_input(core_v1, namespace, "demo-server-a2")
    assert (given["question"], given["answer"]) == ("Which port, 8080 or 9090?", "8080, like the others")
    assert sample_repo.show(url, "server.py") == "PORT = 8080\n"


def test_merges_wait_for_approval_when_the_build_requires_it(operator, kubelet, core_v1, custom, namespace,
                                                             tmp_path):
    url = sample_repo.make(tmp_path)
    script = {"roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "a", "description": "a"}]}}]},
              "tasks": {"a": [{"write": {"path": "a.txt", "content": "a\n"}}, {"finish": "a"}]}}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}, merge={"requireApproval": True},
                                             qualityGate={"profile": "minimal", "testCommand": "true"}))

    def waiting():
        j = [j for j in list_of(custom, namespace, "mergejobs") if j["metadata"]["name"] == "demo-a"]
        return j[0] if j and (j[0].get("status") or {}).get("phase") == "AwaitingApproval" else None

    j = wait_for(waiting, timeout=90, what="MergeJob AwaitingApproval")
    c = condition(j, "AwaitingApproval")
    assert c["status"] == "True" and c["reason"] == "AwaitingApproval" and "spec.approved" in c["message"]
    assert condition(j, "ChecksPassed")["status"] == "True"
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo-a").items
    assert any(e.reason == "AwaitingApproval" and e.involved_object.kind == "MergeJob" for e in events)
    b = wait_for(lambda: (lambda b: b if condition(b, "Reconciling")["reason"] == "AwaitingApproval" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="the build waits for a person")
    assert (condition(b, "Ready")["reason"], condition(b, "Stalled")["status"]) == ("AwaitingApproval", "False")
    assert condition(j, "Stalled")["status"] == "False"
    assert st.argo_health(b)[0] == "Suspended" and st.argo_health(j)[0] == "Suspended"
    assert "MergeJob demo-a" in condition(b, "Ready")["message"]
    assert sample_repo.show(url, "a.txt") is None  # nothing merged without the approval

    patch(custom, namespace, "mergejobs", "demo-a", {"spec": {"approved": True}})
    b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    j = get(custom, namespace, "mergejobs", "demo-a")
    assert condition(j, "AwaitingApproval")["reason"] == "Approved" and j["status"]["phase"] == "Merged"
    assert sample_repo.show(url, "a.txt") == "a\n"
