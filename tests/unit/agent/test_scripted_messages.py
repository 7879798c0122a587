"""The scripted backend takes people's messages: ``await_message`` waits (bounded) for the next one and writes it into
the checkout (agent.backends.scripted; docs/agent.md, "Talking to a running agent"). The inbox's gateway is a fake
``fetch`` behind the same interface. The ``run`` steps an interrupt kills (real commands) are in
tests/integration/agent/test_agent_scripted_messages.py."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from longshot.agent import errors, events, messages, redact, sandbox, tools
from longshot.agent.backends import base, scripted

pytestmark = pytest.mark.unit


def msg(i: int, text: str = "hi", interrupt: bool = False) -> messages.Message:
    return messages.Message(i, text, interrupt)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def idle(wait: float) -> list[messages.Message]:
    """The fake gateway's long poll with nothing to hand over: it answers after ``wait`` seconds."""
    threading.Event().wait(wait)
    return []


def run_script(tmp_path: Path, steps: list[Any], inbox: messages.Inbox | None) -> tuple[tools.Finish, str]:
    """Run ``steps`` with the scripted backend in a checkout at ``tmp_path/repo``; the finish and the events."""
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "script.yaml").write_text(yaml.safe_dump({"steps": steps}))
    checkout = tmp_path / "repo"
    checkout.mkdir()
    out = io.StringIO()
    ev = events.Events(redact.Redactor([]), stream=out)
    box = sandbox.Sandbox(checkout, interrupt=inbox.interrupted if inbox is not None else None,
                          watching=inbox.watching if inbox is not None else None)
    task = SimpleNamespace(task="b1-t1", build="b1", role="worker", attempt=1, iteration=1, answer=None,
                           candidates=[])
    session = base.Session(task=cast(Any, task), system_prompt="", prompt="", toolbox=tools.Toolbox(box, ev, "worker"),
                           events=ev, workdir=checkout, scratch=tmp_path, inbox=inbox)
    finish = scripted.ScriptedBackend(tmp_path / "script").run(session)
    return finish, out.getvalue()


def test_await_message_writes_the_messages_in_order_into_the_checkout_and_skips_interrupts(tmp_path: Path) -> None:
    inbox = messages.Inbox(lambda after, wait: [msg(1, "stop", interrupt=True), msg(2, "port 8080"),
                                                msg(3, "and tests")] if after == 0 else [])
    finish, out = run_script(tmp_path, [
        {"await_message": {"write": "first.txt", "timeoutSeconds": 5}, "check": True},
        {"await_message": "second.txt", "check": True},
    ], inbox)
    repo = tmp_path / "repo"
    assert (repo / "first.txt").read_text() == "port 8080" and (repo / "second.txt").read_text() == "and tests"
    assert finish.summary == "applied 2 scripted step(s)"
    assert out.count('"type": "message"') == 3 and "stop" in out  # the interrupt is logged, never written


def test_await_message_waits_for_a_message_and_an_interrupt_alone_does_not_end_the_wait(tmp_path: Path) -> None:
    """Nothing came yet: the step long-polls (the background thread); an interrupt comes first, then the message."""
    long_polls: list[tuple[int, float]] = []
    answers = [[msg(1, "wait", interrupt=True)], [msg(2, "use the quick tests")]]

    def fetch(after: int, wait: float) -> list[messages.Message] | None:
        if wait == 0:
            return []
        long_polls.append((after, wait))
        return answers.pop(0) if answers else idle(wait)

    inbox = messages.Inbox(fetch, wait=0.05, hold_seconds=60).start()
    try:
        run_script(tmp_path, [{"await_message": {"write": "notes/answer.md"}, "check": True}], inbox)
    finally:
        inbox.close()
    assert (tmp_path / "repo" / "notes" / "answer.md").read_text() == "use the quick tests"
    assert long_polls[:2] == [(0, 0.05), (1, 0.05)]


def test_no_message_within_the_timeout_is_a_step_error_and_under_check_fails_the_attempt(tmp_path: Path) -> None:
    inbox = messages.Inbox(lambda after, wait: [], hold_seconds=900, clock=Clock())  # the first wait runs out
    with pytest.raises(errors.AgentError, match=r"step 0 \(await_message\) failed: error: no message came within "
                                                r"5 seconds"):
        run_script(tmp_path, [{"await_message": {"timeoutSeconds": 5, "write": "a.txt"}, "check": True}], inbox)
    assert not (tmp_path / "repo" / "a.txt").exists()


def test_without_check_a_missing_message_is_reported_and_the_script_goes_on(tmp_path: Path) -> None:
    inbox = messages.Inbox(lambda after, wait: [], clock=Clock())
    finish, out = run_script(tmp_path, [{"await_message": {"timeoutSeconds": 0}},
                                        {"write": {"path": "b.txt", "content": "x"}}], inbox)
    assert (tmp_path / "repo" / "b.txt").exists() and finish.summary == "applied 2 scripted step(s)"
    assert '"tool": "await_message", "ok": false' in out and "no message came within 0 seconds" in out


def test_without_a_gateway_no_message_can_come(tmp_path: Path) -> None:
    with pytest.raises(errors.AgentError, match="runs without longshot-gateway"):
        run_script(tmp_path, [{"await_message": {"write": "a.txt"}, "check": True}], None)


@pytest.mark.parametrize("args", [{"timeoutSeconds": -1}, {"timeoutSeconds": "soon"}, {"timeoutSeconds": True},
                                  {"write": 3}, {"path": "a.txt"}])
def test_a_malformed_await_message_step_is_a_configuration_error_naming_its_arguments(tmp_path: Path,
                                                                                      args: dict[str, Any]) -> None:
    inbox = messages.Inbox(lambda after, wait: [])
    with pytest.raises(errors.ConfigError, match=r"step 0 \(await_message\) takes timeoutSeconds"):
        run_script(tmp_path, [{"await_message": args}], inbox)


def test_an_inbox_wait_ends_on_a_message_not_on_an_interrupt() -> None:
    inbox = messages.Inbox(lambda after, wait: [], clock=Clock())
    inbox.add([msg(1, interrupt=True)])
    assert [m.id for m in inbox.await_message(5)] == [1]  # ran out: what came, taken
    inbox.add([msg(2, interrupt=True), msg(3)])
    got = inbox.await_message(5)
    assert [m.id for m in got] == [2, 3] and not inbox.interrupted.is_set()
