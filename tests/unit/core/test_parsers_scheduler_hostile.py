"""Scope patterns on hostile input: the overlap check is iterative and bounded, the scheduler contains one
build's failure, and scopes the operator writes are cut to the CRD's bounds without getting narrower."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.api import common
from longshot.api import handoff as hmod
from longshot.core import scheduler
from longshot.core.scheduler import BuildView, TaskView
from property_budget import examples

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def old_patterns_overlap(a: str, b: str) -> bool:
    """The recursive check it replaced (the reference; recursion depth = segments, fine for short entries)."""
    pa, pb = scheduler._parse(a), scheduler._parse(b)
    memo: dict[tuple[int, int], bool] = {}

    def ov(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(pa) and j == len(pb):
            r = True
        elif i < len(pa) and pa[i] == "**":
            r = ov(i + 1, j) or (j < len(pb) and ov(i, j + 1))
        elif j < len(pb) and pb[j] == "**":
            r = ov(i, j + 1) or (i < len(pa) and ov(i + 1, j))
        elif i == len(pa) or j == len(pb):
            r = False
        else:
            r = scheduler._segments_overlap(pa[i], pb[j]) and ov(i + 1, j + 1)
        memo[(i, j)] = r
        return r

    return ov(0, 0)


SEGMENTS = ["a", "b", "src", "*", "**", "*.py", "a*", "*b", "[ab]", "?", ".", "", "x.py"]
entries = st.lists(st.sampled_from(SEGMENTS), max_size=8).map("/".join)


@settings(max_examples=examples(1500), deadline=None)
@given(entries, entries)
def test_the_iterative_check_answers_as_the_recursive_one_and_visits_each_position_once(a: str, b: str) -> None:
    hit, steps = scheduler.overlap_steps(a, b)
    assert hit == old_patterns_overlap(a, b)
    assert steps <= (len(scheduler._parse(a)) + 1) * (len(scheduler._parse(b)) + 1)


def test_the_issues_scopes_overlap_without_recursion() -> None:
    """Two tasks with scope "a/"*1000 + "x.py" made the operator-wide select raise RecursionError."""
    deep = "a/" * 1000 + "x.py"
    assert scheduler.patterns_overlap(deep, deep)
    assert not scheduler.patterns_overlap(deep, "a/" * 1000 + "y.py")
    assert scheduler.patterns_overlap("**/" * 1000 + "x.py", deep)
    tasks = [TaskView(f"t{i}", "b", scope=(deep,), created=T0) for i in range(2)]
    chosen = scheduler.select(tasks, [], builds={"b": BuildView("b", max_workers=4)}, global_limit=4)
    assert [t.name for t in chosen.start] == ["t0"] and chosen.failed == {}


def worst_scope(i: int, tail: str) -> str:
    """An entry at the segment bound that agrees with a like one up to its last segment (two entries overlap as
    soon as either side reaches a ``**``: every entry also covers what is below it; so the costly disjoint
    pairs are the literal ones that differ at the end)."""
    return "/".join(["x"] * (common.MAX_SCOPE_SEGMENTS - 1) + [f"*.{tail}{i}"])


def heavy_scope(tail: str) -> tuple[str, ...]:
    return tuple(worst_scope(i, tail) for i in range(common.MAX_SCOPE_ENTRIES))


def test_a_check_of_two_scopes_at_the_bounds_stops_at_its_step_budget_and_answers_overlap() -> None:
    a, b = heavy_scope("a"), heavy_scope("b")
    assert not scheduler.patterns_overlap(a[0], b[0])  # each pair is disjoint...
    hit, steps = scheduler.scope_check(a, b)
    assert hit  # ...but the whole check would cost too much: the safe answer (a task waits)
    assert scheduler.MAX_SCOPE_STEPS < steps <= scheduler.MAX_SCOPE_STEPS + 40 * 40
    assert scheduler.scope_check(a, b) == (True, 0)  # remembered: the next plan pays nothing
    small = (a[0], a[1])
    assert scheduler.scope_check(small, (b[0],)) == (False, 2 * (common.MAX_SCOPE_SEGMENTS + 0))


def test_a_builds_scope_checks_stop_at_their_share_of_a_plan_and_go_on_in_the_next() -> None:
    scheduler._scope_cache.clear()
    running = [TaskView("r", "b", scope=heavy_scope("r"), phase="Running")]
    heavy = [TaskView(f"t{i:02}", "b", scope=heavy_scope(f"h{i}x"), created=T0, priority=10) for i in range(8)]
    cheap = TaskView("cheap", "b", scope=("docs",), created=T0, priority=1)
    other = TaskView("o", "other", scope=heavy_scope("o"), created=T0)
    builds = {"b": BuildView("b", max_workers=4), "other": BuildView("other", max_workers=4)}
    plans = []
    for _ in range(8):
        chosen = scheduler.select([*heavy, cheap, other], running, builds=builds, global_limit=10)
        assert chosen.failed == {}
        plans.append([t.name for t in chosen.start])
        if "cheap" in plans[-1]:
            break
    assert plans[0] == ["o"]  # the other build is planned at once; b's checks used their share
    assert plans[-1] == ["o", "cheap"] and 2 <= len(plans) <= 5  # remembered answers: b goes on each plan


class Exploding(str):
    """A scope entry whose use raises (stands for any bad data or bug in one build's part of the plan)."""

    def strip(self, *args: object) -> str:
        raise RecursionError("maximum recursion depth exceeded")


def test_one_builds_failure_is_contained_and_named_and_every_other_build_is_planned() -> None:
    scheduler._parse.cache_clear()
    bad = [TaskView(f"bad{i}", "ns1/bad", scope=(Exploding(f"p{i}"),), created=T0) for i in range(2)]
    running_bad = [TaskView("badr", "ns1/bad", scope=(Exploding("r"),), phase="Running")]
    good = [TaskView(f"good{i}", "ns2/good", scope=(f"src/{i}.py",), created=T0) for i in range(3)]
    builds = {"ns1/bad": BuildView("bad", max_workers=4), "ns2/good": BuildView("good", max_workers=4)}
    chosen = scheduler.select([*bad, *good], running_bad, builds=builds, global_limit=10)
    assert [t.name for t in chosen.start] == ["good0", "good1", "good2"]
    assert chosen.failed == {"ns1/bad": "RecursionError"}


def test_a_build_whose_ordering_raises_is_contained() -> None:
    odd = TaskView("odd", "ns1/bad", created="yesterday")  # type: ignore[arg-type]
    good = TaskView("g", "ns2/good", created=T0)
    builds = {"ns1/bad": BuildView("bad"), "ns2/good": BuildView("good")}
    chosen = scheduler.select([odd, TaskView("odd2", "ns1/bad", created=T0), good], [], builds=builds,
                              global_limit=10)
    assert [t.name for t in chosen.start] == ["g"]
    assert chosen.failed == {"ns1/bad": "AttributeError"}


def test_what_a_failed_build_was_given_earlier_in_the_round_is_taken_back() -> None:
    first = TaskView("a0", "ns1/bad", scope=("ok",), created=T0, priority=10)
    second = TaskView("a1", "ns1/bad", scope=(Exploding("later"),), created=T0, priority=9)
    good = TaskView("g", "ns2/good", created=T0, priority=1)
    builds = {"ns1/bad": BuildView("bad"), "ns2/good": BuildView("good")}
    chosen = scheduler.select([first, second, good], [], builds=builds, global_limit=10)
    assert [t.name for t in chosen.start] == ["g"]
    assert chosen.failed == {"ns1/bad": "RecursionError"}


# --- the bounds -------------------------------------------------------------------------------------------

def test_the_scope_entry_pattern_allows_the_segment_bound_and_no_more() -> None:
    pattern = re.compile(common.SCOPE_ENTRY)
    assert pattern.match("/".join(["a"] * common.MAX_SCOPE_SEGMENTS))
    assert not pattern.match("/".join(["a"] * (common.MAX_SCOPE_SEGMENTS + 1)))


def test_a_plan_with_an_oversized_scope_is_refused_naming_the_task_and_the_entry() -> None:
    def plan(scope: list[str]) -> bytes:
        return json.dumps({"kind": "Handoff", "task": "p", "role": "planner", "outcome": "succeeded",
                           "tasks": [{"name": "a", "description": "d", "scope": scope}]}).encode()

    assert hmod.parse_handoff_bytes(plan(["src/**"])).tasks[0].scope == ["src/**"]
    with pytest.raises(hmod.HandoffError, match=r"tasks\.0\.scope\.0: String should match pattern"):
        hmod.parse_handoff_bytes(plan(["a/" * 100 + "x.py"]))  # 101 segments, 204 characters
    with pytest.raises(hmod.HandoffError, match=r"tasks\.0\.scope\.0: String should have at most 1024"):
        hmod.parse_handoff_bytes(plan(["a" * 1025]))
    with pytest.raises(hmod.HandoffError, match=r"tasks\.0\.scope: List should have at most 128"):
        hmod.parse_handoff_bytes(plan([f"f{i}" for i in range(129)]))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c" * 300, "d", "*.py", "."]), min_size=1, max_size=60)
                .map("/".join), max_size=400))
