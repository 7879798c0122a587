"""core.standing: the standing intake's decider (what to start, comment on and close) and the webhook check."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from longshot.core import standing as st

F = st.Filters(labels=("longshot",))
P = st.Policy(max_active=3, poll_seconds=30)


def issue(n, *labels, assignees=(), milestone=None, author="alice", writer=True):
    return st.IssueView(n, tuple(labels) or ("longshot",), tuple(assignees), milestone, author, writer)


def child(name, *issues, outcome="Active", started=True, finished=False, closed=False):
    return st.ChildView(name, tuple(issues), outcome, started, finished, closed)


def test_each_eligible_issue_gets_one_child_named_after_it():
    d = st.decide("intake", [issue(2), issue(1)], [], F, P)
    assert [(c.name, c.issues) for c in d.create] == [("intake-i1", (1,)), ("intake-i2", (2,))]
    assert d.poll_after == 30
    assert (d.summary.eligible, d.summary.active, d.summary.started, d.summary.waiting) == (2, 2, 2, 0)


def test_never_two_builds_for_one_issue_whatever_the_childs_outcome():
    children = [child("intake-i1"), child("intake-i2", outcome="Failed", finished=True),
                child("intake-i3", outcome="Succeeded", finished=True, closed=True)]
    d = st.decide("intake", [issue(1), issue(2), issue(3)], children, F, P)
    assert d.create == ()
    # deciding twice (a restart, a second replica) names the same build: the API server refuses the second
    first = st.decide("intake", [issue(4)], [], F, P)
    again = st.decide("intake", [issue(4)], [], F, P)
    assert first.create == again.create == (st.Create("intake-i4", (4,)),)


def test_a_restart_after_the_create_but_before_the_comment_posts_it_then():
    d = st.decide("intake", [issue(5)], [child("intake-i5", 5, started=False)], F, P)
    assert d.create == ()
    assert d.comments == (st.Comment(5, "intake-i5", "started", issues=(5,)),)
    assert st.decide("intake", [issue(5)], [child("intake-i5", 5)], F, P).comments == ()


def test_max_active_builds_holds_the_rest_until_a_slot_frees():
    issues = [issue(n) for n in range(1, 6)]
    d = st.decide("intake", issues, [child("intake-i1", 1)], F, st.Policy(max_active=2))
    assert [c.name for c in d.create] == ["intake-i2"]
    assert d.summary.waiting == 3 and d.summary.active == 2
    done = [child("intake-i1", 1, outcome="Succeeded", finished=True, closed=True), child("intake-i2", 2)]
    assert [c.name for c in st.decide("intake", issues, done, F, st.Policy(max_active=2)).create] == ["intake-i3"]


def test_batch_policy_groups_issues_and_names_the_batch_by_its_first():
    policy = st.Policy(policy="batch", batch_size=2, max_active=1)
    d = st.decide("intake", [issue(n) for n in (7, 3, 9)], [], F, policy)
    assert d.create == (st.Create("intake-b3", (3, 7)),)
    assert d.summary.waiting == 1
    # a batch of one is named like a single issue's build
    d = st.decide("intake", [issue(9)], [child("intake-b3", 3, 7, outcome="Succeeded", finished=True, closed=True)],
                  F, policy)
    assert d.create == (st.Create("intake-i9", (9,)),)


def test_issues_closed_or_unlabelled_meanwhile_are_not_started_and_their_running_child_is_left_alone():
    d = st.decide("intake", [issue(2, "other")], [child("intake-i1", 1)], F, P)  # 1 closed, 2 lost its label
    assert d.create == () and d.close == () and d.comments == ()
    assert d.summary.eligible == 0 and d.summary.active == 1


def test_assignee_and_milestone_filters():
    f = st.Filters(labels=("longshot",), assignee="bot", milestone="v1")
    issues = [issue(1, assignees=("bot",), milestone="v1"), issue(2, assignees=("ann",), milestone="v1"),
              issue(3, assignees=("bot",)), issue(4, assignees=("bot", "ann"), milestone="v1")]
    assert [c.issues for c in st.decide("i", issues, [], f, P).create] == [(1,), (4,)]


def test_without_a_fresh_poll_nothing_is_started_but_finished_children_are_reported():
    children = [child("intake-i1", 1, outcome="Succeeded"), child("intake-i2", 2, outcome="Failed")]
    d = st.decide("intake", None, children, F, P)
    assert d.create == ()
    assert d.comments == (st.Comment(1, "intake-i1", "finished", "Succeeded", (1,)),
                          st.Comment(2, "intake-i2", "finished", "Failed", (2,)))
    assert d.close == (st.Close(1, "intake-i1"),)  # a failed child's issue stays open
    # the last listing, not read now: counted, not started
    stale = st.decide("intake", [issue(1), issue(3)], children, F, P, fresh=False)
    assert stale.create == () and (stale.summary.eligible, stale.summary.waiting) == (2, 1)


def test_comment_false_posts_nothing_but_still_closes():
    d = st.decide("intake", None, [child("intake-i1", 1, outcome="Succeeded", started=False)], F,
                  st.Policy(comment=False))
    assert d.comments == () and d.close == (st.Close(1, "intake-i1"),)


def test_recorded_comments_and_closes_are_not_repeated():
    d = st.decide("intake", None, [child("intake-i1", 1, outcome="Succeeded", finished=True, closed=True)], F, P)
    assert d.comments == () and d.close == ()
    assert d.summary.builds == (st.Entry(1, (1,), "intake-i1", "Succeeded"),)


def test_the_status_lists_the_fifty_newest_builds_and_actions_are_bounded():
    children = [child(f"intake-i{n}", n, outcome="Succeeded", started=False) for n in range(1, 81)]
    d = st.decide("intake", None, children, F, P)
    assert len(d.summary.builds) == 50 and d.summary.builds[0].issue == 80 and d.summary.builds[-1].issue == 31
    assert len(d.comments) == st.MAX_ACTIONS and len(d.close) == st.MAX_ACTIONS


def test_a_long_intake_name_still_gives_distinct_fitting_names():
    parent = "x" * 80
    a, b = st.child_name(parent, [1]), st.child_name(parent, [2])
    assert a != b and len(a) <= 63 and st.child_name(parent, [1]) == a


def test_issue_annotation_round_trip_and_garbage():
    assert st.parse_issues(st.format_issues([3, 1, 3])) == (1, 3)
    assert st.parse_issues("1, x,-2,0,7") == (1, 7) and st.parse_issues(None) == ()


def test_texts_name_the_build_and_outcome():
    assert "`intake-b3`" in st.started_text("intake-b3", (3, 7)) and "#7" in st.started_text("intake-b3", (3, 7))
    assert "Succeeded" in st.finished_text("b", "Succeeded") and "stays open" in st.finished_text("b", "Failed")


# --- webhook deliveries --------------------------------------------------------------------------------------------

def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_hmac_signature():
    body = b'{"action":"opened"}'
    assert st.verify_delivery("s3cret", {"x-hub-signature-256": github_signature("s3cret", body)}, body)
    assert not st.verify_delivery("s3cret", {"x-hub-signature-256": github_signature("wrong", body)}, body)
    assert not st.verify_delivery("s3cret", {"x-hub-signature-256": github_signature("s3cret", body)}, body + b" ")
    assert not st.verify_delivery("s3cret", {}, body)


def test_gitlab_token_and_an_empty_secret_authenticates_nothing():
    assert st.verify_delivery("tok", {"x-gitlab-token": "tok"}, b"")
    assert not st.verify_delivery("tok", {"x-gitlab-token": "nope"}, b"")
    assert not st.verify_delivery("", {"x-gitlab-token": ""}, b"")


@pytest.mark.parametrize(("path", "want"), [
    ("/intake/ns/name", ("ns", "name")), ("/intake/ns/name?x=1", ("ns", "name")), ("/intake/ns", None),
    ("/intake/NS/name", None), ("/intake/ns/../x", None), ("/other/ns/name", None), ("/intake/ns/a/b", None)])
def test_webhook_path(path, want):
    assert st.parse_path(path) == want


# --- who may ask, how many a day, how much in all ------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("author", "writer", "filters", "started"), [
    ("alice", True, F, True),                                                       # a writer
    ("mallory", False, F, False),                                                   # a stranger
    ("Dora", False, st.Filters(labels=("longshot",), users=("dora",)), True),       # listed (any case)
    ("alice", True, st.Filters(labels=("longshot",), writers=False, users=("dora",)), False),  # only the list
    ("", False, st.Filters(labels=("longshot",), users=("",)), False),              # no author: nobody's
])
def test_only_allowed_authors_issues_start_builds(author, writer, filters, started):
    d = st.decide("intake", [issue(1, author=author, writer=writer)], [], filters, P)
    assert bool(d.create) is started and d.summary.eligible == int(started)


def made(name, *issues, hours_ago, outcome="Active", used=(0, 0.0), allotted=(None, None)):
    return st.ChildView(name, tuple(issues), outcome, True, outcome != "Active", outcome == "Succeeded",
                        NOW - timedelta(hours=hours_ago), st.Money(*used), st.Money(*allotted))


def test_the_daily_cap_counts_the_children_of_the_last_24_hours():
    policy = replace(P, max_active=10, max_per_day=3)
    children = [made("intake-i1", 1, hours_ago=30, outcome="Succeeded"), made("intake-i2", 2, hours_ago=20,
                                                                            outcome="Failed"),
                made("intake-i3", 3, hours_ago=1)]
    d = st.decide("intake", [issue(n) for n in range(1, 8)], children, F, policy, now=NOW)
    assert [c.issues for c in d.create] == [(4,)]  # 2 of 3 today: one more
    children.append(made("intake-i4", 4, hours_ago=0))
    d = st.decide("intake", [issue(n) for n in range(1, 8)], children, F, policy, now=NOW)
    assert d.create == () and d.summary.waiting == 3
    assert "maxBuildsPerDay (3)" in d.summary.held


def test_the_intake_budget_bounds_the_childrens_total():
    policy = replace(P, max_active=10, budget=st.Money(10_000, None), child_budget=st.Money(4_000, None))
    d = st.decide("intake", [issue(n) for n in range(1, 6)], [], F, policy, now=NOW)
    assert [(c.issues, c.budget.tokens) for c in d.create] == [((1,), 4000), ((2,), 4000), ((3,), 2000)]
    assert "spec.intake.budget" in d.summary.held and d.summary.waiting == 2
    # a finished child gives back what it did not use; a running one holds the larger of use and allotment
    children = [made("intake-i1", 1, hours_ago=2, outcome="Succeeded", used=(1_000, 0.0), allotted=(4_000, None)),
                made("intake-i2", 2, hours_ago=1, used=(5_000, 0.0), allotted=(4_000, None)),
                made("intake-i3", 3, hours_ago=1, used=(0, 0.0), allotted=(2_000, None))]
    d = st.decide("intake", [issue(n) for n in range(1, 6)], children, F, policy, now=NOW)
    assert [(c.issues, c.budget.tokens) for c in d.create] == [((4,), 2000)]
    assert sum(c.budget.tokens or 0 for c in d.create) + 1_000 + 5_000 + 2_000 <= 10_000


def test_an_intake_budget_without_a_child_budget_allots_the_rest_and_a_running_child_without_limit_holds_all():
    policy = replace(P, max_active=10, budget=st.Money(None, 5.0))
    d = st.decide("intake", [issue(1), issue(2)], [], F, policy, now=NOW)
    assert [(c.issues, c.budget.cost) for c in d.create] == [((1,), 5.0)]
    unlimited = [made("intake-i9", 9, hours_ago=1)]  # made before the intake had a budget: it may spend anything
    assert st.decide("intake", [issue(1)], unlimited, F, policy, now=NOW).create == ()


def test_without_caps_nothing_is_held():
    d = st.decide("intake", [issue(1)], [], F, P, now=NOW)
    assert d.create == (st.Create("intake-i1", (1,)),) and d.summary.held == ""


def test_jira_hmac_signature_in_x_hub_signature_only():
    body = b'{"webhookEvent":"jira:issue_created"}'
    good = github_signature("s3cret", body)
    assert st.verify_delivery("s3cret", {"x-hub-signature": good}, body, provider="jira")
    assert not st.verify_delivery("s3cret", {"x-hub-signature": github_signature("wrong", body)}, body,
                                  provider="jira")
    assert not st.verify_delivery("s3cret", {"x-hub-signature": good}, body + b" ", provider="jira")
    # another provider's scheme does not open a Jira intake
    assert not st.verify_delivery("s3cret", {"x-hub-signature-256": good}, body, provider="jira")
    assert not st.verify_delivery("s3cret", {"x-gitlab-token": "s3cret"}, body, provider="jira")
    assert not st.verify_delivery("s3cret", {"x-hub-signature": "sha1=" + good[7:]}, body, provider="jira")


def linear_body(stamp: object) -> bytes:
    return json.dumps({"action": "create", "type": "Issue", "webhookTimestamp": stamp}).encode()


def linear_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize(("stamp", "accepted"), [
    (NOW_MS, True), (NOW_MS - 60_000, True), (NOW_MS + 60_000, True),
    (NOW_MS - 60_001, False), (NOW_MS + 60_001, False), (None, False), ("1800000000000", False), (True, False),
    (float(NOW_MS), False),
])
def test_linear_signature_and_a_signed_timestamp_within_a_minute(stamp, accepted):
    body = linear_body(stamp)
    headers = {"linear-signature": linear_signature("s3cret", body)}
    assert st.verify_delivery("s3cret", headers, body, provider="linear", now_ms=NOW_MS) is accepted


def test_linear_refuses_a_bad_signature_a_missing_one_and_another_scheme():
    body = linear_body(NOW_MS)
    assert not st.verify_delivery("s3cret", {"linear-signature": linear_signature("wrong", body)}, body,
                                  provider="linear", now_ms=NOW_MS)
    assert not st.verify_delivery("s3cret", {}, body, provider="linear", now_ms=NOW_MS)
    assert not st.verify_delivery("s3cret", {"x-hub-signature-256": github_signature("s3cret", body)}, body,
                                  provider="linear", now_ms=NOW_MS)
    signed_garbage = b"[" * 100_000  # signed but not JSON within the budget: refused, never raised
    assert not st.verify_delivery("s3cret", {"linear-signature": linear_signature("s3cret", signed_garbage)},
                                  signed_garbage, provider="linear", now_ms=NOW_MS)
