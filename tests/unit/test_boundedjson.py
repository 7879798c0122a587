"""api.boundedjson: the cost of a text is counted before it is parsed, and the count bounds the real cost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from longshot.api import boundedjson as bj

WIDE = bj.Budget(max_bytes=1 << 24, max_values=1 << 24, max_depth=64)


def _values(value: Any) -> int:
    """The values of a parsed document, object keys included (what the budget bounds)."""
    if isinstance(value, dict):
        return 1 + sum(1 + _values(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_values(v) for v in value)
    return 1


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


DOCUMENTS = [
    "0", '""', "[]", "{}", "[[],[],[]]", '{"a": [1, 2, {"b": null}], "c": "x, y: [z] {w}"}',
    '["\\\\", "\\"", "a\\"b,c:d[e{f", [[["deep"]]]]', '{"k": {"k": {"k": {"k": [true, false, 1.5e3]}}}}',
    json.dumps([{"number": i, "title": f"t{i}, with: [brackets]", "labels": [{"name": "x"}]} for i in range(300)]),
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_the_count_bounds_the_values_and_the_depth_is_exact(text: str) -> None:
    parsed = json.loads(text)
    cost = bj.cost(text, depth_limit=64)
    assert cost.values >= _values(parsed)
    assert cost.depth == _depth(parsed)
    assert bj.loads(text, WIDE) == parsed
    assert bj.loads(text.encode(), WIDE) == parsed


def test_text_inside_strings_is_not_counted() -> None:
    text = json.dumps(["a, b: c [d] {e}" * 10_000])
    assert bj.cost(text).values == 2 and bj.cost(text).depth == 1


def test_strings_across_scan_chunks_are_still_strings() -> None:
    text = b'["' + b",[" * 400_000 + b'", 1]'
    assert bj.cost(text).values == 3 and bj.cost(text).depth == 1


@pytest.mark.parametrize("body", [b"[" + b"[]," * 2_000_000 + b"[]]", b"[" + b'"ab",' * 1_000_000 + b'"a"]',
                                  b"[" + b'{"a":{}},' * 500_000 + b"{}]"])
def test_an_amplifying_body_is_refused_before_it_is_parsed(body: bytes) -> None:
    with pytest.raises(bj.Refused, match="more than 100000 JSON values") as refused:
        bj.loads(body, bj.Budget(max_bytes=len(body), max_values=100_000))
    assert refused.value.reason == "too_many_values"


def test_the_scan_of_a_refused_body_stops_early() -> None:
    body = b"[" + b"[]," * 3_000_000 + b"[]]"
    assert bj.cost(body, value_limit=1000).values < 300_000


@pytest.mark.parametrize(("text", "reason", "words"), [
    (b"[" * 40 + b"]" * 40, "too_deep", "more than 32 levels"),
    (b"[" * 8_000_000, "too_deep", "more than 32 levels"),
    (b" " * 101, "too_large", "101 bytes, more than the 100"),
    (b"[1,", "not_json", "not JSON"),
    (b'["\xff"]', "not_json", "not JSON"),
    (b"1" * 5000, "not_json", "not JSON"),  # past int's digit limit
])
def test_refusals_say_which_limit(text: bytes, reason: str, words: str) -> None:
    budget = bj.Budget(max_bytes=100 if reason == "too_large" else 1 << 24, max_values=1 << 24)
    with pytest.raises(bj.Refused, match=words) as refused:
        bj.loads(text, budget)
    assert refused.value.reason == reason


def test_a_hook_sees_every_object() -> None:
    seen: list[int] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen.append(len(pairs))
        return dict(pairs)

    assert bj.loads(b'{"a": {"b": 1}}', WIDE, object_pairs_hook=hook) == {"a": {"b": 1}}
    assert seen == [1, 1]