def test_bounded_scopes_fit_the_crd_and_cover_every_entry(scope: list[str]) -> None:
    out = scheduler.bounded_scope(scope)
    pattern = re.compile(common.SCOPE_ENTRY)
    assert len(out) <= common.MAX_SCOPE_ENTRIES
    assert all(len(e) <= common.MAX_SCOPE_ENTRY_LENGTH and pattern.match(e) for e in out)
    for entry in scope:  # never narrower: every entry's own path is still covered
        path = "/".join(s for s in entry.split("/") if s not in ("", "."))
        if path and not any(ch in path for ch in "*?["):
            assert any(scheduler.patterns_overlap(o, path) and (o == "**" or fnmatchcase(path, o)
                                                                 or path.startswith(o.rstrip("*") + "/")
                                                                 or path == o) for o in out)


_entry = st.lists(st.sampled_from(["a", "b", "c", "*", "a*", "**", "."]), min_size=1, max_size=4).map("/".join)
_scope = st.lists(_entry, min_size=1, max_size=3).map(tuple)
_group = st.sampled_from(["", "", "g", "h"])


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.tuples(_scope, _group), max_size=12), _scope, _group)
def test_the_indexed_taken_scopes_answer_as_every_pair_compared(taken: list[tuple[tuple[str, ...], str]],
                                                               scope: tuple[str, ...], group: str) -> None:
    """The literal-scope index (issue 34: a candidate against a thousand running scopes in time of its own
    segments) blocks exactly when some taken scope of another group (or none) overlaps, as every pair compared."""
    expected = any(not g or g != group for s, g in taken if scheduler.scopes_overlap(scope, s))
    blocked, _, over = scheduler._Taken(taken).blocks(scope, group, 0)
    assert not over
    assert blocked is expected


