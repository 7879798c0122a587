"""Handing a pull request to the forge's auto-merge (``spec.merge.pullRequest.autoMerge``) on the real API server,
with real git and the local forge (forge_server.py): once the gate passed, the operator asks the forge to merge
when its own rules pass (GitHub's GraphQL ``enablePullRequestAutoMerge``, checked against GitHub's published schema
when the forge fixture ends; GitLab's ``merge_when_pipeline_succeeds``), never merges itself, and follows the
forge's merge (or its turning auto-merge off) back into the MergeJob."""

from __future__ import annotations

import pytest
import sample_repo
from forge_server import forge_server
from k8s_builders import condition, create, dump, get
from test_delivery import finalized, script_configmap
from test_pull_requests import (
    PROJECT,
    TOKEN,
    finalization_status,
    forge_secret,
    job_phase,
    main_head,
    one_task_script,
    open_pulls,
    pr_build,
)

from longshot_testing import wait_for


@pytest.fixture
def forge():
    with forge_server(TOKEN) as s:
        s.protected = False  # no approvals: the forge's rule here is the required check
        s.required_checks = ["ci/test"]
        yield s


def auto_build(url, forge_url, provider="github"):
    build = pr_build(url, forge_url, provider=provider)
    build["spec"]["merge"]["pullRequest"]["autoMerge"] = {"enabled": True, "method": "squash"}
    return build


def handed(custom, namespace, name="demo-add"):
    def on():
        j = get(custom, namespace, "mergejobs", name)
        c = condition(j, "AwaitingForge") or {}
        pr = (j.get("status") or {}).get("pullRequest") or {}
        return j if c.get("reason") == "AutoMerge" and pr.get("autoMerge") else None

    try:
        return wait_for(on, timeout=90, what="the pull request handed to the forge's auto-merge")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_auto_merge_the_forge_merges_once_its_required_check_is_green_and_the_job_records_its_commit(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge, provider):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, auto_build(url, forge.github_url if provider == "github" else forge.gitlab_url,
                                         provider))
    job_phase(custom, namespace, "demo-add", "AwaitingForge")
    (pull,) = open_pulls(forge, 1)
    job = handed(custom, namespace)
    assert "handed to the forge's auto-merge (squash)" in condition(job, "AwaitingForge")["message"]
    assert pull.auto_merge == "squash" and not pull.merged and main_head(url) == initial
    # the repository's CI goes green on the head: the forge merges, by itself
    forge.ci_status(PROJECT, forge.head_of(PROJECT, pull.head), "ci/test", "success")
    job = job_phase(custom, namespace, "demo-add", "Merged")
    (merged,) = forge.pulls(PROJECT)
    assert merged.merged and merged.merged_by == "auto-merge"
    assert job["status"]["mergedCommit"] == merged.merge_commit == main_head(url) != initial
    assert condition(job, "Merged")["reason"] == "MergedOnForge"
    # Longshot never merged it: no merge without auto-merge; GitHub got the GraphQL mutation
    merges = [r for r in forge.requests if r.method == "PUT" and r.path.endswith("/merge")]
    graphql = [r for r in forge.requests if r.path == "/github/graphql"]
    if provider == "github":
        assert not merges and len(graphql) == 1
        assert graphql[0].body["variables"]["method"] == "SQUASH"
        assert graphql[0].body["variables"]["head"] == merged.last_head
    else:
        assert not graphql and merges and all(r.body["merge_when_pipeline_succeeds"] is True for r in merges)
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)


def test_gitlab_cancels_auto_merge_when_the_check_fails_and_the_job_fails_with_its_reason(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    initial = main_head(url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, auto_build(url, forge.gitlab_url, "gitlab"))
    (pull,) = open_pulls(forge, 1)
    handed(custom, namespace)
    forge.ci_status(PROJECT, forge.head_of(PROJECT, pull.head), "ci/test", "failed")
    job = job_phase(custom, namespace, "demo-add", "Failed")
    stalled = condition(job, "Stalled")
    assert stalled["reason"] == "AutoMergeDisabled" and "ci_must_pass" in stalled["message"]
    assert main_head(url) == initial and not forge.pulls(PROJECT)[0].merged
    # handed once: never handed again behind the forge's back
    assert sum(1 for r in forge.requests if r.method == "PUT" and r.path.endswith("/merge")) == 1


def test_github_a_pull_request_closed_while_handed_fails_its_job(operator, kubelet, core_v1, custom, namespace,
                                                                 tmp_path, forge):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    script_configmap(core_v1, namespace, one_task_script())
    forge_secret(core_v1, namespace)
    create(custom, namespace, auto_build(url, forge.github_url))
    (pull,) = open_pulls(forge, 1)
    handed(custom, namespace)
    forge.close(PROJECT, pull.number)
    job = job_phase(custom, namespace, "demo-add", "Failed")
    assert condition(job, "Stalled")["reason"] == "ClosedWithoutMerge"
