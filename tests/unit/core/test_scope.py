"""core.scope: whether a path is inside a task's scope (spec.scope.enforce), bounded against hostile scopes and
paths, and what a fixer inherits."""

from __future__ import annotations

import pytest

from longshot.api import common
from longshot.core import scheduler
from longshot.core import scope as sc

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("entry", "path", "inside"), [
    ("src", "src/a.py", True),                 # an entry covers what is below it
    ("src", "src", True),
    ("src/", "src/deep/er/a.py", True),
    ("./src", "src/a.py", True),
    ("src", "srcx/a.py", False),
    ("src", "lib/src/a.py", False),
    ("src/a.py", "src/a.py", True),
    ("src/a.py", "src/b.py", False),
    ("*.md", "README.md", True),
    ("*.md", "docs/a.md", False),             # * stays within one segment
    ("**/*.md", "docs/a.md", True),
    ("**/*.md", "README.md", True),           # ** spans zero segments too
    ("src/**/test_*.py", "src/a/b/test_x.py", True),
    ("src/**/test_*.py", "src/a/b/x.py", False),
    ("src/[ab].py", "src/a.py", True),
    ("src/[ab].py", "src/c.py", False),
    ("**", "anything/at/all", True),
    ("src/a.py", "src/*", False),             # a path is literal: a file named "*" is not a wildcard
    ("src/*", "src/*", True),
    ("docs", "src/*", False),
])
def test_an_entry_covers_paths_as_the_scheduler_reads_entries(entry, path, inside):
    assert sc.covers(entry, path) is inside


def test_a_path_named_like_a_wildcard_does_not_slip_past_a_scope_the_scheduler_would_call_overlapping():
    # the scheduler's overlap of two *entries* errs towards overlap; a pushed path must not get that benefit
    assert scheduler.patterns_overlap("docs/a.md", "*")
    assert sc.outside(["docs/a.md"], ["*", "**", "[a-z]*"]).count == 3


def test_outside_names_the_files_no_entry_covers_in_order_and_counts_the_rest():
    paths = [f"other/{i}.txt" for i in range(30)] + ["src/ok.py"]
    v = sc.outside(["src", "tests/**"], paths, limit=5)
    assert v.count == 30 and v.outside == tuple(f"other/{i}.txt" for i in range(5)) and v.unjudged == 0
    line = sc.refusal(["src", "tests/**"], v)
    assert "30 changed file(s) outside the task's scope [src, tests/**]" in line
    assert "other/0.txt" in line and "and 25 more" in line and "spec.scope.enforce" in line


def test_an_empty_scope_is_not_limited():
    assert sc.outside([], ["anything.txt"]) == sc.Verdict((), 0)


def test_hostile_scopes_and_paths_cost_a_bounded_number_of_steps_and_what_is_not_judged_is_outside():
    # the CRD's worst: 128 entries of 32 segments, each "**" or a wildcard, against a very deep path
    entry = "/".join(["**", "*a*a*a*a*a*b"] * (common.MAX_SCOPE_SEGMENTS // 2))
    scope = [entry + f"/{i}" for i in range(common.MAX_SCOPE_ENTRIES)]
    deep = "/".join(["a" * 40] * 2000)
    ok, steps = sc.covers_steps(scope[0], deep)
    assert not ok and steps <= (common.MAX_SCOPE_SEGMENTS + 2) * 2001
    v = sc.outside(scope, [deep] * 50, budget=200_000)
    assert v.count == 50 and v.unjudged >= 49  # the budget ran out: reported as outside, never let through
    assert sc.outside(["**"], ["x" * (sc.MAX_PATH_LENGTH + 1)]).unjudged == 1


def test_a_fixer_inherits_the_fixed_tasks_scope_only_when_scopes_are_enforced():
    assert sc.inherited(("src/a.py",), ("src", "tests"), enforce=True) == ("src", "tests")
    assert sc.inherited(("src/a.py",), (), enforce=True) == ()
    assert sc.inherited(("src/a.py",), ("src", "tests"), enforce=False) == ("src/a.py",)
