"""The scripted backend's ``run`` steps and people's interrupts, with real commands: an interrupt kills the running
command (``sleep 600``) and the script goes on with the next message; an interrupt that came before a command does
not stop it (agent.backends.scripted; docs/agent.md, "Talking to a running agent"). The inbox's gateway is a fake
``fetch`` behind the same interface (tests/integration/test_messages.py has the real gateway)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml

from longshot.agent import errors, events, messages, redact, sandbox, tools
from longshot.agent.backends import base, scripted

pytestmark = pytest.mark.integration


def msg(i: int, text: str = "hi", interrupt: bool = False) -> messages.Message:
    return messages.Message(i, text, interrupt)


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


def test_what_the_script_does_next_depends_on_the_message(tmp_path: Path) -> None:
    inbox = messages.Inbox(lambda after, wait: [msg(1, "quick")] if after == 0 else [])
    run_script(tmp_path, [
        {"await_message": {"write": "NEXT.md", "timeoutSeconds": 5}, "check": True},
        {"run": {"command": "if grep -q quick NEXT.md; then echo quick > ran.txt; else echo all > ran.txt; fi",
                 "check": True}},
    ], inbox)
    assert (tmp_path / "repo" / "ran.txt").read_text() == "quick\n"


def test_an_interrupt_kills_the_running_command_and_the_script_goes_on_with_the_next_message(tmp_path: Path) -> None:
    started = tmp_path / "repo" / "started"
    answers = [[msg(1, "stop that", interrupt=True)], [msg(2, "run only the quick tests")]]

    def fetch(after: int, wait: float) -> list[messages.Message] | None:
        if wait == 0:
            return []
        if after == 0 and not started.exists():  # the interrupt once the command runs
            return idle(wait)
        return answers.pop(0) if answers else idle(wait)

    inbox = messages.Inbox(fetch, wait=0.05, hold_seconds=60).start()
    began = time.monotonic()
    try:
        _, out = run_script(tmp_path, [
            {"run": "touch started && sleep 600"},
            {"await_message": {"write": "next.txt", "timeoutSeconds": 60}, "check": True},
        ], inbox)
    finally:
        inbox.close()
    assert time.monotonic() - began < 30  # not the 600 s of the command
    assert "interrupted by a person" in out
    assert (tmp_path / "repo" / "next.txt").read_text() == "run only the quick tests"
    assert not inbox.interrupted.is_set()


def test_an_interrupted_run_step_fails_the_attempt_under_check(tmp_path: Path) -> None:
    started = tmp_path / "repo" / "started"

    def fetch(after: int, wait: float) -> list[messages.Message] | None:
        if wait == 0:
            return []
        return [msg(1, "stop", interrupt=True)] if started.exists() else idle(wait)

    inbox = messages.Inbox(fetch, wait=0.05).start()
    try:
        with pytest.raises(errors.AgentError, match="interrupted by a person"):
            run_script(tmp_path, [{"run": {"command": "touch started && sleep 600", "check": True}}], inbox)
    finally:
        inbox.close()


def test_an_interrupt_that_came_before_a_command_does_not_stop_it(tmp_path: Path) -> None:
    inbox = messages.Inbox(lambda after, wait: [])
    inbox.add([msg(1, "stop the earlier one", interrupt=True)])
    assert inbox.interrupted.is_set()
    run_script(tmp_path, [{"run": {"command": "echo done > out.txt", "check": True}}], inbox)
    assert (tmp_path / "repo" / "out.txt").read_text() == "done\n"


