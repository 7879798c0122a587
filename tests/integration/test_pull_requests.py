"""Delivery through pull requests (``spec.merge.delivery: pullRequest``) on the real API server, with real git and a
local forge (forge_server.py) whose merges really merge into the bare repository.

The queue still gates each candidate as it would land; instead of pushing the target, the operator opens a pull
request per task with the gate's status on it, waits for approval under branch protection, asks the forge to merge,
and follows what the forge did back into the MergeJob and the build's finalization.
"""

from __future__ import annotations

import subprocess

import pytest
import sample_repo
from forge_server import forge_server
from k8s_builders import condition, create, dump, get, list_of
from kubernetes.client.exceptions import ApiException
from test_delivery import SCRIPT, delivery_build, finalized, script_configmap

from longshot_testing import wait_for

TOKEN = "forge-token-0123456789"
PROJECT = "org/calc"


def finalization_status(b):
    c = condition(b, "Finalized")
    return c["status"], c["reason"]


@pytest.fixture
def forge():
    with forge_server(TOKEN) as s:
        yield s


def pr_build(url, forge_url, provider="github", **spec):
    merge = {"delivery": "pullRequest", "pullRequest": {
        "provider": provider, "apiUrl": forge_url, "project": PROJECT, "tokenSecretRef": {"name": "forge-token"},
        "mergeMethod": "merge", "labels": ["longshot"], "pollSeconds": 1}}
    return delivery_build(url, merge=merge, **spec)


def forge_secret(core_v1, namespace):
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "forge-token"}, "stringData": {"token": TOKEN}})


def independent_script():
    """add and mul, independent of each other (one pull request each)."""
    planner = {"finish": {"summary": "two functions", "tasks": [
        {"name": "add", "description": "Add add()", "scope": ["calc/add.py", "tests/test_add.py"]},
        {"name": "mul", "description": "Add mul()", "scope": ["calc/mul.py", "tests/test_mul.py"]}]}}
    return {"roles": {"planner": [planner]}, "tasks": SCRIPT["tasks"]}


def one_task_script(**tasks):
    planner = {"finish": {"summary": "one", "tasks": [{"name": "add", "description": "Add add()"}]}}
    return {"roles": {"planner": [planner]}, "tasks": {**SCRIPT["tasks"], **tasks}}


