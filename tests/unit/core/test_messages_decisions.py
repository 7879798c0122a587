"""core.messages: which messages are accepted, which an attempt gets, what is recorded as delivered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from longshot.core import messages as m

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def task(phase: str = "Running", attempts: list[dict[str, Any]] | None = None,
         messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "b1-t1"}, "spec": {"messages": messages or []},
            "status": {"phase": phase, "attempts": [{"number": 1, "pod": "b1-t1-a1"}] if attempts is None
                       else attempts}}


def test_a_message_to_a_running_attempt_gets_the_next_id_the_attempt_and_the_author():
    made = m.accept(task(attempts=[{"number": 1, "endTime": "x"}, {"number": 2}],
                         messages=[{"id": 1, "text": "a", "attempt": 1}, {"id": 4, "text": "b", "attempt": 1}]),
                    "use port 8080", interrupt=True, author="alice", now=NOW)
    assert made == {"id": 5, "text": "use port 8080", "attempt": 2, "interrupt": True, "author": "alice",
                    "sentAt": "2026-11-28T12:00:00Z"}
    plain = m.accept(task(), "hi", interrupt=False, author=None, now=NOW)
    assert isinstance(plain, dict) and "interrupt" not in plain and "author" not in plain and plain["id"] == 1


@pytest.mark.parametrize(("t", "text", "words"), [
    (task(phase="Pending", attempts=[]), "hi", "has no running attempt (phase Pending)"),
    (task(phase="Succeeded", attempts=[{"number": 1, "endTime": "x"}]), "hi", "(phase Succeeded)"),
    (task(attempts=[{"number": 1, "endTime": "x"}]), "hi", "no running attempt"),
    (task(), "   ", "the message is empty"),
    (task(), "x" * (m.MAX_TEXT + 1), f"at most {m.MAX_TEXT}"),
    (task(messages=[{"id": i, "text": "x", "attempt": 1} for i in range(1, m.MAX_MESSAGES + 1)]), "hi",
     "already holds 50 messages"),
])
def test_a_message_that_cannot_be_sent_is_refused_in_one_sentence(t, text, words):
    refused = m.accept(t, text, interrupt=False, author=None, now=NOW)
    assert isinstance(refused, m.Refused) and words in refused.reason and "\n" not in refused.reason


def test_an_attempt_gets_only_its_own_messages_after_the_id_it_names_in_order():
    sent = [{"id": 3, "text": "c", "attempt": 2}, {"id": 1, "text": "a", "attempt": 1},
            {"id": 2, "text": "b", "attempt": 2, "interrupt": True}, {"id": 4, "text": "d", "attempt": 2}]
    assert m.pending(sent, attempt=2, after=0) == [{"id": 2, "text": "b", "interrupt": True},
                                                  {"id": 3, "text": "c", "interrupt": False},
                                                  {"id": 4, "text": "d", "interrupt": False}]
    assert [x["id"] for x in m.pending(sent, attempt=2, after=3)] == [4]
    assert m.pending(sent, attempt=1, after=1) == []
    assert m.pending(sent, attempt=3, after=0) == []  # never another attempt's


def test_an_answer_is_bounded_but_always_carries_one_message():
    sent = [{"id": i, "text": "x" * 3000, "attempt": 1} for i in range(1, 6)]
    assert [x["id"] for x in m.pending(sent, attempt=1, after=0, max_bytes=7000)] == [1, 2]
    assert [x["id"] for x in m.pending(sent, attempt=1, after=0, max_bytes=10)] == [1]


def test_hostile_entries_are_skipped():
    sent: list[Any] = ["x", {"id": True, "text": "a", "attempt": 1}, {"id": 2, "text": 5, "attempt": 1},
                      {"id": 3, "text": "ok", "attempt": 1}]
    assert m.pending(sent, attempt=1, after=0) == [{"id": 3, "text": "ok", "interrupt": False}]


def test_a_delivery_is_recorded_once_and_the_record_is_bounded():
    first = m.deliver([], [2, 1], attempt=1, now=NOW)
    assert first == [{"id": 1, "attempt": 1, "time": "2026-11-28T12:00:00Z"},
                     {"id": 2, "attempt": 1, "time": "2026-11-28T12:00:00Z"}]
    assert m.deliver(first, [1, 2], attempt=1, now=NOW) is None
    old = [{"id": i, "attempt": 1} for i in range(1, m.MAX_MESSAGES + 1)]
    grown = m.deliver(old, [m.MAX_MESSAGES + 1], attempt=2, now=NOW)
    assert grown is not None and len(grown) == m.MAX_MESSAGES and grown[-1]["id"] == m.MAX_MESSAGES + 1


@pytest.mark.parametrize(("delivered", "running", "expected"), [
    ([{"id": 1, "attempt": 1}], None, "Delivered"),
    ([], 1, "Sent"),
    ([], 2, "Expired"),
    ([], None, "Expired"),
])
def test_the_state_of_a_message(delivered, running, expected):
    assert m.state({"id": 1, "attempt": 1}, delivered, running) == expected
