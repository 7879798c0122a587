"""Longshot's GitHub clients against GitHub's published description (issue 52): each client call once against the
stand-ins (tracker_server.py, forge_server.py; real git under the forge), every request and every answer of the
exchange checked by tests/forge_contract.py with openapi-core, and the check shown catching a misspelled field, a
missing field, an operation GitHub does not have and an answer GitHub would not give.

Every other test that uses the stand-ins is checked the same way when its server stops (``tracker_server()`` and
``forge_server()`` check their exchanges on the way out).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
import sample_repo
from forge_server import ForgeServer, forge_server
from tracker_server import FakeClock, TrackerServer, tracker_server

import forge_contract
from longshot.core import cigate
from longshot.core import forge as fc
from longshot.runtime import forge as rf
from longshot.runtime import trackers

pytestmark = pytest.mark.integration

TOKEN = "ghp_contract-0123456789"
PROJECT = "org/calc"

TRACKER_OPERATIONS = {
    "GET /repos/{owner}/{repo}/issues", "PATCH /repos/{owner}/{repo}/issues/{issue_number}",
    "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/comments",
}
FORGE_OPERATIONS = {
    "GET /repos/{owner}/{repo}/pulls", "POST /repos/{owner}/{repo}/pulls",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments",
    "PUT /repos/{owner}/{repo}/pulls/{pull_number}/merge", "POST /repos/{owner}/{repo}/issues/{issue_number}/labels",
    "POST /repos/{owner}/{repo}/statuses/{sha}",
}
CI_GATE_OPERATIONS = {"GET /repos/{owner}/{repo}/commits/{ref}/status",
                      "GET /repos/{owner}/{repo}/commits/{ref}/check-runs"}
"""The forge client's reads of a queue commit's checks (``spec.merge.gate``)."""
STAND_IN_OPERATIONS = {"GET /repos/{owner}/{repo}/commits/{ref}/statuses", "POST /repos/{owner}/{repo}/check-runs"}
"""Served for the tests' own reads of the forge and for the CI stand-in's verdicts, not called by Longshot."""


def operations(exchanges: list[forge_contract.Exchange]) -> set[str]:
    contract = forge_contract.github()
    out = set()
    for ex in exchanges:
        found = contract.operation(ex.method, ex.path)
        assert found is not None, f"{ex}: not an operation of the description"
        out.add(f"{ex.method.upper()} {found[0]}")
    return out


DRIVEN = {"list_issues", "comment", "close_issue", "close", "facts", "find_open_pull", "get_pull", "reviews",
          "open_pull", "post_status", "merge", "checks", "enable_auto_merge"}
"""The clients' calls the tests below drive (``facts`` drives ``reviews``, and through it the review comments)."""


def test_every_call_of_the_github_clients_is_driven_here():
    """A new call on the GitHub clients must be driven by the tests below, so its requests are checked too."""
    calls = {n for cls in (rf.GitHubForge, trackers.GitHub) for n, _ in inspect.getmembers(cls, callable)
             if not n.startswith("_")}
    assert calls == DRIVEN


def test_the_described_operations_are_exactly_what_the_clients_and_the_stand_ins_use():
    described = {f"{m.upper()} {p}" for p, item in forge_contract.github().doc["paths"].items() for m in item
                 if m in ("get", "put", "post", "patch", "delete")}
    assert described == TRACKER_OPERATIONS | FORGE_OPERATIONS | CI_GATE_OPERATIONS | STAND_IN_OPERATIONS


# --- the tracker: spec.planner.issues and spec.intake -------------------------------------------------------------

@pytest.fixture
def tracker():
    clock = FakeClock()
    with tracker_server(clock, TOKEN) as s:
        project = s.project("org/app")
        for n in range(1, 131):  # two pages of 100
            project.add(n, f"Issue {n}", body=f"do {n}" if n % 2 else "", labels=["longshot"] if n % 3 else ["q"],
                        assignees=["bot"] if n % 5 == 0 else [], milestone="v1" if n == 7 else None,
                        author="alice" if n % 2 else "mallory")
        project.add(131, "A pull request", labels=["longshot"], pull_request=True)
        yield s


def github_tracker(server: TrackerServer) -> trackers.GitHub:
    clock = FakeClock()
    return trackers.GitHub(repository="org/app", token=TOKEN, url=server.github_url, sleep=clock.sleep, clock=clock)


