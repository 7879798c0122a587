from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from longshot.core import scheduler
from longshot.core.scheduler import BuildView, TaskView

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def task(name: str, *, build: str = "b", depends_on: tuple[str, ...] = (), priority: int = 5,
         age: int = 0, scope: tuple[str, ...] = (), phase: str = "Pending") -> TaskView:
    """A task created ``age`` seconds before the others (older first)."""
    return TaskView(name=name, build=build, priority=priority, created=T0 - timedelta(seconds=age),
                    depends_on=depends_on, scope=scope, phase=phase)


def builds(*names: str, **kw) -> dict[str, BuildView]:
    return {n: BuildView(name=n, **kw) for n in names}


def select(candidates, running=(), *, succeeded=(), bs=None, limit=100, **kw):
    # the dependency decision is core.dependencies'; here a task is ready when its dependencies succeeded
    done = set(succeeded)
    views = [replace(t, dependencies_ready=all((t.build, d) in done for d in t.depends_on)) for t in candidates]
    return scheduler.select(views, running, builds=bs or builds("b"), global_limit=limit, **kw)


def started(sel) -> list[str]:
    return [t.name for t in sel.start]


def test_tasks_whose_dependencies_are_not_ready_wait():
    cands = [task("t0"), task("t1", depends_on=("t0",)), task("t2", depends_on=("t0", "t1"))]
    assert started(select(cands)) == ["t0"]
    assert started(select(cands[1:], succeeded=[("b", "t0")])) == ["t1"]
    # a dependency of another build with the same name does not count
    assert started(select(cands[1:], succeeded=[("other", "t0")])) == []


def test_priority_then_age():
    cands = [task("low", priority=1, age=100), task("new", priority=9, age=1), task("old", priority=9, age=50)]
    assert started(select(cands)) == ["old", "new", "low"]


def test_only_pending_candidates_start():
    assert started(select([task("a", phase="Backoff"), task("b", phase="Running")])) == []


def test_per_build_limit_counts_running_tasks():
    cands = [task(f"t{i}") for i in range(10)]
    running = [task("r0", phase="Running")]
    assert len(select(cands, running, bs=builds("b", max_workers=3)).start) == 2


def test_global_limit():
    bs = builds("a", "b", max_workers=10)
    cands = [task(f"{b}{i}", build=b) for b in "ab" for i in range(10)]
    running = [task("r", build="a", phase="Running")]
    assert len(select(cands, running, bs=bs, limit=5).start) == 4


def test_fairness_small_build_is_not_starved():
    bs = {"big": BuildView("big", max_workers=50), "small": BuildView("small", max_workers=50)}
    cands = [task(f"big{i}", build="big", age=1000 - i) for i in range(1000)]
    cands += [task("small0", build="small"), task("small1", build="small")]
    sel = select(cands, bs=bs, limit=4)
    assert sorted(t.build for t in sel.start) == ["big", "big", "small", "small"]


def test_fairness_prefers_least_running_build():
    bs = builds("a", "b", max_workers=10)
    running = [task("ra1", build="a", phase="Running"), task("ra2", build="a", phase="Running")]
    cands = [task("a1", build="a", priority=10), task("b1", build="b", priority=1)]
    assert started(select(cands, running, bs=bs, limit=3)) == ["b1"]


def test_overlapping_scopes_never_run_together():
    cands = [task("a", scope=("src/**",), age=3), task("b", scope=("src/a.py",), age=2),
             task("c", scope=("docs/index.md",), age=1), task("d")]
    assert started(select(cands)) == ["a", "c", "d"]
    running = [task("r", scope=("src/a.py",), phase="Running")]
    assert started(select(cands, running)) == ["c", "d"]


def test_scopes_of_other_builds_do_not_conflict():
    bs = builds("a", "b")
    cands = [task("a1", build="a", scope=("src/**",)), task("b1", build="b", scope=("src/**",))]
    assert sorted(started(select(cands, bs=bs))) == ["a1", "b1"]


@pytest.mark.parametrize(("x", "y", "overlap"), [
    ("src/**", "src/a.py", True),
    ("src", "src/a.py", True),
    ("src/", "src/deep/a.py", True),
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/a.md", False),
    ("*.py", "*.md", False),
    ("**/*.py", "src/x/y.py", True),
    ("src/a.py", "src/b.py", False),
    ("src/a.py", "./src/a.py", True),
    ("lib/**", "src/**", False),
    ("src/*/x.py", "src/a/*.py", True),
    ("**", "anything/at/all", True),
])
def test_pattern_overlap(x, y, overlap):
    assert scheduler.patterns_overlap(x, y) is overlap
    assert scheduler.patterns_overlap(y, x) is overlap


def test_empty_scope_overlaps_nothing():
    assert not scheduler.scopes_overlap((), ("**",))
    assert not scheduler.scopes_overlap(("**",), ())


