"""Handoff parsing never takes the operator down: size and depth limits before parsing, only HandoffError out."""

from __future__ import annotations

import json

import pytest

from longshot.api import handoff as ho


def worker(**fields: object) -> ho.Handoff:
    return ho.Handoff(task="t1", role="worker", outcome="succeeded", **fields)


def pointer(size: int, data: bytes = b"") -> str:
    return json.dumps({"kind": "HandoffPointer", "ref": ho.handoff_ref("ns", "b", "t1", 1), "commit": "a" * 40,
                       "sha256": ho.digest(data), "size": size})


@pytest.mark.parametrize(("text", "why"), [
    ("[" * 4000, "more than 32 levels deep"),
    ('{"a":' * 5000, "more than 32 levels deep"),
    ('{"kind": "Handoff", "x": ' + "[" * 40 + "]" * 40 + "}", "more than 32 levels deep"),
    ('"' + '\\"' * 20000, "not JSON"),  # an unterminated string full of escaped quotes
    ("\ud800", r"not JSON|not UTF-8|could not be read"),
    ("x" * (ho.MAX_INLINE_BYTES + 1), "more than the 65536 accepted"),
    (pointer(36 * 1024 * 1024), "37748736 bytes, more than the 8388608 accepted"),
    ('{"kind": "Handoff", "task": "t1", "role": "worker", "outcome": "succeeded", "attempt": 1e999}', "attempt"),
    ('{"kind": ' + '"' + "k" * 5000 + '"}', "kind 'kkkk"),
])
def test_hostile_termination_messages_become_handoff_errors(text: str, why: str) -> None:
    with pytest.raises(ho.HandoffError, match=why) as err:
        ho.parse_termination_message(text)
    assert len(str(err.value)) < 600  # the message fits a condition, whatever the input


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    h = worker(summary="[" * 3000 + '"\\' + "{" * 100, reasons=["]]]]", "[[[["])
    assert ho.parse_termination_message(ho.encode(h).decode()) == h
    assert ho.parse_handoff_bytes(ho.encode(h)) == h


@pytest.mark.parametrize(("text", "deep"), [
    ("[]", False), ("[" * 32 + "]" * 32, False), ("[" * 33 + "]" * 33, True),
    ('[{"a": [1, {"b": "]]]]]]"}]}]', False), ('["\\\\", [[["x"]]]]', False), ('["\\\\\\"[[["]', False),
    (b'["a"' + b"," * 300_000 + b"[" * 33, True),  # brackets after a long first chunk still count
    (b'["' + b"x" * 600_000 + b'"' + b"[" * 40, True),  # a string across chunks, then a bomb
    (b'["' + b"[" * 600_000 + b'"]', False),  # brackets in a string across chunks
])
def test_nesting_scan(text: str | bytes, deep: bool) -> None:
    assert ho.nesting_exceeds(text, 32) is deep


def test_pointer_bytes_are_bounded_and_checked() -> None:
    h = ho.Handoff(task="t1", role="planner", outcome="succeeded",
                   tasks=[ho.PlannedTask(name=f"t{i}", description="x" * 100) for i in range(200)])
    data = ho.encode(h)
    parsed = ho.parse_termination_message(pointer(len(data), data))
    assert isinstance(parsed, ho.HandoffPointer)
    assert len(ho.parse_handoff_bytes(data, parsed).tasks) == 200
    with pytest.raises(ho.HandoffError, match="more than the 8388608 accepted"):
        ho.parse_handoff_bytes(b" " * (ho.MAX_HANDOFF_BYTES + 1))
    many = json.dumps({"kind": "Handoff", "task": "t1", "role": "planner", "outcome": "succeeded",
                       "tasks": [{"name": f"t{i}", "description": "x"} for i in range(1001)]}).encode()
    with pytest.raises(ho.HandoffError, match="1001 tasks, more than the 1000"):
        ho.parse_handoff_bytes(many)
    bomb = b"[" * 100_000
    with pytest.raises(ho.HandoffError, match="levels deep"):
        ho.parse_handoff_bytes(bomb, ho.HandoffPointer.model_validate_json(pointer(len(bomb), bomb)))
    with pytest.raises(ho.HandoffError, match=r"not UTF-8|not JSON"):
        ho.parse_handoff_bytes(b'{"kind": "Handoff", "summary": "\xff\xfe"}')