def test_every_tracker_call_keeps_githubs_contract(tracker):
    with github_tracker(tracker) as client:
        issues = client.list_issues(["longshot"])
        assert len(issues) == 87 and 131 not in {i.number for i in issues}
        assert client.comment(3, "started", marker="intake/x/started") is True
        assert client.comment(3, "started again", marker="intake/x/started") is False  # read the comments: marked
        client.close_issue(3)
        assert client.list_issues() and tracker.projects["org/app"].issues[3].state == "closed"
    exchanges = tracker.github_exchanges()
    forge_contract.github().check(exchanges)
    assert operations(exchanges) == TRACKER_OPERATIONS
    assert {dict(ex.headers).get("x-github-api-version") for ex in exchanges} == {forge_contract.API_VERSION}
    assert any(dict(ex.query).get("page") == "2" for ex in exchanges)  # the next page, by GitHub's Link header


def test_the_trackers_answers_to_any_call_keep_the_contract_too(tracker):
    """401, rate limits (primary and secondary) and a 502: answers the operations do not list, GitHub's
    basic-error bodies."""
    clock = FakeClock()
    tracker.rate_limit(1, seconds=5)
    tracker.rate_limit(1, seconds=5, flavour="secondary")
    tracker.failures = 1
    client = trackers.GitHub(repository="org/app", token=TOKEN, url=tracker.github_url, sleep=clock.sleep,
                             clock=clock)
    with client:
        assert client.list_issues(["q"])
    with trackers.GitHub(repository="org/app", token="wrong", url=tracker.github_url) as bad, \
            pytest.raises(trackers.AuthError):
        bad.list_issues()
    statuses = {ex.status for ex in tracker.github_exchanges()}
    assert {401, 403, 502, 200} <= statuses
    tracker.check_contract()


# --- the forge: spec.merge.delivery: pullRequest ------------------------------------------------------------------

@pytest.fixture
def forge(tmp_path):
    with forge_server(TOKEN) as s:
        url = sample_repo.make(tmp_path)
        s.repo(PROJECT, url)
        s.url = url  # type: ignore[attr-defined]
        yield s


def github_forge(server: ForgeServer, cls: type[rf.GitHubForge] = rf.GitHubForge) -> rf.GitHubForge:
    return cls(repository=PROJECT, token=TOKEN, url=server.github_url)


def test_every_forge_call_keeps_githubs_contract(forge, tmp_path):
    head = sample_repo.push_branch(forge.url, "longshot/demo/add",
                                   {"calc/add.py": "def add(a, b):\n    return a + b\n"}, tmp_path)
    with github_forge(forge) as client:
        assert client.find_open_pull("longshot/demo/add", "main") is None
        opened = client.open_pull("longshot/demo/add", "main", "Add add()", "the body", ("longshot", "demo"))
        assert opened.number and opened.head == head and opened.state == "open"
        client.post_status(head, "pending", "gating", context=fc.GATE_CONTEXT)
        client.post_status(head, "success", "passed", context=fc.GATE_CONTEXT)
        forge.review(PROJECT, opened.number, "CHANGES_REQUESTED", "not yet", user="bob",
                     comments=[{"path": "calc/add.py", "line": 2, "body": "say what it returns"}])
        facts = client.facts(number=None, branch="longshot/demo/add", target="main", status_posted_on=head)
        assert facts.exists and facts.number == opened.number and facts.mergeable is True
        (asking,) = [r for r in facts.reviews if r.state == "CHANGES_REQUESTED"]
        assert asking.comments == ("calc/add.py:2: say what it returns",) and asking.writer
        refused = client.merge(opened.number, "merge", head)
        assert not refused.merged and "approving review" in refused.message  # 405: branch protection
        forge.review(PROJECT, opened.number, "APPROVED", "lgtm", user="bob")
        moved = client.merge(opened.number, "merge", "f" * 40)
        assert not moved.merged and "modified" in moved.message  # 409: not the head
        merged = client.merge(opened.number, "squash", head)
        assert merged.merged and merged.commit
        after = client.get_pull(opened.number)
        assert after is not None and after.merged and after.merge_commit == merged.commit and after.head == head
    assert [s["state"] for s in forge.statuses_of(PROJECT, head)] == ["pending", "success"]
    exchanges = forge.github_exchanges()
    forge.check_contract()
    assert operations(exchanges) == FORGE_OPERATIONS
    assert {dict(ex.headers).get("x-github-api-version") for ex in exchanges} == {forge_contract.API_VERSION}
    assert {ex.status for ex in exchanges if ex.method == "PUT"} == {200, 405, 409}