def job_phase(custom, namespace, name, phase, timeout=120):
    def reached():
        try:
            j = get(custom, namespace, "mergejobs", name)
        except ApiException:  # not created yet
            return None
        return j if (j.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(reached, timeout=timeout, what=f"MergeJob {name} {phase}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def open_pulls(forge, n, timeout=120, labelled=False):
    """The open pull requests once there are ``n``; ``labelled``: once each has its labels too (GitHub's API labels
    a pull request in a second call after opening it)."""
    def opened():
        pulls = [p for p in forge.pulls(PROJECT) if p.state == "open"]
        return pulls if len(pulls) >= n and (not labelled or all(p.labels for p in pulls)) else None

    return wait_for(opened, timeout=timeout, what=f"{n} open pull requests" + (", labelled" if labelled else ""))


def build_awaiting_forge(custom, namespace, text, timeout=90):
    def waiting():
        b = get(custom, namespace, "buildrequests", "demo")
        c = condition(b, "Reconciling") or {}
        return b if (c.get("status"), c.get("reason")) == ("True", "AwaitingForge") and text in c.get(
            "message", "") else None

    try:
        return wait_for(waiting, timeout=timeout, what="the build waiting on the forge")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def main_head(url):
    return subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "rev-parse", "main"], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_pull_request_per_task_with_the_gate_status_merged_by_the_forge_after_approval(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, independent_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, pr_build(url, forge.github_url))

    # both candidates passed their gate and wait on their pull requests; nothing was pushed to main
    for name in ("demo-add", "demo-mul"):
        job = job_phase(custom, namespace, name, "AwaitingForge")
        assert condition(job, "GatesPassed")["status"] == "True"
    pulls = open_pulls(forge, 2, labelled=True)
    assert sorted(p.head for p in pulls) == sorted(get(custom, namespace, "mergejobs", n)["spec"]["branch"]
                                                   for n in ("demo-add", "demo-mul"))
    assert all(p.base == "main" and p.labels == ["longshot"] for p in pulls)
    for p in pulls:
        head = forge.head_of(PROJECT, p.head)
        wait_for(lambda p=p, head=head: forge.statuses_of(PROJECT, head), timeout=60, what="the gate status")
        (status,) = forge.statuses_of(PROJECT, head)
        assert (status["state"], status["context"]) == ("success", "longshot/gate")
    # branch protection: the forge refuses until approved, and the job says so
    job = wait_for(lambda: (lambda j: j if "waiting for approval" in (condition(j, "AwaitingForge") or {}).get(
        "message", "") else None)(get(custom, namespace, "mergejobs", "demo-add")), timeout=60, what="waiting")
    assert condition(job, "AwaitingForge")["status"] == "True"
    assert job["status"]["pullRequest"]["number"] in {p.number for p in pulls}
    assert main_head(url) == initial
    # the build says it waits on the forge: how many pull requests, and the first one's address
    # (a MergeJob recording its pull request enqueues the build again: it may say "is opening" first)
    b = build_awaiting_forge(custom, namespace, "waiting for 2 pull requests on the forge (approvals, branch "
                                                "protection, the forge's merge); the first: "
                                                "https://github.example/org/calc/pull/")
    assert condition(b, "Ready")["reason"] == "AwaitingForge"
    assert condition(b, "Stalled")["status"] == "False"
    # the token never shows in a status or an Event
    assert TOKEN not in str(list_of(custom, namespace, "mergejobs"))
    assert TOKEN not in str(core_v1.list_namespaced_event(namespace).to_dict())

    for p in pulls:
        forge.review(PROJECT, p.number, "APPROVED", "lgtm")
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    for name in ("demo-add", "demo-mul"):
        job = get(custom, namespace, "mergejobs", name)
        assert job["status"]["phase"] == "Merged"
        assert condition(job, "Merged")["reason"] == "MergedOnForge"
        assert sample_repo.is_ancestor(url, job["status"]["mergedCommit"], "main")
    merged = {p.number: p for p in forge.pulls(PROJECT)}
    assert all(p.merged and p.merged_by == "longshot" for p in merged.values()) and len(merged) == 2
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")
    # every merge request to the forge named the tested commit
    merges = [r for r in forge.requests if r.method == "PUT" and r.path.endswith("/merge")]
    assert merges and all(r.body["sha"] and r.body["merge_method"] == "merge" for r in merges)


def test_a_refused_merge_waits_and_a_person_merging_on_the_forge_is_followed_back(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    forge.required_approvals = 2  # the forge's protection asks for more than Longshot's one approval
    create(custom, namespace, pr_build(url, forge.github_url))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (pull,) = open_pulls(forge, 1)
    forge.review(PROJECT, pull.number, "APPROVED")
    # Longshot asks to merge; the forge refuses (405) and the job keeps waiting with the forge's words
    job = wait_for(lambda: (lambda j: j if (condition(j, "AwaitingForge") or {}).get("reason") == "ForgeRefusedMerge"
                            else None)(get(custom, namespace, "mergejobs", "demo-add")), timeout=60,
                   what="the forge's refusal")
    assert "At least 2 approving reviews are required" in condition(job, "AwaitingForge")["message"]
    assert job["status"]["phase"] == "AwaitingForge"
    commit = forge.merge_as_human(PROJECT, pull.number)
    job = job_phase(custom, namespace, "demo-add", "Merged")
    assert job["status"]["mergedCommit"] == commit
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)


def test_a_pull_request_closed_without_merge_fails_its_job(operator, kubelet, core_v1, custom, namespace, tmp_path,
                                                           forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, pr_build(url, forge.github_url))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (pull,) = open_pulls(forge, 1)
    forge.close(PROJECT, pull.number)
    job = job_phase(custom, namespace, "demo-add", "Failed")
    assert condition(job, "Stalled")["reason"] == "ClosedWithoutMerge"
    assert condition(job, "Merged")["status"] == "False"
    assert main_head(url) == initial
    assert len(forge.pulls(PROJECT)) == 1  # never opened again


def test_changes_requested_on_the_pull_request_go_to_a_fixer_whose_commits_land_in_it(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    script_configmap(core_v1, namespace, one_task_script(**{"demo-add-fix": [
        {"write": {"path": "calc/add.py", "content": 'def add(a, b):\n    """Sum."""\n    return a + b\n'}},
        {"finish": "docstring"}]}))
    forge_secret(core_v1, namespace)
    create(custom, namespace, pr_build(url, forge.github_url))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (pull,) = open_pulls(forge, 1)
    forge.review(PROJECT, pull.number, "CHANGES_REQUESTED", "add() needs a docstring", user="carol",
                 comments=[{"path": "calc/add.py", "line": 1, "body": "say what it returns"}])
    job = job_phase(custom, namespace, "demo-add", "Failed")
    assert condition(job, "ChecksPassed")["reason"] == "ChangesRequested"
    fixer = get(custom, namespace, "agenttasks", "demo-add-fix")
    assert "add() needs a docstring" in fixer["spec"]["description"]
    assert "calc/add.py:1: say what it returns" in fixer["spec"]["description"]
    assert fixer["spec"]["branch"] == pull.head
    # the fixer's commit passes its gate and goes to the same pull request; the stale review no longer counts
    job_phase(custom, namespace, "demo-add-fix", "AwaitingForge", timeout=150)
    fix_job = wait_for(lambda: (lambda j: j if (j.get("status") or {}).get("pullRequest") else None)(
        get(custom, namespace, "mergejobs", "demo-add-fix")), timeout=60, what="the fixer's job on the forge")
    assert fix_job["status"]["pullRequest"]["number"] == pull.number
    wait_for(lambda: '"""Sum."""' in (sample_repo.show(url, "calc/add.py", pull.head) or ""), timeout=30,
             what="the fixer's commit on the pull request's branch")
    forge.review(PROJECT, pull.number, "APPROVED", "thanks", user="carol")
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    assert get(custom, namespace, "mergejobs", "demo-add-fix")["status"]["phase"] == "Merged"
    assert get(custom, namespace, "mergejobs", "demo-add")["status"]["phase"] == "Superseded"
    assert '"""Sum."""' in sample_repo.show(url, "calc/add.py")
    assert len(forge.pulls(PROJECT)) == 1


def test_gitlab_a_merge_request_with_the_gate_status_merged_after_approval(operator, kubelet, core_v1, custom,
                                                                         namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, pr_build(url, forge.gitlab_url, provider="gitlab"))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (mr,) = open_pulls(forge, 1)
    head = forge.head_of(PROJECT, mr.head)
    wait_for(lambda: forge.statuses_of(PROJECT, head), timeout=60, what="the gate status")
    assert [(x["state"], x["name"]) for x in forge.statuses_of(PROJECT, head)] == [("success", "longshot/gate")]
    assert mr.labels == ["longshot"]
    wait_for(lambda: "waiting for approval" in (condition(get(custom, namespace, "mergejobs", "demo-add"),
                                                          "AwaitingForge") or {}).get("message", ""),
             timeout=60, what="waiting for approval")
    assert main_head(url) == initial
    forge.review(PROJECT, mr.number, "APPROVED")
    job = job_phase(custom, namespace, "demo-add", "Merged")
    assert job["status"]["mergedCommit"] == main_head(url) != initial
    assert any(r.method == "PUT" and r.path.endswith(f"/merge_requests/{mr.number}/merge") for r in forge.requests)
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)


def test_per_build_one_pull_request_advanced_by_the_queue_and_followed_by_every_job(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, independent_script())
    forge_secret(core_v1, namespace)
    build = pr_build(url, forge.github_url)
    build["spec"]["merge"]["pullRequest"]["per"] = "build"
    create(custom, namespace, build)
    branch = f"longshot/{namespace}/demo/_pull"

    # both candidates were gated on the build branch and landed there, one after the other; one pull request
    jobs = {n: job_phase(custom, namespace, n, "AwaitingForge", timeout=150) for n in ("demo-add", "demo-mul")}
    assert all(j["spec"]["target"] == branch for j in jobs.values())
    (pull,) = open_pulls(forge, 1)
    assert (pull.head, pull.base) == (branch, "main")
    assert main_head(url) == initial
    head = forge.head_of(PROJECT, branch)
    for j in jobs.values():  # each job's tested commit is on the build branch
        assert sample_repo.is_ancestor(url, j["status"]["testedCommit"], head)
    assert sample_repo.show(url, "calc/add.py", branch) and sample_repo.show(url, "calc/mul.py", branch)
    # the gate status is on the head; the job of the older candidate says it follows the newer one
    wait_for(lambda: forge.statuses_of(PROJECT, head), timeout=60, what="the gate status on the build branch's head")
    assert [(x["state"], x["context"]) for x in forge.statuses_of(PROJECT, head)] == [("success", "longshot/gate")]
    older = next(n for n, j in jobs.items() if j["status"]["testedCommit"] != head)
    wait_for(lambda: "follows its outcome" in (condition(get(custom, namespace, "mergejobs", older),
                                                         "AwaitingForge") or {}).get("message", ""),
             timeout=60, what="the older job following the pull request")
    # two jobs, one pull request: the build counts it once
    b = build_awaiting_forge(custom, namespace, "waiting for 1 pull request on the forge")
    assert f"/pull/{pull.number}" in condition(b, "Reconciling")["message"]

    forge.review(PROJECT, pull.number, "APPROVED", "lgtm")
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    merged = forge.pulls(PROJECT)
    assert len(merged) == 1 and merged[0].merged and merged[0].merged_by == "longshot"
    for name in ("demo-add", "demo-mul"):
        job = get(custom, namespace, "mergejobs", name)
        assert job["status"]["phase"] == "Merged"
        assert job["status"]["mergedCommit"] == merged[0].merge_commit == main_head(url)
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")
    merges = [r for r in forge.requests if r.method == "PUT" and r.path.endswith("/merge")]
    assert merges and all(r.body["sha"] == head for r in merges)


def test_per_build_closed_without_merge_fails_every_job_on_it(operator, kubelet, core_v1, custom, namespace,
                                                               tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    build = pr_build(url, forge.github_url)
    build["spec"]["merge"]["pullRequest"]["per"] = "build"
    create(custom, namespace, build)
    job_phase(custom, namespace, "demo-add", "AwaitingForge", timeout=150)
    (pull,) = open_pulls(forge, 1)
    wait_for(lambda: (get(custom, namespace, "mergejobs", "demo-add").get("status") or {}).get("pullRequest"),
             timeout=60, what="the job knowing its pull request")
    forge.close(PROJECT, pull.number)
    job = job_phase(custom, namespace, "demo-add", "Failed")
    assert condition(job, "Stalled")["reason"] == "ClosedWithoutMerge"
    assert main_head(url) == initial


def test_gitlab_an_unresolved_discussion_on_the_tested_commit_goes_to_a_fixer(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    script_configmap(core_v1, namespace, one_task_script(**{"demo-add-fix": [
        {"write": {"path": "calc/add.py", "content": 'def add(a, b):\n    """Sum."""\n    return a + b\n'}},
        {"finish": "docstring"}]}))
    forge_secret(core_v1, namespace)
    create(custom, namespace, pr_build(url, forge.gitlab_url, provider="gitlab"))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (mr,) = open_pulls(forge, 1)
    forge.review(PROJECT, mr.number, "APPROVED")  # an approval does not outweigh an open thread
    thread = forge.discuss(PROJECT, mr.number, "add() needs a docstring", user="carol", file="calc/add.py", line=1)
    job = job_phase(custom, namespace, "demo-add", "Failed")
    assert condition(job, "ChecksPassed")["reason"] == "ChangesRequested"
    fixer = get(custom, namespace, "agenttasks", "demo-add-fix")
    assert "calc/add.py:1: add() needs a docstring" in fixer["spec"]["description"]
    assert fixer["spec"]["branch"] == mr.head
    # the fixer's commit goes to the same merge request; the thread, now on an earlier commit, holds it until resolved
    job_phase(custom, namespace, "demo-add-fix", "AwaitingForge", timeout=150)
    wait_for(lambda: "earlier commit" in (condition(get(custom, namespace, "mergejobs", "demo-add-fix"),
                                                    "AwaitingForge") or {}).get("message", ""),
             timeout=60, what="the stale thread holding the merge request")
    forge.resolve(PROJECT, mr.number, thread)
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    assert get(custom, namespace, "mergejobs", "demo-add-fix")["status"]["phase"] == "Merged"
    assert '"""Sum."""' in sample_repo.show(url, "calc/add.py")
    assert len(forge.pulls(PROJECT)) == 1


def test_a_fixer_whose_gate_fails_gets_a_failure_status_naming_the_step_on_the_pull_request(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    script_configmap(core_v1, namespace, one_task_script(**{"demo-add-fix": [
        {"write": {"path": "calc/add.py", "content": 'def add(a, b):\n    """Sum."""\n    return a - b\n'}},
        {"finish": "docstring"}]}))
    forge_secret(core_v1, namespace)
    build = pr_build(url, forge.github_url)
    build["spec"]["merge"]["maxFixers"] = 1  # the broken fix gets no fixer of its own
    create(custom, namespace, build)
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (pull,) = open_pulls(forge, 1)
    forge.review(PROJECT, pull.number, "CHANGES_REQUESTED", "add() needs a docstring", user="carol")
    job = job_phase(custom, namespace, "demo-add-fix", "Failed", timeout=150)
    assert condition(job, "GatesPassed")["reason"] == "Evicted"
    fix_commit = job["spec"]["commit"]
    assert forge.head_of(PROJECT, pull.head) == fix_commit  # the fixer pushed to the pull request's branch
    wait_for(lambda: forge.statuses_of(PROJECT, fix_commit), timeout=60, what="the failure status")
    assert [(x["state"], x["context"], x["description"]) for x in forge.statuses_of(PROJECT, fix_commit)] == [
        ("failure", "longshot/gate", "the quality gate failed at step test as it would land")]
    job = wait_for(lambda: (lambda j: j if (j["status"].get("pullRequest") or {}).get("statusPosted") else None)(
        get(custom, namespace, "mergejobs", "demo-add-fix")), timeout=60, what="the posted status recorded")
    assert job["status"]["pullRequest"]["number"] == pull.number
    assert TOKEN not in str(core_v1.list_namespaced_event(namespace).to_dict())
