"""The forge contract check itself (tests/forge_contract.py, issue 52) on exchanges made here: what keeps GitHub's
published description passes, and each way of breaking it is caught and named: a misspelled or missing body field,
an unknown query parameter, a value outside an enum, an operation GitHub does not have, an answer missing a
required field or of the wrong type, a status the operation never answers, an incomplete webhook delivery."""

from __future__ import annotations

import json

import pytest

import forge_contract as fc
import github_wire as gw

pytestmark = pytest.mark.unit

REPO = "org/app"
SHA = "a" * 40
BASE = "b" * 40


def ok(data: object) -> bytes:
    return json.dumps(data).encode()


def pull(full: bool = True) -> dict:
    return gw.pull_request(REPO, 7, title="t", body=None, state="open", head_ref="topic", head_sha=SHA,
                           base_ref="main", base_sha=BASE, merged=False, merge_commit_sha=None, mergeable=True,
                           mergeable_state="clean", labels=["longshot"], full=full)


def violations(*args: object, **kw: object) -> list[str]:
    return fc.github().violations(fc.Exchange(*args, **kw))  # type: ignore[arg-type]


GOOD = [
    fc.Exchange("GET", f"/repos/{REPO}/issues", (("state", "open"), ("per_page", "100"), ("sort", "created"),
                                                 ("direction", "asc"), ("labels", "a,b")),
                answer=ok([gw.issue(REPO, 1, "t", labels=["a", "b"], milestone_title="v1", assignees=["x"]),
                           gw.issue(REPO, 2, "pr", pull_request=True, state="closed")])),
    fc.Exchange("PATCH", f"/repos/{REPO}/issues/1", body=ok({"state": "closed"}),
                answer=ok(gw.issue(REPO, 1, "t", state="closed"))),
    fc.Exchange("GET", f"/repos/{REPO}/issues/1/comments", (("per_page", "100"),),
                answer=ok([gw.issue_comment(REPO, 1, 5, "hi")])),
    fc.Exchange("POST", f"/repos/{REPO}/issues/1/comments", body=ok({"body": "hi"}), status=201,
                answer=ok(gw.issue_comment(REPO, 1, 5, "hi"))),
    fc.Exchange("GET", f"/repos/{REPO}/pulls", (("state", "open"), ("head", "org:topic"), ("base", "main"),
                                                ("per_page", "100")), answer=ok([pull(full=False)])),
    fc.Exchange("POST", f"/repos/{REPO}/pulls", body=ok({"title": "t", "head": "topic", "base": "main", "body": "b"}),
                status=201, answer=ok(pull())),
    fc.Exchange("GET", f"/repos/{REPO}/pulls/7", answer=ok(pull())),
    fc.Exchange("GET", f"/repos/{REPO}/pulls/7/reviews", (("per_page", "100"),), answer=ok([
        gw.review(REPO, 7, 101, login="bob", state="CHANGES_REQUESTED", body="no", commit_id=SHA,
                  association="MEMBER")])),
    fc.Exchange("GET", f"/repos/{REPO}/pulls/7/reviews/101/comments", (("per_page", "20"),), answer=ok([
        gw.review_comment(REPO, 7, 900, review_id=101, body="why", file="a.py", line=3, commit_id=SHA, login="bob",
                          association="MEMBER")])),
    fc.Exchange("PUT", f"/repos/{REPO}/pulls/7/merge", body=ok({"merge_method": "squash", "sha": SHA}),
                answer=ok(gw.merge_result("c" * 40))),
    fc.Exchange("PUT", f"/repos/{REPO}/pulls/7/merge", body=ok({"merge_method": "merge", "sha": SHA}), status=405,
                answer=ok(gw.error("Pull Request is not mergeable", status=405))),
    fc.Exchange("POST", f"/repos/{REPO}/issues/7/labels", body=ok({"labels": ["longshot"]}),
                answer=ok([gw.label(REPO, "longshot")])),
    fc.Exchange("POST", f"/repos/{REPO}/statuses/{SHA}",
                body=ok({"state": "success", "context": "longshot/gate", "description": "passed"}), status=201,
                answer=ok(gw.status(REPO, SHA, 1, state="success", context="longshot/gate", description="passed"))),
    fc.Exchange("GET", f"/repos/{REPO}/pulls/7", status=401, answer=ok({"message": "Bad credentials"})),
    fc.Exchange("GET", f"/repos/{REPO}/issues", status=403, answer=ok({"message": "API rate limit exceeded"}),
                answer_headers=(("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "1800000000"))),
]


@pytest.mark.parametrize("exchange", GOOD, ids=str)
def test_what_keeps_githubs_description_passes(exchange):
    assert fc.github().violations(exchange) == []


def test_a_misspelled_body_field_is_caught_though_github_would_ignore_it():
    (problem,) = violations("POST", f"/repos/{REPO}/statuses/{SHA}", body=ok({"state": "success", "contxt": "x"}),
                            status=201, answer=ok(gw.status(REPO, SHA, 1, state="success", context="default",
                                                            description=None)))
    assert "body.contxt is not a field of the operation's body (context, description, state, target_url)" in problem


def test_a_missing_required_body_field_is_caught():
    problems = violations("POST", f"/repos/{REPO}/pulls", body=ok({"title": "t", "haed": "h", "base": "main"}),
                          status=201, answer=ok(pull()))
    assert any("InvalidRequestBody" in p and "'head' is a required property" in p for p in problems), problems
    assert any("body.haed is not a field" in p for p in problems), problems


def test_an_unknown_query_parameter_and_a_value_outside_the_enum_are_caught():
    problems = violations("GET", f"/repos/{REPO}/issues", (("state", "opened"), ("per_pag", "100")), answer=ok([]))
    assert any("Invalid query parameter: state" in p and "'opened' is not one of" in p for p in problems), problems
    assert any("query parameter 'per_pag' is not one the operation takes" in p for p in problems), problems


def test_an_operation_github_does_not_have_is_caught():
    (problem,) = violations("DELETE", f"/repos/{REPO}/pulls/7")
    assert "DELETE /repos/org/app/pulls/7 is not an operation of github-rest.json" in problem
    (problem,) = violations("GET", f"/repos/{REPO}/merge_requests")
    assert "is not an operation" in problem


def test_an_answer_missing_a_required_field_or_of_the_wrong_type_is_caught():
    broken = pull()
    del broken["head"]["sha"]
    broken["number"] = "7"
    (problem,) = violations("GET", f"/repos/{REPO}/pulls/7", answer=ok(broken))
    assert "answer: InvalidData" in problem
    assert "head: 'sha' is a required property" in problem and "number: '7' is not of type 'integer'" in problem
    listed = pull(full=False)
    listed["mergeable"] = "yes"  # not in a listing's schema: answers may carry more fields than described
    assert violations("GET", f"/repos/{REPO}/pulls", answer=ok([listed])) == []


def test_a_status_the_operation_never_answers_is_caught_and_any_calls_errors_must_be_basic_errors():
    (problem,) = violations("PUT", f"/repos/{REPO}/pulls/7/merge", body=ok({"sha": SHA}), status=400,
                            answer=ok({"message": "no"}))
    assert "status 400 is not one the operation answers (200, 403, 404, 405, 409, 422)" in problem
    (problem,) = violations("GET", f"/repos/{REPO}/pulls/7", status=502, answer=ok({"message": 502}))
    assert "not a basic-error" in problem


def test_null_is_allowed_where_the_description_says_nullable_with_an_enum():
    """GitHub's ``state_reason`` is ``nullable`` with an enum that lacks null; GitHub sends null for an open issue."""
    item = gw.issue(REPO, 1, "t")
    assert item["state_reason"] is None
    assert violations("GET", f"/repos/{REPO}/issues", answer=ok([item])) == []
    item["state_reason"] = "done"
    (problem,) = violations("GET", f"/repos/{REPO}/issues", answer=ok([item]))
    assert "state_reason: 'done' is not one of" in problem


def test_a_webhook_delivery_is_checked_headers_and_payload():
    issue = gw.issue(REPO, 5, "Add sub()", labels=["longshot"], assignees=["bot"], association="OWNER")
    for action in ("opened", "labeled", "assigned", "reopened", "edited"):
        body = ok(gw.issues_event(action, REPO, issue))
        assert fc.webhook_violations("issues", gw.hook_headers("issues", "sha256=00"), body) == [], action
    body = ok(gw.ping_event(REPO))
    assert fc.webhook_violations("ping", gw.hook_headers("ping", "sha256=00"), body) == []
    # what the intake's test sent before issue 52: two headers and an issue of one field
    bare = ok({"action": "opened", "issue": {"number": 99}})
    (problem,) = fc.webhook_violations("issues", {"X-Hub-Signature-256": "sha256=00", "X-GitHub-Event": "issues"},
                                       bare)
    assert "Missing required header parameter" in problem
    (problem,) = fc.webhook_violations("issues", gw.hook_headers("issues", "sha256=00"), bare)
    assert "InvalidRequestBody" in problem and "issue: 'user' is a required property" in problem
    (problem,) = fc.webhook_violations("push", gw.hook_headers("push", "sha256=00"), ok({"ref": "x"}))
    assert "webhook push is not in github-webhooks.json" in problem


def test_a_request_naming_another_api_version_is_caught():
    exchange = GOOD[6]
    assert fc.github().violations(exchange) == []
    headers = (("x-github-api-version", "2026-03-10"),)
    (problem,) = violations(exchange.method, exchange.path, answer=exchange.answer, headers=headers)
    assert "X-GitHub-Api-Version '2026-03-10', the description is of 2022-11-28" in problem


def test_the_intakes_receiver_verifies_a_delivery_as_githubs_description_has_it():
    """``core.standing.verify_delivery`` (the webhook receiver's check) reads the signature header that the
    webhooks description requires of every issues delivery, and accepts one signed as GitHub signs it."""
    import hashlib
    import hmac

    from longshot.core import standing

    hook = fc.github_webhooks().doc["webhooks"]["issues-opened"]["post"]
    required = {p["name"].lower() for p in hook["parameters"] if p.get("in") == "header" and p.get("required")}
    assert {"x-hub-signature-256", "x-github-event", "x-github-delivery"} <= required
    body = ok(gw.issues_event("opened", REPO, gw.issue(REPO, 5, "t")))
    headers = gw.hook_headers("issues", "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest())
    assert fc.webhook_violations("issues", headers, body) == []
    lowered = {k.lower(): v for k, v in headers.items()}
    assert standing.verify_delivery("s3cret", lowered, body)
    assert not standing.verify_delivery("other", lowered, body)