def test_the_ci_gate_reads_keep_githubs_contract(forge, tmp_path):
    """A CI posts a check run (as GitHub Actions does, over two pages of check runs) and a commit status on a queue
    commit; the forge client's ``checks`` reads them (``spec.merge.gate``); every exchange keeps the description."""
    import httpx

    head = sample_repo.push_branch(forge.url, "longshot/demo/demo/_queue/b1/1", {"f.txt": "x\n"}, tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}", "X-GitHub-Api-Version": forge_contract.API_VERSION}
    for n in range(120):  # two pages of check runs: the client follows Link: rel=next
        posted = httpx.post(f"{forge.github_url}/repos/{PROJECT}/check-runs", headers=auth,
                            json={"name": f"job-{n}", "head_sha": head, "status": "in_progress",
                                  "details_url": f"https://ci.example/runs/{n}"})
        assert posted.status_code == 201
    httpx.post(f"{forge.github_url}/repos/{PROJECT}/check-runs", headers=auth,
               json={"name": "test", "head_sha": head, "conclusion": "failure", "details_url": "https://ci.example/t",
                     "output": {"title": "1 test failed", "summary": "make test"}})
    with github_forge(forge) as client:
        client.post_status(head, "success", "lint passed", context="lint")
        reports = client.checks(head, ("test", "lint"))
    assert len(reports) == 122
    v = cigate.verdict(("lint", "test"), reports, 0, 60)
    assert (v.state, v.check, v.url) == ("failed", "test", "https://ci.example/t")
    assert "1 test failed" in v.message
    forge.check_contract()
    assert operations(forge.github_exchanges()) == CI_GATE_OPERATIONS | {
        "POST /repos/{owner}/{repo}/statuses/{sha}", "POST /repos/{owner}/{repo}/check-runs"}


