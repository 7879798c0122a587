"""The Jira and Linear clients against the local tracker (tracker_server.py): Jira's REST API v2 (Cloud and Data
Center paging and auth), Linear's GraphQL API executed on Linear's schema (graphql-core on the vendored
tests/fixtures/contracts/linear-schema.graphql): the same filters as GitHub's, write-back (a comment once, then a
transition or a state change), authors' write access, rate limits and a refused key."""

from __future__ import annotations

import base64

import pytest
from tracker_server import FakeClock, tracker_server

from longshot.api.buildrequest import IssueSource
from longshot.runtime import trackers

pytestmark = pytest.mark.integration

TOKEN = "jira-and-linear-" + "s3cr3t" * 4
EMAIL = "bot@example.com"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def server(clock):
    with tracker_server(clock, TOKEN) as s:
        yield s


def seed(project, count=230):
    """Every third labelled longshot+ready, every seventh closed; issue n by alice (a member) or, every fourth, by
    mallory (a stranger); assigned to bot."""
    for n in range(1, count + 1):
        project.add(n, f"Issue {n}", body=f"Body of {n}", labels=["longshot", "ready"] if n % 3 == 0 else ["longshot"],
                    state="closed" if n % 7 == 0 else "open", assignees=["bot"],
                    author="mallory" if n % 4 == 0 else "alice", milestone="v1" if n == 3 else None)


def expected(count=230):
    return [n for n in range(1, count + 1) if n % 3 == 0 and n % 7 != 0]


def jira(server, clock, *, cloud=True, **options):
    source = IssueSource(provider="jira", url=server.jira_url, repository="PROJ", **options)
    return trackers.make_tracker(source, TOKEN, email=EMAIL if cloud else None, sleep=clock.sleep, clock=clock)


def linear(server, clock, token=TOKEN, **options):
    source = IssueSource(provider="linear", url=server.linear_url, repository="ENG", **options)
    return trackers.make_tracker(source, token, sleep=clock.sleep, clock=clock)


@pytest.mark.parametrize("cloud", [True, False], ids=["cloud", "data-center"])
def test_jira_lists_open_labelled_issues_across_pages(server, clock, cloud):
    seed(server.project("PROJ"))
    server.project("OTHER").add(3, "Another project's", labels=["longshot", "ready"])
    with jira(server, clock, cloud=cloud) as client:
        issues = client.list_issues(["longshot", "ready"])
    assert [i.number for i in issues] == expected()
    three = issues[0]
    assert (three.title, three.body, three.labels, three.assignees, three.milestone, three.author) == (
        "Issue 3", "Body of 3", ("longshot", "ready"), ("bot",), "v1", "alice")
    assert three.url == f"{server.jira_url}/browse/PROJ-3"
    searches = [r for r in server.requests if r.path.startswith("/jira/rest/api/2/search")]
    assert len(searches) == 1  # 65 issues: one page of 100
    assert searches[0].path == ("/jira/rest/api/2/search/jql" if cloud else "/jira/rest/api/2/search")
    assert searches[0].query["jql"] == ('project = "PROJ" AND statusCategory != Done AND labels = "longshot" AND '
                                        'labels = "ready" ORDER BY created ASC')
    auth = searches[0].headers["authorization"]
    if cloud:
        assert auth == "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    else:
        assert auth == f"Bearer {TOKEN}"


@pytest.mark.parametrize("cloud", [True, False], ids=["cloud", "data-center"])
def test_jira_pages_are_followed_by_token_or_offset(server, clock, cloud):
    project = server.project("PROJ")
    for n in range(1, 251):
        project.add(n, f"Issue {n}", labels=["longshot"])
    with jira(server, clock, cloud=cloud) as client:
        assert [i.number for i in client.list_issues(["longshot"])] == list(range(1, 251))
    pages = [r.query for r in server.requests if r.path.startswith("/jira/rest/api/2/search")]
    key = "nextPageToken" if cloud else "startAt"
    assert [q.get(key) for q in pages] == [None, "100", "200"]


def test_jira_comments_once_then_closes_with_the_done_transition(server, clock):
    project = server.project("PROJ")
    project.add(5, "Do it", labels=["longshot"])
    with jira(server, clock) as client:
        assert client.comment(5, "Started build x", marker="intake/x/started/5") is True
        assert client.comment(5, "Started build x", marker="intake/x/started/5") is False  # the marker is there
        client.close_issue(5)
        client.close_issue(5)  # already Done: nothing sent
    issue = project.issues[5]
    assert issue.comments == ["Started build x\n\n[longshot:intake/x/started/5]"]
    assert issue.state == "closed"
    transitions = [r for r in server.requests if r.path.endswith("/transitions")]
    assert [r.body for r in transitions] == [{"transition": {"id": "31"}}]


