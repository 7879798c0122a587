"""A tracker's answers are the BuildRequest author's text: the Link header is matched in linear time, an answer
is read up to a size bound, and pagination ends; issue bodies and handoff JSON stay bounded."""

from __future__ import annotations

import contextlib
import json
import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.api import handoff as hmod
from longshot.runtime import trackers
from property_budget import examples

pytestmark = pytest.mark.unit

_OLD_LINK = re.compile(r'\s*<([^>]*)>\s*;(.*)$')
_OLD_REL = re.compile(r'(^|;)\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)')


def old_link_next(header: str | None) -> str | None:
    if not header:
        return None
    for part in header.split(","):
        match = _OLD_LINK.match(part)
        if match and _OLD_REL.search(match.group(2)):
            return match.group(1)
    return None


PIECES = ["<", ">", ";", ",", " ", "\t", '"', "rel", "=", "next", "prev", "https://t/x?page=2", "a", "nextx"]


@settings(max_examples=examples(1500), deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_the_link_header_gives_what_the_backtracking_patterns_gave(pieces: list[str]) -> None:
    header = "".join(pieces)
    assert trackers._link_next(header) == old_link_next(header)


@pytest.mark.parametrize("header", [
    "<https://t/x>; rel=" + "a" * 60_000,
    "<https://t/x>;" + " " * 60_000 + "rel=",
    "<https://t/x>; rel=\"" + "a " * 30_000,
    "<" * 60_000,
])
def test_worst_link_headers_at_the_bound_give_no_next_page(header: str) -> None:
    assert trackers._link_next(header) is None


def tracker(handler: object) -> trackers.Tracker:
    return trackers.GitHub(repository="o/r", token="t0ken", url="https://tracker.example",
                           transport=httpx.MockTransport(handler), sleep=lambda s: None)  # type: ignore[arg-type]


def test_an_answer_larger_than_the_bound_fails_the_listing_without_reading_it_all() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        def body() -> object:
            for _ in range(trackers.MAX_RESPONSE_BYTES // (1024 * 1024) + 4):
                sent.append(1)
                yield b"[" + b" " * (1024 * 1024 - 1)
        return httpx.Response(200, content=body())  # type: ignore[arg-type]

    with tracker(handler) as t, pytest.raises(trackers.TrackerError, match="larger than 8388608 bytes"):
        t.list_issues()
    assert len(sent) <= trackers.MAX_RESPONSE_BYTES // (1024 * 1024) + 2


def test_next_page_links_that_never_end_fail_the_listing_at_the_page_bound() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json=[], headers={"link": f'<https://tracker.example/next?page={page + 1}>; '
                                                             'rel="next"'})

    with tracker(handler) as t, pytest.raises(trackers.TrackerError, match="more than 100 pages"):
        t.list_issues()
    assert t.requests == trackers.MAX_PAGES


def test_a_bounded_answer_is_read_as_before() -> None:
    issue = {"number": 7, "title": "t", "body": "b" * 100_000, "labels": [], "html_url": "https://x/7"}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[issue])

    with tracker(handler) as t:
        (got,) = t.list_issues()
    assert got.number == 7 and len(trackers.describe(got)) < trackers.MAX_BODY + 500


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=2000), st.integers(0, 3))
def test_hostile_handoff_text_is_a_handoff_or_a_handoff_error(text: str, wrap: int) -> None:
    """Whatever a planner writes: a Handoff or a HandoffError, never another exception."""
    data = [text, json.dumps(text), json.dumps({"kind": "Handoff", "tasks": [{"scope": [text]}]}),
            '{"kind": "Handoff", "summary": ' + text + "}"][wrap]
    with contextlib.suppress(hmod.HandoffError):
        assert isinstance(hmod.parse_handoff_bytes(data.encode("utf-8", "surrogatepass")), hmod.Handoff)


def test_a_plan_at_the_handoff_bounds_parses() -> None:
    tasks = [{"name": f"t{i}", "description": "d" * 4000, "scope": [f"src/m{i}/f{j}.py" for j in range(4)]}
             for i in range(hmod.MAX_PLAN_TASKS)]
    data = json.dumps({"kind": "Handoff", "task": "p", "role": "planner", "outcome": "succeeded",
                       "tasks": tasks}).encode()
    assert len(data) <= hmod.MAX_HANDOFF_BYTES
    assert len(hmod.parse_handoff_bytes(data).tasks) == hmod.MAX_PLAN_TASKS


# --- the parse budget of an answer (api.boundedjson, trackers.PARSE_BUDGET) ----------------------------------------