def test_budget_blocks_and_is_reported():
    bs = {"a": BuildView("a", max_tokens=100, tokens_used=100), "b": BuildView("b", max_cost=1.0, cost_used=0.5)}
    sel = select([task("a1", build="a"), task("b1", build="b")], bs=bs)
    assert started(sel) == ["b1"] and sel.budget_blocked == {"a"}
    bs["b"] = BuildView("b", max_cost=1.0, cost_used=1.0)
    assert select([task("b1", build="b")], bs=bs).budget_blocked == {"b"}


def test_suspended_and_halted_builds_start_nothing():
    bs = {"a": BuildView("a", suspended=True), "b": BuildView("b", halted=True), "c": BuildView("c")}
    sel = select([task("a1", build="a"), task("b1", build="b"), task("c1", build="c")], bs=bs)
    assert started(sel) == ["c1"] and sel.suspended == {"a"} and sel.halted == {"b"}


def test_killswitch_starts_nothing():
    sel = select([task("a")], killswitch=True)
    assert sel.start == () and sel.halted == {"b"}


def test_unknown_build_starts_nothing():
    assert started(select([task("x", build="nope")])) == []


def test_candidates_of_one_best_of_n_task_run_together_but_exclude_other_overlapping_tasks():
    cands = [replace(task(f"api-c{i}", scope=("calc/api.py",), age=5 - i), group="api") for i in (1, 2, 3)]
    other = task("other", scope=("calc/**",), age=0)
    assert started(select([*cands, other])) == ["api-c1", "api-c2", "api-c3"]
    running = [replace(task("x", scope=("calc/api.py",), phase="Running"), group="x")]
    assert started(select(cands, running)) == []



@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 40), max_size=8), st.integers(0, 100))
def test_share_is_max_min_fair(demands, total):
    """``share``: nobody gets more than it wants, all of ``total`` is given while anyone wants more, and a key that
    got less than it wanted got at least as much as every other key, but one (the left-over units)."""
    given_ = scheduler.share(demands, total)
    assert set(given_) == set(demands)
    assert all(0 <= given_[k] <= demands[k] for k in demands)
    assert sum(given_.values()) == min(total, sum(demands.values()))
    for k in demands:
        if given_[k] < demands[k]:
            assert all(given_[o] <= given_[k] + 1 for o in demands), (k, given_)


def test_share_examples():
    assert scheduler.share({"bulk": 600, "few": 2}, 64) == {"bulk": 62, "few": 2}
    assert scheduler.share({"a": 10, "b": 10, "c": 10}, 4) == {"a": 2, "b": 1, "c": 1}
    assert scheduler.share({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    assert scheduler.share({}, 64) == {}


_scopes = st.sampled_from([(), (), (), ("src/a/**",), ("src/a/x.py",), ("src/b/**",), ("docs/**",), ("**",)])


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 50), _scopes, st.sampled_from(["", "", "g1"])),
                min_size=1, max_size=40),
       st.lists(st.tuples(_scopes, st.sampled_from(["", "g1"])), max_size=6),
       st.integers(1, 12), st.integers(1, 60))
def test_the_head_of_a_build_s_line_starts_what_the_whole_line_starts(ready, running, max_workers, limit):
    """``head_of_line``: select, handed the first candidates of a build up to its ``need``-th without a scope, starts
    exactly what it starts from all of them, whatever the scopes, groups, priorities and limits."""
    cands = [TaskView(name=f"t{i:02d}", build="b", priority=p, created=T0 - timedelta(seconds=age), scope=sc,
                      group=g) for i, (p, age, sc, g) in enumerate(ready)]
    run = [TaskView(name=f"r{i}", build="b", phase="Running", scope=sc, group=g) for i, (sc, g) in enumerate(running)]
    bs = builds("b", max_workers=max_workers)
    need = min(limit - len(run), max_workers - len(run))
    head = scheduler.head_of_line([(scheduler.order_key(t), t) for t in cands], need)
    assert len(head) <= len(cands)
    whole = scheduler.select(cands, run, builds=bs, global_limit=limit)
    part = scheduler.select(head, run, builds=bs, global_limit=limit)
    assert started(part) == started(whole)


def test_the_head_of_a_long_line_is_a_few_candidates():
    cands = [task(f"t{i:04d}", age=i) for i in range(5000)]
    head = scheduler.head_of_line([(scheduler.order_key(t), t) for t in cands], 3)
    assert [t.name for t in head] == ["t4999", "t4998", "t4997"]  # the oldest three, and nothing else
    scoped = [task(f"s{i}", age=10_000 + i, scope=("src/**",)) for i in range(40)]
    head = scheduler.head_of_line([(scheduler.order_key(t), t) for t in scoped + cands], 3)  # 40 scoped first
    assert len(head) == 43 and [t.name for t in head[-3:]] == ["t4999", "t4998", "t4997"]
