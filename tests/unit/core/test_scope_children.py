"""A delegated child's scope under spec.scope.enforce (core.scope.uncovered): covered by its parent's or named."""

from __future__ import annotations

import pytest

from longshot.core import scope

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("child", "parent", "outside"), [
    ([], ["src"], ()),                                  # inherits the parent's
    (["**"], [], ()),                                   # an unscoped parent covers everything
    (["**"], ["src"], ("**",)),
    (["src/**"], ["src"], ()),
    (["src/api"], ["src"], ()),
    (["src/api/*.py"], ["src/**"], ()),
    (["src/*"], ["src/*"], ()),
    (["src/a.py"], ["src/*.py"], ()),
    (["src/*"], ["src/*.py"], ("src/*",)),              # wider than the parent's glob
    (["src"], ["src/api"], ("src",)),
    (["docs", "src/x"], ["src", "tests"], ("docs",)),
    (["**/*.py"], ["src"], ("**/*.py",)),
    (["src/**/x"], ["src/*/x"], ("src/**/x",)),         # ** spans more than one segment
    (["./src//a"], ["src"], ()),
    (["*"], ["src"], ("*",)),
])
def test_a_childs_entries_must_be_within_the_parents(child, parent, outside):
    assert scope.uncovered(child, parent) == outside


def test_entries_past_the_budget_are_uncovered():
    assert scope.uncovered(["src/a"], ["src"], budget=0) == ("src/a",)


def test_the_refusal_names_the_field_and_the_fix():
    line = scope.child_refusal("tasks[0].scope", ["src"], ["**"])
    assert line.startswith("tasks[0].scope [**] is not within the parent task's scope [src]")
    assert "spec.scope.enforce" in line and "none to inherit" in line
