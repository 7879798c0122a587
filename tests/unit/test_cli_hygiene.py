"""``kubectl longshot`` prints nothing an agent wrote that could drive a terminal: every field of every command
goes through one door (``cli.main.CleanOutput``), Pod logs too unless ``--raw`` is given."""

from __future__ import annotations

import io
from typing import Any

import pytest

from longshot.cli import main as cli

pytestmark = pytest.mark.unit

ESC = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\x9b1m\u202eevil\r\x07"
"""A window title, clear screen, colours, an 8-bit CSI, a bidi override, a carriage return and a bell."""
CLEAN = "redevil"


class FakeKube(cli.Kube):
    """The plugin's API calls answered from memory (a task whose agent wrote escapes everywhere it could)."""

    def __init__(self, log: str = "") -> None:
        super().__init__(api=None, namespace="ns")  # type: ignore[arg-type]
        self.log = log
        task = {"kind": "AgentTask", "metadata": {"name": "b-t", "namespace": "ns", "creationTimestamp": "x"},
                "spec": {"buildRef": {"name": "b"}, "role": "worker"},
                "status": {"phase": "AwaitingInput", "question": f"why {ESC}?",
                           "attempts": [{"number": 1, "pod": "b-t-a1", "model": f"gpt{ESC}",
                                         "exitReason": f"boom{ESC}", "endTime": "t"}]}}
        self.objects = {("BuildRequest", "b"): {"kind": "BuildRequest", "metadata": {"name": "b", "namespace": "ns"},
                                                 "spec": {}, "status": {"phase": f"Running{ESC}"}},
                        ("AgentTask", "b-t"): task}

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def list(self, kind: str) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == kind]

    def pod_log(self, name: str, container: str, tail: int | None) -> str:
        return self.log


def run(argv: list[str], kube: cli.Kube) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out=out, err=err, kube=kube)
    return code, out.getvalue(), err.getvalue()


def controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or c == "\u202e"]


def test_tree_prints_the_model_question_phase_and_exit_reason_without_control_characters():
    code, out, _ = run(["tree", "b"], FakeKube())
    assert code == 0
    assert controls(out) == []
    assert f"model=gpt{CLEAN}" in out and f"why {CLEAN}?" in out and f"Running{CLEAN}" in out


def test_logs_are_cleaned_unless_raw_is_asked_for():
    log = '{"type": "text"}\n' + ESC + "\tindented\n"
    code, out, _ = run(["logs", "b-t"], FakeKube(log))
    assert code == 0 and controls(out) == []
    assert out == '{"type": "text"}\n' + CLEAN + "\tindented\n"  # newlines and tabs stay
    code, out, _ = run(["logs", "b-t", "--raw"], FakeKube(log))
    assert code == 0 and out == log


def test_error_messages_are_cleaned_too():
    code, _, err = run(["tree", f"missing{ESC}"], FakeKube())
    assert code == 1 and controls(err) == [] and "missing" in err


def test_the_door_cleans_every_write():
    raw = io.StringIO()
    door = cli.CleanOutput(raw)
    door.write(f"a{ESC}b\n")
    assert raw.getvalue() == f"a{CLEAN}b\n" and door.raw is raw