def test_a_literal_candidate_against_a_thousand_literal_scopes_costs_its_own_segments() -> None:
    running = scheduler._Taken(((f"src/pkg{i}/mod.py",), "") for i in range(1000))
    assert running.blocks(("src/pkg7/mod.py",), "", 0)[:2] == (True, 3)  # (the segments of the one entry)
    assert running.blocks(("src/pkg7",), "", 0)[:2] == (True, 2)
    assert running.blocks(("src/other.py",), "", 0) == (False, 2, False)
    assert running.blocks(("src/pkg*",), "", 0)[0]  # a wildcard candidate is compared pair by pair


def test_a_thousand_running_scopes_at_the_bounds_fill_the_index_once_and_the_rest_are_not_parsed(monkeypatch) -> None:
    """A tenant's running tasks with scopes at the CRD's bounds (128 entries of 32 segments each): the index takes
    what fits in ``MAX_INDEXED_PREFIXES`` and the rest go to the pair-by-pair checks unparsed (parsing them all to
    find they did not fit cost 1.5 s a plan)."""
    tails = ["/".join(f"e{e}s{j}" for j in range(1, 32)) for e in range(128)]  # 31 segments, built once
    running = [(tuple(f"r{t}x{e}s0/{tails[e]}" for e in range(128)), "") for t in range(1000)]  # 32, each its own
    parsed: list[tuple[str, ...]] = []
    literal = scheduler._literal

    def counted(scope: tuple[str, ...]) -> tuple[tuple[str, ...], ...] | None:
        parsed.append(scope)
        return literal(scope)

    monkeypatch.setattr(scheduler, "_literal", counted)
    taken = scheduler._Taken(running)
    assert taken.prefixes <= scheduler.MAX_INDEXED_PREFIXES and taken.full
    assert len(taken.literal) + len(taken.other) == 1000
    assert len(parsed) == len(taken.literal) + 1  # the one that did not fit, and no more
    assert taken.blocks((running[-1][0][0],), "", 0)[0]  # an unindexed scope still blocks (pair by pair)