AMPLIFYING = {
    "arrays": (b"[" + b"[]," * 1_000_000 + b"[]]", "more than 100000 JSON values"),
    "deep": (b"[" * 100 + b"]" * 100, "more than 16 levels deep"),
    "objects": (b"[" + b'{"a":{}},' * 200_000 + b"{}]", "more than 100000 JSON values"),
}


def _answering(body: bytes, status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body,
                                                              headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("shape", sorted(AMPLIFYING))
def test_an_amplifying_answer_is_refused_before_it_is_parsed_naming_the_limit_and_the_field(shape: str) -> None:
    body, words = AMPLIFYING[shape]
    with trackers.GitHub(repository="o/r", token="tok-123", url="https://t.example", transport=_answering(body),
                         sleep=lambda s: None, field="intake.tracker") as gh, \
            pytest.raises(trackers.ConfigurationError) as refused:
        gh.list_issues(["x"])
    message = str(refused.value)
    assert words in message and "refused before it was parsed" in message, message
    assert "spec.intake.tracker.url" in message and "tok-123" not in message


def test_an_answer_that_is_not_json_is_tried_again_not_a_configuration_error() -> None:
    with trackers.GitHub(repository="o/r", token=None, url="https://t.example", transport=_answering(b"<html>"),
                         sleep=lambda s: None) as gh, pytest.raises(trackers.TrackerError) as failed:
        gh.list_issues()
    assert type(failed.value) is trackers.TrackerError and "not JSON" in str(failed.value)



# --- Jira and Linear: the same reader, the same parse budget, pages that end -----------------------------------

def jira_or_linear(provider: str, handler: object) -> trackers.Tracker:
    cls = trackers.Jira if provider == "jira" else trackers.Linear
    return cls(repository="PROJ", token="tok-123", url="https://t.example", field="intake.tracker",
               transport=httpx.MockTransport(handler), sleep=lambda s: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", ["jira", "linear"])
def test_jira_and_linear_answers_larger_than_the_bound_fail_unread(provider: str) -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        def body() -> object:
            for _ in range(trackers.MAX_RESPONSE_BYTES // (1024 * 1024) + 4):
                sent.append(1)
                yield b"{" + b" " * (1024 * 1024 - 1)
        return httpx.Response(200, content=body())  # type: ignore[arg-type]

    with jira_or_linear(provider, handler) as t, pytest.raises(trackers.TrackerError, match="larger than 8388608"):
        t.list_issues()
    assert len(sent) <= trackers.MAX_RESPONSE_BYTES // (1024 * 1024) + 2


@pytest.mark.parametrize("provider", ["jira", "linear"])
@pytest.mark.parametrize("shape", sorted(AMPLIFYING))
def test_jira_and_linear_amplifying_answers_are_refused_before_the_parse(provider: str, shape: str) -> None:
    body, words = AMPLIFYING[shape]
    with jira_or_linear(provider, lambda request: httpx.Response(200, content=body)) as t, \
            pytest.raises(trackers.ConfigurationError) as refused:
        t.list_issues(["x"])
    message = str(refused.value)
    assert words in message and "spec.intake.tracker.url" in message and "tok-123" not in message


def test_jira_pages_that_never_end_fail_at_the_page_bound() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        token = int(request.url.params.get("nextPageToken", "0"))
        return httpx.Response(200, json={"issues": [{"key": "PROJ-1", "fields": {}}], "isLast": False,
                                         "nextPageToken": str(token + 1)})

    t = trackers.Jira(repository="PROJ", token="t", email="a@b", url="https://t.example",
                      transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with t, pytest.raises(trackers.TrackerError, match="more than 100 pages"):
        t.list_issues()
    assert t.requests == trackers.MAX_PAGES


def test_linear_cursors_that_never_end_fail_at_the_page_bound() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = json.loads(request.content)["variables"].get("after") or "0"
        return httpx.Response(200, json={"data": {"issues": {"nodes": [], "pageInfo": {
            "hasNextPage": True, "endCursor": str(int(after) + 1)}}}})

    with jira_or_linear("linear", handler) as t, pytest.raises(trackers.TrackerError, match="more than 100 pages"):
        t.list_issues()
    assert t.requests == trackers.MAX_PAGES


def test_a_linear_error_message_is_cut_and_never_holds_the_key() -> None:
    answer = {"errors": [{"message": "bad tok-123 " + "x" * 100_000, "extensions": {"code": "INVALID_INPUT"}}]}
    with jira_or_linear("linear", lambda request: httpx.Response(400, json=answer)) as t, \
            pytest.raises(trackers.ConfigurationError) as refused:
        t.list_issues()
    assert "tok-123" not in str(refused.value) and len(str(refused.value)) < 1000