def test_jira_closes_with_the_named_transition_and_names_the_setting_when_there_is_none(server, clock):
    project = server.project("PROJ")
    project.add(1, "One")
    project.add(2, "Two")
    with jira(server, clock, done_state="Start") as client:
        client.close_issue(1)
    assert [r.body for r in server.requests if r.path.endswith("/transitions")] == [{"transition": {"id": "11"}}]
    with jira(server, clock, done_state="Shipped") as client, \
            pytest.raises(trackers.ConfigurationError, match="doneState"):
        client.close_issue(2)
    assert project.issues[2].state == "open"


def test_jira_writers_are_accounts_with_the_edit_permission(server, clock):
    server.project("PROJ")
    with jira(server, clock) as client:
        assert client.writers(["alice", "mallory", "carol"]) == {"alice", "carol"}
    asked = [r.query for r in server.requests if r.path.endswith("/user/permission/search")]
    assert {q["accountId"] for q in asked} == {"alice", "mallory", "carol"}
    assert {q["permissions"] for q in asked} == {"EDIT_ISSUES"}


def test_jira_rate_limit_is_waited_for_and_a_bad_token_is_an_auth_error(server, clock):
    server.project("PROJ").add(1, "One", labels=["longshot"])
    server.rate_limit(1, seconds=7)
    with jira(server, clock) as client:
        assert [i.number for i in client.list_issues(["longshot"])] == [1]
    assert clock.sleeps == [7.0]
    source = IssueSource(provider="jira", url=server.jira_url, repository="PROJ")
    with trackers.make_tracker(source, "wrong", email=EMAIL, sleep=clock.sleep, clock=clock) as client, \
            pytest.raises(trackers.AuthError) as refused:
        client.list_issues()
    assert "wrong" not in str(refused.value) and TOKEN not in str(refused.value)


def test_linear_lists_open_labelled_issues_of_the_team_across_pages(server, clock):
    seed(server.project("ENG"), count=660)
    server.project("OPS").add(3, "Another team's", labels=["longshot", "ready"])
    with linear(server, clock) as client:
        issues = client.list_issues(["longshot", "ready"])
    assert [i.number for i in issues] == expected(660)
    three, four = issues[0], next(i for i in issues if i.number == 12)
    assert (three.title, three.body, three.labels, three.assignees, three.milestone, three.author) == (
        "Issue 3", "Body of 3", ("longshot", "ready"), ("bot",), "v1", "alice")
    assert three.author_writer is True and four.author == "mallory" and four.author_writer is False
    calls = [r for r in server.requests if r.path == "/linear/graphql"]
    assert len(calls) == 2  # 189 issues in pages of 100: the filter is applied by the server
    assert calls[0].headers["authorization"] == TOKEN
    assert calls[0].body["variables"]["filter"]["team"] == {"key": {"eq": "ENG"}}


def test_linear_comments_once_then_moves_the_issue_to_a_completed_state(server, clock):
    project = server.project("ENG")
    project.add(7, "Do it", labels=["longshot"])
    with linear(server, clock) as client:
        assert client.comment(7, "Started build x", marker="intake/x/started/7") is True
        assert client.comment(7, "Started build x", marker="intake/x/started/7") is False
        client.close_issue(7)
        client.close_issue(7)  # completed already: no second update
    issue = project.issues[7]
    assert issue.comments == ["Started build x\n\n[longshot:intake/x/started/7]"]
    assert (issue.state, issue.linear_state) == ("closed", "st-done")
    updates = [r.body for r in server.requests if r.body and "issueUpdate" in r.body["query"]]
    assert [u["variables"] for u in updates] == [{"id": "uuid-ENG-7", "input": {"stateId": "st-done"}}]


def test_linear_named_state_and_errors(server, clock):
    project = server.project("ENG")
    project.add(1, "One")
    with linear(server, clock, done_state="canceled") as client:
        client.close_issue(1)
    assert project.issues[1].linear_state == "st-no"
    project.add(2, "Two")
    with linear(server, clock, done_state="Shipped") as client, \
            pytest.raises(trackers.ConfigurationError, match="doneState"):
        client.close_issue(2)
    with linear(server, clock, token="lin_api_wrong") as client, pytest.raises(trackers.AuthError) as refused:
        client.list_issues()
    assert "lin_api_wrong" not in str(refused.value)
    server.rate_limit(1)
    with linear(server, clock) as client, pytest.raises(trackers.RateLimited) as limited:
        client.list_issues()
    assert limited.value.retry_at == pytest.approx(clock() + 31)


def test_jira_and_linear_issues_are_described_by_their_key(server, clock):
    server.project("PROJ").add(4, "Fix it", body="Please", labels=["longshot"], author="alice")
    server.project("ENG").add(4, "Fix it", body="Please", labels=["longshot"], author="alice")
    with jira(server, clock) as j, linear(server, clock) as lin:
        (ji,), (li,) = j.list_issues(), lin.list_issues()
    assert (ji.key, li.key) == ("PROJ-4", "ENG-4")
    for issue, name in ((ji, "PROJ-4"), (li, "ENG-4")):
        text = trackers.describe(issue)
        assert f'source="issue {name} by alice"' in text and f"(Issue {name}: {issue.url})" in text