def test_the_stand_ins_own_reads_keep_the_contract(forge, tmp_path):
    import httpx

    head = sample_repo.push_branch(forge.url, "b", {"f.txt": "x\n"}, tmp_path)
    with github_forge(forge) as client:
        client.post_status(head, "failure", "red", context="ci/tests")
    answer = httpx.get(f"{forge.github_url}/repos/{PROJECT}/commits/{head}/statuses",
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and [s["context"] for s in answer.json()] == ["ci/tests"]
    forge.check_contract()
    assert operations(forge.github_exchanges()) == {"POST /repos/{owner}/{repo}/statuses/{sha}",
                                                    "GET /repos/{owner}/{repo}/commits/{ref}/statuses"}


def test_auto_merge_keeps_githubs_rest_and_graphql_contracts(forge, tmp_path):
    """``enable_auto_merge`` (GraphQL ``enablePullRequestAutoMerge``, against the pinned published schema) and the
    REST reads around it (the pull request's ``node_id`` and ``auto_merge``, against the OpenAPI description)."""
    forge.protected = False
    forge.required_checks = ["ci/test"]
    head = sample_repo.push_branch(forge.url, "longshot/demo/add", {"calc/add.py": "x = 1\n"}, tmp_path)
    with github_forge(forge) as client:
        opened = client.open_pull("longshot/demo/add", "main", "Add add()", "the body", ())
        facts = client.facts(number=opened.number, branch="longshot/demo/add", target="main")
        assert facts.node_id and not facts.auto_merge
        stale = client.enable_auto_merge(opened.number, facts.node_id, "squash", "f" * 40)
        assert not stale.merged and "head sha" in stale.message  # GitHub's refusal: a GraphQL error
        assert client.enable_auto_merge(opened.number, facts.node_id, "squash", head) == rf.MergeResult(
            False, None, "")
        assert client.facts(number=opened.number, branch="", target="").auto_merge
        forge.ci_status(PROJECT, head, "ci/test", "success")
        after = client.get_pull(opened.number)
        assert after is not None and after.merged and after.merge_commit
    assert [r.path for r in forge.requests if r.method == "POST" and "graphql" in r.path] == ["/github/graphql"] * 2
    forge.check_contract()


class WrongFieldForge(rf.GitHubForge):
    """A client asking for a field GitHub's schema does not have (``autoMerge`` for ``autoMergeRequest``)."""

    def enable_auto_merge(self, number: int, node_id: str, method: str, sha: str) -> rf.MergeResult:
        self._request("POST", self._graphql_url(), what="enabling auto-merge", json={
            "query": rf.ENABLE_AUTO_MERGE.replace("autoMergeRequest", "autoMerge"),
            "variables": {"id": node_id, "method": "MERGE", "head": sha}})
        return rf.MergeResult(False, None, "")


def test_the_check_catches_a_graphql_field_githubs_schema_lacks(tmp_path):
    with forge_server(TOKEN, contract=False) as forge:
        url = sample_repo.make(tmp_path)
        forge.repo(PROJECT, url)
        sample_repo.push_branch(url, "topic", {"f.txt": "x\n"}, tmp_path)
        with github_forge(forge, WrongFieldForge) as client:
            pull = client.open_pull("topic", "main", "t", "b", ())
            client.enable_auto_merge(pull.number, pull.node_id, "merge", pull.head)
        assert forge.pulls(PROJECT)[0].auto_merge is None  # refused, as GitHub refuses it
        with pytest.raises(AssertionError) as caught:
            forge.check_contract()
    assert "Cannot query field 'autoMerge' on type 'PullRequest'" in str(caught.value)


# --- the check catches what is wrong ------------------------------------------------------------------------------

class MisspelledForge(rf.GitHubForge):
    """A client with a typo GitHub would ignore: ``merge_methd`` merges with the default method, silently."""

    def merge(self, number: int, method: str, sha: str) -> rf.MergeResult:
        response = self._once("PUT", f"{self._repo_path()}/pulls/{int(number)}/merge", what="merging",
                              json={"merge_methd": method, "sha": sha})
        return rf.MergeResult(response.status_code == 200, None, "")


def test_the_check_catches_a_misspelled_request_field(tmp_path):
    with forge_server(TOKEN, contract=False) as forge:
        url = sample_repo.make(tmp_path)
        forge.repo(PROJECT, url)
        forge.protected = False
        head = sample_repo.push_branch(url, "topic", {"f.txt": "x\n"}, tmp_path)
        with github_forge(forge, MisspelledForge) as client:
            pull = client.open_pull("topic", "main", "t", "b", ())
            assert client.merge(pull.number, "squash", head).merged  # the stand-in, like GitHub, does not mind
        with pytest.raises(AssertionError) as caught:
            forge.check_contract()
    assert "body.merge_methd is not a field of the operation's body" in str(caught.value)
    assert "1 violation(s)" in str(caught.value)


class CarelessForge(ForgeServer):
    """A stand-in that drifted: its pull requests lack ``node_id``, and its merge refusals come back as 400."""

    def _github_pull(self, repo: Any, pull: Any, *, full: bool = True) -> dict[str, Any]:
        wire = super()._github_pull(repo, pull, full=full)
        del wire["node_id"]
        return wire

    def _merge(self, repo: Any, number: int, method: str, sha: str | None, *, admin: bool = False) -> tuple[int, Any]:
        status, payload = super()._merge(repo, number, method, sha, admin=admin)
        return (400 if status == 405 else status), payload


def test_the_check_catches_a_stand_in_that_drifts(tmp_path):
    forge = CarelessForge(TOKEN)
    forge.start()
    try:
        url = sample_repo.make(tmp_path)
        forge.repo(PROJECT, url)
        head = sample_repo.push_branch(url, "topic", {"f.txt": "x\n"}, tmp_path)
        with github_forge(forge) as client:
            pull = client.open_pull("topic", "main", "t", "b", ())
            with pytest.raises(rf.ForgeError):
                client.merge(pull.number, "merge", head)  # 400 is no refusal the client knows
    finally:
        forge.stop()
    problems = [v for ex in forge.github_exchanges() for v in forge_contract.github().violations(ex)]
    assert any("POST /repos/org/calc/pulls -> 201: answer:" in p and "'node_id' is a required property" in p
               for p in problems), problems
    assert any("PUT /repos/org/calc/pulls/1/merge" in p and "status 400 is not one the operation answers" in p
               for p in problems), problems


def test_the_check_catches_an_operation_github_does_not_have(tracker):
    import httpx

    httpx.delete(f"{tracker.github_url}/repos/org/app/issues/1", headers={"Authorization": f"Bearer {TOKEN}"})
    httpx.get(f"{tracker.github_url}/repos/org/app/issues", params={"state": "opened"},  # GitLab's word
              headers={"Authorization": f"Bearer {TOKEN}"})
    problems = [v for ex in tracker.github_exchanges() for v in forge_contract.github().violations(ex)]
    tracker.requests.clear()  # the fixture's own check on the way out: nothing left to check
    assert any("DELETE /repos/org/app/issues/1 is not an operation of github-rest.json" in p for p in problems)
    assert any("Invalid query parameter: state" in p for p in problems), problems


def test_a_webhook_delivery_as_github_sends_it_keeps_the_webhooks_contract(tracker):
    body = json.dumps(tracker.issues_event("org/app", 5, "opened")).encode()
    assert forge_contract.webhook_violations("issues", tracker.hook_headers("issues", body, "s3cret"), body) == []
