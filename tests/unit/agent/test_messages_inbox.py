"""agent.messages: the runner's inbox (people's messages, fetched in the background) and how the built-in loop
turns them into user turns, holding after an interrupt."""

from __future__ import annotations

import io
import threading
import typing
from typing import Any, cast

import pytest

from longshot.agent import events, messages, redact
from longshot.agent.backends import base
from longshot.api import buildrequest

pytestmark = pytest.mark.unit


def msg(i: int, text: str = "hi", interrupt: bool = False) -> messages.Message:
    return messages.Message(i, text, interrupt)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def test_an_answer_is_parsed_leniently_and_hostile_items_are_skipped():
    data = {"messages": [{"id": 1, "text": "a"}, {"id": 2, "text": "b", "interrupt": True}, "x",
                         {"id": True, "text": "c"}, {"id": 3, "text": ""}, {"id": 4, "text": "y" * 9000}]}
    got = messages.parse(data)
    assert [(g.id, g.interrupt) for g in got] == [(1, False), (2, True), (4, False)]
    assert len(got[-1].text) == messages.MAX_TEXT
    assert messages.parse(["nope"]) == [] and messages.parse({"messages": "x"}) == []


@pytest.mark.parametrize(("taken", "held"), [
    ([], None),
    ([msg(1), msg(2)], None),
    ([msg(1, interrupt=True)], 1),
    ([msg(1, interrupt=True), msg(2)], None),
    ([msg(1), msg(2, interrupt=True), msg(3, interrupt=True)], 3),
])
def test_the_loop_is_held_by_an_interrupt_with_nothing_after_it(taken, held):
    assert messages.held_until(taken) == held


def test_an_interrupt_sets_the_flag_and_taking_clears_it():
    inbox = messages.Inbox(lambda after, wait: [])
    inbox.add([msg(1), msg(2, interrupt=True), msg(2, "again")])
    assert inbox.interrupted.is_set() and inbox.last == 2 and inbox.received == 2
    assert [m.id for m in inbox.take()] == [1, 2]
    assert not inbox.interrupted.is_set() and inbox.take() == []


def test_the_background_thread_asks_after_the_last_id_and_stops_when_the_attempt_is_over():
    asked: list[int] = []
    answers: list[Any] = [[msg(1)], OSError("gateway down"), [msg(2), msg(3)], None]

    def fetch(after: int, wait: float) -> list[messages.Message] | None:
        asked.append(after)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return cast(list[messages.Message] | None, answer)

    inbox = messages.Inbox(fetch)
    inbox._closing.wait = lambda delay: False  # type: ignore[method-assign]  # no real backoff in a unit test
    with inbox.watching():  # a command runs: the thread long-polls
        inbox._run()
    assert asked == [0, 1, 1, 3]
    assert [m.id for m in inbox.take()] == [1, 2, 3]


def test_at_rest_nothing_is_asked_before_a_model_call_one_ask_without_waiting_and_during_a_command_a_long_poll():
    """A thousand agents thinking must cost the gateway (and the API server) nothing: the background thread asks
    only while a command runs or the loop is held; before each model call the loop asks once with wait=0."""
    asked: list[tuple[int, float]] = []
    during = threading.Event()

    def fetch(after: int, wait: float) -> list[messages.Message] | None:
        asked.append((after, wait))
        if wait > 0:
            during.set()
            return [msg(7)]
        return []

    inbox = messages.Inbox(fetch, wait=5.0).start()
    try:
        assert not during.wait(0.3) and asked == []  # at rest: no ask at all
        inbox.check()
        assert asked == [(0, 0.0)]
        with inbox.watching():  # a command runs: the long poll
            assert during.wait(5)
        assert (0, 5.0) in asked
        assert [m.id for m in inbox.take()] == [7]
    finally:
        inbox.close()


def session(inbox: messages.Inbox | None) -> tuple[base.Session, io.StringIO]:
    out = io.StringIO()
    ev = events.Events(redact.Redactor(), stream=out)
    s = base.Session(task=cast(Any, None), system_prompt="", prompt="", toolbox=cast(Any, None), events=ev,
                     workdir=cast(Any, None), scratch=cast(Any, None), inbox=inbox)
    return s, out


def test_messages_become_user_turns_and_ledger_events():
    inbox = messages.Inbox(lambda after, wait: [])
    s, out = session(inbox)
    assert s.inbound() == []
    inbox.add([msg(1, "use port 8080")])
    turns = s.inbound()
    assert len(turns) == 1 and "use port 8080" in turns[0] and "#1" in turns[0]
    assert '"source": "person"' in out.getvalue() or '"source":"person"' in out.getvalue()
    assert session(None)[0].inbound() == []


def test_after_an_interrupt_the_loop_waits_for_the_next_message():
    inbox = messages.Inbox(lambda after, wait: [], hold_seconds=60)
    s, _ = session(inbox)
    inbox.add([msg(1, "stop that", interrupt=True)])
    assert s.interrupted()
    threading.Timer(0.1, lambda: inbox.add([msg(2, "now do the tests")])).start()
    turns = s.inbound()
    assert [("stop that" in t, "now do the tests" in t) for t in turns] == [(True, False), (False, True)]
    assert "interrupted your last tool call" in turns[0]
    assert not s.interrupted()


def test_a_hold_is_bounded_and_then_the_agent_is_told_to_carry_on():
    inbox = messages.Inbox(lambda after, wait: [], hold_seconds=5, clock=Clock())  # the first wait runs out
    s, _ = session(inbox)
    inbox.add([msg(1, "wait", interrupt=True)])
    turns = s.inbound()
    assert len(turns) == 2 and "No message came" in turns[1] and "5 seconds" in turns[1]


def test_every_backend_says_what_it_does_with_messages():
    assert set(base.MESSAGES) == set(typing.get_args(buildrequest.Backend))
    assert base.MESSAGES == {"openai": "turns", "anthropic": "turns", "command": "none", "scripted": "steps"}


def test_the_anthropic_loop_adds_a_message_to_the_user_turn_it_ends_with():
    from longshot.agent.backends import anthropic

    after_results: list[dict[str, Any]] = [{"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                                           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]
    anthropic._user_text(after_results, "msg")
    assert [m["role"] for m in after_results] == ["assistant", "user"]
    assert after_results[-1]["content"][-1] == {"type": "text", "text": "msg"}
    first: list[dict[str, Any]] = [{"role": "user", "content": "the task"}]
    anthropic._user_text(first, "msg")
    assert first == [{"role": "user", "content": [{"type": "text", "text": "the task"},
                                                  {"type": "text", "text": "msg"}]}]
    after_assistant: list[dict[str, Any]] = [{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]
    anthropic._user_text(after_assistant, "msg")
    assert after_assistant[-1] == {"role": "user", "content": [{"type": "text", "text": "msg"}]}
