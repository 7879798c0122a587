"""Handing a pull request to the forge's auto-merge (``spec.merge.pullRequest.autoMerge``): the decision
(core.forge, the hand-off table), the MergeJob's record of the hand-off (core.mergejobs), the API field, and the
requests of both forge clients (runtime.forge) against an httpx MockTransport, the GitHub GraphQL one validated
against GitHub's published schema (tests/github_graphql.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pydantic
import pytest

import github_graphql
import hack_modules
from longshot.api import conditions as c
from longshot.api.buildrequest import PullRequestSettings
from longshot.core import forge as fc
from longshot.core import mergejobs as mj
from longshot.core.effects import SetCondition
from longshot.runtime import forge as rf

pytestmark = pytest.mark.unit

SHA = "a" * 40
OLD = "b" * 40
MERGE = "c" * 40
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "ghp_secret_token_value"
ASK = fc.Ask(branch="longshot/demo/add", target="main", commit=SHA, title="t", body="b", auto_merge="squash")


def pull(**kw: object) -> fc.PullFacts:
    base: dict[str, object] = {"exists": True, "number": 7, "url": "u", "head": SHA, "mergeable": True,
                               "mergeable_state": "blocked", "status_posted": True, "node_id": "PR_kw7"}
    base.update(kw)
    return fc.PullFacts(**base)  # type: ignore[arg-type]


# --- core.forge: the hand-off table ---------------------------------------------------------------------


def test_without_approvals_an_open_pull_request_is_handed_to_the_forge_once() -> None:
    effects = fc.decide(ASK, pull())
    assert effects[0] == fc.EnableAutoMerge(7, "PR_kw7", "squash", SHA)
    assert isinstance(effects[1], fc.Wait) and effects[1].reason == "AutoMerge"
    assert not any(isinstance(e, fc.Merge) for e in effects)  # Longshot does not merge it itself


def test_handed_and_on_it_waits_for_the_forge() -> None:
    effects = fc.decide(replace(ASK, handed=True), pull(auto_merge=True))
    assert [type(e) for e in effects] == [fc.Wait] and effects[0].reason == "AutoMerge"  # type: ignore[union-attr]
    # on already (a person did it) without Longshot's hand-off: nothing to ask either
    assert [type(e) for e in fc.decide(ASK, pull(auto_merge=True))] == [fc.Wait]


def test_handed_but_turned_off_by_the_forge_fails_with_the_forges_state() -> None:
    [effect] = fc.decide(replace(ASK, handed=True), pull(auto_merge=False, mergeable_state="ci_must_pass"))
    assert isinstance(effect, fc.Fail) and effect.reason == "AutoMergeDisabled"
    assert "ci_must_pass" in effect.message


def test_the_forges_merge_lands_with_its_commit_and_a_close_fails() -> None:
    handed = replace(ASK, handed=True)
    assert fc.decide(handed, pull(state="closed", merged=True, merge_commit=MERGE))[0] == fc.Landed(
        MERGE, "pull request #7 was merged on the forge as " + MERGE[:12])
    [closed] = fc.decide(handed, pull(state="closed"))
    assert isinstance(closed, fc.Fail) and closed.reason == "ClosedWithoutMerge"


def test_no_pull_request_opens_one_first_and_a_moved_head_is_never_handed() -> None:
    assert isinstance(fc.decide(ASK, fc.PullFacts(exists=False))[0], fc.OpenPull)
    effects = fc.decide(ASK, pull(head=OLD))
    assert not any(isinstance(e, fc.EnableAutoMerge) for e in effects)


def test_changes_requested_on_the_tested_head_still_send_a_fixer_not_the_forge() -> None:
    review = fc.Review("alice", "CHANGES_REQUESTED", body="fix it", commit=SHA, writer=True)
    [effect] = fc.decide(ASK, pull(reviews=(review,)))
    assert isinstance(effect, fc.RequestChanges)


def test_without_auto_merge_the_table_is_unchanged() -> None:
    effects = fc.decide(replace(ASK, auto_merge=None), pull())
    assert [type(e) for e in effects] == [fc.Wait] and "approval" in effects[0].message  # type: ignore[union-attr]


# --- core.mergejobs: the hand-off recorded, the forge's refusal shown -------------------------------------


def test_the_hand_off_is_recorded_on_the_job_and_the_forges_turn_off_fails_it() -> None:
    state = mj.JobState(name="j", task="t", branch="b", phase=mj.AWAITING_FORGE, tested=SHA)
    handed = mj.PullRef(7, "u", SHA, True, auto_merge=True)
    new, effects = mj.decide(state, mj.ForgeWaiting("AutoMerge", "handed", handed), now=NOW)
    assert new.pull == handed and new.to_status()["pullRequest"]["autoMerge"] is True
    assert SetCondition(c.AWAITING_FORGE, c.TRUE, "AutoMerge", "handed") in effects
    failed, effects = mj.decide(new, mj.ForgeClosed("AutoMergeDisabled", "turned off"), now=NOW)
    assert failed.phase == mj.FAILED
    assert any(isinstance(e, SetCondition) and e.reason == "AutoMergeDisabled" for e in effects)


# --- the API field ------------------------------------------------------------------------------------


def test_auto_merge_setting_is_validated() -> None:
    base = {"project": "o/r", "tokenSecretRef": {"name": "forge"}}
    s = PullRequestSettings.model_validate({**base, "autoMerge": {"enabled": True, "method": "rebase"}})
    assert s.auto_merge is not None and (s.auto_merge.enabled, s.auto_merge.method) == (True, "rebase")
    assert PullRequestSettings.model_validate(base).auto_merge is None
    with pytest.raises(pydantic.ValidationError, match=r"autoMerge\.method|auto_merge\.method"):
        PullRequestSettings.model_validate({**base, "autoMerge": {"enabled": True, "method": "fast-forward"}})


# --- runtime.forge: the requests --------------------------------------------------------------------


def github(handler: object, api: str = "https://forge.example/api") -> rf.Forge:
    settings = PullRequestSettings.model_validate({"project": "o/r", "tokenSecretRef": {"name": "forge"},
                                                   "apiUrl": api})
    return rf.make_forge(settings, TOKEN, transport=httpx.MockTransport(handler), sleep=lambda s: None)  # type: ignore[arg-type]


def test_github_enables_auto_merge_by_the_graphql_mutation_the_published_schema_accepts() -> None:
    sent: list[tuple[str, dict[str, object]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        sent.append((str(request.url), json.loads(request.content)))
        return httpx.Response(200, json={"data": {"enablePullRequestAutoMerge": {"pullRequest": {
            "number": 7, "state": "OPEN", "merged": False,
            "autoMergeRequest": {"enabledAt": "2026-01-01T00:00:00Z", "mergeMethod": "SQUASH"}}}}})

    with github(handler) as f:
        result = f.enable_auto_merge(7, "PR_kw7", "squash", SHA)
    assert result == rf.MergeResult(False, None, "")
    [(url, body)] = sent
    assert url == "https://forge.example/api/graphql"
    assert body["variables"] == {"id": "PR_kw7", "method": "SQUASH", "head": SHA}
    assert github_graphql.request_problems(json.dumps(body).encode()) == []


def test_github_enterprise_graphql_endpoint_is_next_to_its_rest_api() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200, json={"data": {"enablePullRequestAutoMerge": {"pullRequest": {
            "number": 7, "state": "MERGED", "merged": True, "autoMergeRequest": None}}}})

    with github(handler, "https://ghe.example/api/v3") as f:
        assert f.enable_auto_merge(7, "PR_kw7", "merge", SHA).merged
    assert urls == ["https://ghe.example/api/graphql"]


def test_github_refusal_is_the_forges_message_without_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"enablePullRequestAutoMerge": None}, "errors": [
            {"type": "UNPROCESSABLE", "message": f"Pull request is in clean status ({TOKEN})"}]})

    with github(handler) as f:
        result = f.enable_auto_merge(7, "PR_kw7", "merge", SHA)
    assert not result.merged and "clean status" in result.message and TOKEN not in result.message


def test_github_pull_facts_carry_node_id_and_auto_merge() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/reviews"):
            return httpx.Response(200, json=[])
        return httpx.Response(200, json={"number": 7, "node_id": "PR_kw7", "state": "open", "head": {"sha": SHA},
                                         "auto_merge": {"merge_method": "squash"}})

    with github(handler) as f:
        facts = f.facts(number=7, branch="b", target="main")
    assert (facts.node_id, facts.auto_merge, facts.head) == ("PR_kw7", True, SHA)


def test_a_wrong_field_fails_the_schema_check() -> None:
    good = rf.ENABLE_AUTO_MERGE
    assert github_graphql.problems(good, {"id": "PR_1", "method": "MERGE", "head": SHA}) == []
    assert github_graphql.problems(good.replace("autoMergeRequest", "autoMerge"), {"id": "PR_1", "method": "MERGE"})
    assert github_graphql.problems(good.replace("expectedHeadOid", "expectedHeadSha"), {"id": "PR_1",
                                                                                       "method": "MERGE"})
    assert github_graphql.problems(good, {"id": "PR_1", "method": "FAST_FORWARD"})  # not a PullRequestMergeMethod
    assert github_graphql.problems(good, {"method": "MERGE"})  # pullRequestId is required


def gitlab(handler: object) -> rf.Forge:
    settings = PullRequestSettings.model_validate({"provider": "gitlab", "project": "group/proj",
                                                   "tokenSecretRef": {"name": "forge"},
                                                   "apiUrl": "https://gl.example/api/v4"})
    return rf.make_forge(settings, TOKEN, transport=httpx.MockTransport(handler), sleep=lambda s: None)  # type: ignore[arg-type]


def test_gitlab_sets_merge_when_pipeline_succeeds_with_the_tested_sha() -> None:
    sent: list[tuple[str, str, object]] = []
    answer = {"iid": 4, "state": "opened", "sha": SHA, "merge_when_pipeline_succeeds": True,
              "detailed_merge_status": "ci_still_running"}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.raw_path.decode(), json.loads(request.content)))
        return httpx.Response(200, json=answer)

    with gitlab(handler) as f:
        assert f.enable_auto_merge(4, "", "squash", SHA) == rf.MergeResult(False, None, "")
        answer = {"iid": 4, "state": "merged", "sha": SHA, "merge_commit_sha": MERGE}
        assert f.enable_auto_merge(4, "", "merge", SHA) == rf.MergeResult(True, MERGE, "")
    assert sent[0] == ("PUT", "/api/v4/projects/group%2Fproj/merge_requests/4/merge",
                       {"sha": SHA, "squash": True, "merge_when_pipeline_succeeds": True})


def test_gitlab_refusal_is_an_answer_and_facts_read_the_flag() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(409, json={"message": "SHA does not match HEAD of source branch"})
        return httpx.Response(200, json={"iid": 4, "state": "opened", "sha": SHA,
                                         "merge_when_pipeline_succeeds": True})

    with gitlab(handler) as f:
        result = f.enable_auto_merge(4, "", "merge", OLD)
        facts = f.get_pull(4)
    assert not result.merged and "SHA does not match" in result.message
    assert facts is not None and facts.auto_merge


def test_the_pinned_schema_is_what_the_script_keeps_from_the_pinned_package() -> None:
    script = hack_modules.load("github_graphql_schema")
    text = github_graphql.SCHEMA_FILE.read_text()
    header = text.split("\n\n", 1)[0]
    assert script.PINNED_SHA256 in header and f"{script.PACKAGE['package']} {script.PACKAGE['version']}" in header
    s = github_graphql.schema()
    for name, keep in script.KEEP.items():
        kept = s.get_type(name)
        assert kept is not None, name
        if keep:
            assert set(kept.fields) == set(keep), name  # type: ignore[union-attr]
    # the client's document uses only what is kept, with the variables' types GitHub declares
    assert github_graphql.problems(rf.ENABLE_AUTO_MERGE, {"id": "PR_1", "method": "SQUASH", "head": None}) == []
