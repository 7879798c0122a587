"""The roadmap parser on hostile text: the item pattern cannot backtrack (it once took 3.9 s on one line with
20,000 trailing spaces), gives what the old pattern gave, and a roadmap past the line or item bound is refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import roadmap
from property_budget import examples

MAX_BYTES = 1024 * 1024  # vcs.speculate.MAX_ROADMAP_BYTES (core cannot import vcs)

_OLD_ITEM = re.compile(
    r"^(?P<lead>[ \t]*)(?P<bullet>[-*+]|[0-9]{1,9}[.)])[ \t]+\[(?P<mark>[ xX])\](?:[ \t]+(?P<text>.*?))?[ \t]*\r?$"
)

PIECES = [" ", "\t", "\r", "-", "*", "+", "1.", "2)", "[", "]", " ", "x", "X", "a", "b c", "#", "`", "~", "\x1f",
          "é", "[ ]", "[x]", "- [ ] "]


@settings(max_examples=examples(1000), deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_the_item_pattern_matches_what_the_backtracking_one_matched(pieces: list[str]) -> None:
    line = "".join(pieces)
    old, new = _OLD_ITEM.match(line), roadmap._item(line)
    assert (old is None) == (new is None)
    if old and new:
        assert (old["lead"], old["bullet"], old["mark"], old.start("mark")) == \
               (new["lead"], new["bullet"], new["mark"], new.start("mark"))
        assert (old["text"] or "").strip() == (new["text"] or "").strip()


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(["- [ ]", "- [ ] a", "1. [x]", "* [X] b"]), st.sampled_from([" ", "\t", " \t", "a ", " \r"]),
       st.integers(1, 100_000))
def test_an_item_line_with_a_long_repeated_tail_parses(head: str, tail: str, n: int) -> None:
    line = head + tail * n + "z"
    items = roadmap.parse(line)
    expected = (head.split("]", 1)[1] + (tail * n) + "z").strip()
    if not (head.split("]", 1)[1] or tail.startswith((" ", "\t"))):
        expected = ""  # "- [ ]a...": no blank after the box, no item
    assert [i.title for i in items] == ([expected] if expected else [])
    line = head + tail * n
    items = roadmap.parse(line)
    expected = (head.split("]", 1)[1] + (tail * n)).strip()
    if expected and head.split("]", 1)[1] == "" and not tail.startswith((" ", "\t")):
        expected = ""  # "- [ ]a...": no blank after the box, no item
    assert [i.title for i in items] == ([expected] if expected else [])


@pytest.mark.parametrize("text", [
    "- [ ] x" + " " * (MAX_BYTES - 9) + "y",  # the shape at the size bound (20,000 spaces: 3.9 s before)
    "- [ ] x" + " \t" * (MAX_BYTES // 2 - 6) + "y\r",
    "- [ ] x" + " " * (MAX_BYTES - 8),
    "- [ ]" + " \t" * (MAX_BYTES // 2 - 4) + "\r",
    "1. [x] " + "a " * (MAX_BYTES // 2 - 4),
    "```" * (MAX_BYTES // 3),
    ("- [ ] " + "a" * 200 + "\n") * 5000 + "b\n" * 14_000,  # the most items, then lines, within the bounds
])
def test_worst_roadmaps_at_the_size_bound_parse(text: str) -> None:
    tasks = roadmap.plan(text)
    assert len(tasks) <= roadmap.MAX_ITEMS


def test_a_roadmap_past_the_line_or_item_bound_is_refused_with_the_bound() -> None:
    with pytest.raises(roadmap.RoadmapTooLarge, match="20001 lines, more than the 20000"):
        roadmap.parse("a\n" * 20_000)
    with pytest.raises(roadmap.RoadmapTooLarge, match="more than 5000 checklist items"):
        roadmap.parse("- [ ] a\n" * 5001)
    assert len(roadmap.plan("- [ ] a\n" * 5000)) == 5000
    assert isinstance(roadmap.RoadmapTooLarge("x"), ValueError)
