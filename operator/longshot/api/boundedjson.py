"""The one parser of untrusted JSON: a size cap and a cost budget, both checked before ``json.loads`` runs.

Parsing JSON with Python's ``json`` costs far more memory than the text: 8 MiB of ``[],`` is 2.8 million lists,
about 226 MiB; 8 MiB of ``"ab",`` is 1.7 million strings, about 100 MiB. The cost is set by the number of
values, not by the size, so a size cap alone does not bound it. :func:`loads` therefore counts, before parsing,
an upper bound of the values the text holds and its nesting depth, and refuses the text when either is above the
caller's :class:`Budget`:

* every value but the first follows a ``[``, ``{``, ``,`` or ``:`` outside a string, so the count of those four
  bytes (plus one) bounds the values (object keys included). Strings are removed first (their commas are text,
  not values), with C-speed byte operations: no Python loop runs per byte or per value;
* the depth is the running sum of ``[``/``{`` (+1) and ``]``/``}`` (-1) outside strings, computed with C-level
  iterators on the brackets alone.

Memory then stays proportional to the real content: the body, a scan copy of it, and at most ``max_values``
Python objects (about 100 bytes each in the worst shape). ``tests/unit/test_parse_sites.py`` fails when a module
of the product parses JSON any other way outside its allowlist of trusted inputs.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

Reason = Literal["too_large", "too_many_values", "too_deep", "not_json"]

DEFAULT_MAX_DEPTH: Final = 32
"""Deepest nesting accepted unless a budget says otherwise (no answer Longshot reads needs more than 8)."""


@dataclass(frozen=True)
class Budget:
    """What one caller's parse may cost."""

    max_bytes: int
    """Largest text parsed (bytes, UTF-8)."""
    max_values: int
    """Most JSON values (arrays, objects, strings, numbers, literals and object keys) the text may hold."""
    max_depth: int = DEFAULT_MAX_DEPTH
    """Deepest nesting of arrays and objects."""


class Refused(ValueError):
    """The text is over its budget or is not JSON; the message is one sentence saying which limit (the caller
    names the source and the fix)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class Cost:
    values: int
    """An upper bound of the values in the text."""
    depth: int
    """The deepest nesting (exact for valid JSON); at most ``depth_limit + 1`` when the scan stopped early."""


_CHUNK = 256 * 1024
_COMPLETE_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_WEIGHT = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def cost(text: str | bytes | bytearray, depth_limit: int = DEFAULT_MAX_DEPTH, value_limit: int | None = None) -> Cost:
    """The :class:`Cost` of ``text``: a linear scan in chunks, with no recursion and no backtracking (strings are
    ``"[^"]*"`` after escapes are removed), safe on any input. It does not validate the JSON. The scan stops at the
    first chunk that takes the values past ``value_limit`` or the depth past ``depth_limit``."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    values = 1
    depth = peak_depth = 0
    in_string = False
    for start in range(0, len(data), _CHUNK):
        chunk = data[start:start + _CHUNK]
        if in_string:
            end = chunk.find(b'"')
            if end < 0:
                continue
            chunk, in_string = chunk[end + 1:], False
        chunk = _COMPLETE_STRING.sub(b"", chunk)
        unterminated = chunk.find(b'"')
        if unterminated >= 0:
            chunk, in_string = chunk[:unterminated], True
        values += chunk.count(b",") + chunk.count(b":")
        brackets = chunk.translate(None, _NOT_BRACKETS)
        if not brackets:
            continue
        opened = brackets.count(b"[") + brackets.count(b"{")
        values += opened
        if peak_depth <= depth_limit and depth + opened > peak_depth:
            # depth after each bracket = sum(weights) - position, weights 2 for an opening and 0 for a closing one
            peak = max(map(operator.sub, itertools.accumulate(brackets.translate(_BRACKET_WEIGHT)),
                           range(1, len(brackets) + 1)))
            peak_depth = max(peak_depth, depth + peak)
        depth += 2 * opened - len(brackets)
        if peak_depth > depth_limit or (value_limit is not None and values > value_limit):
            break
    return Cost(values=values, depth=peak_depth)


def check(text: str | bytes | bytearray, budget: Budget) -> None:
    """Raise :class:`Refused` when ``text`` is over ``budget`` (size, values or depth)."""
    size = len(text.encode("utf-8", "replace")) if isinstance(text, str) else len(text)
    if size > budget.max_bytes:
        raise Refused("too_large", f"it is {size} bytes, more than the {budget.max_bytes} accepted")
    if size <= budget.max_depth and size <= budget.max_values:
        return  # too short to hold more values or deeper nesting than allowed
    measured = cost(text, budget.max_depth, budget.max_values)
    if measured.depth > budget.max_depth:
        raise Refused("too_deep", f"it nests arrays or objects more than {budget.max_depth} levels deep")
    if measured.values > budget.max_values:
        raise Refused("too_many_values", f"it holds more than {budget.max_values} JSON values")


def loads(text: str | bytes | bytearray, budget: Budget,
          object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads(text)`` once ``text`` is known to be within ``budget``; :class:`Refused` otherwise, and for
    text that is not JSON (every exception of the parse is one). ``object_pairs_hook`` is ``json.loads``' (a
    caller that needs a few keys drops the rest of each object as it is built)."""
    check(text, budget)
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as e:
        raise Refused("not_json", f"it is not JSON ({e.msg} at character {e.pos})") from None
    except (ValueError, RecursionError):  # invalid UTF-8, a number past int's digit limit
        raise Refused("not_json", "it is not JSON (invalid text or number)") from None
