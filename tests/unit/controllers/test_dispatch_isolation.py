"""One build's bad data never stops another's dispatch: the plan leaves that build out, records the error's class
for its condition, and admits the other builds' tasks."""

from __future__ import annotations

from typing import Any

import pytest
from test_dispatch_plan import context_of

from longshot.controllers import dispatch
from longshot.core import scheduler

pytestmark = pytest.mark.unit


def world(*scopes: tuple[str, ...]) -> dict[str, Any]:
    return {"limit": 10, "killswitch": False, "builds": [{
        "name": name, "workers": 4, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [{"phase": "Pending", "priority": 5, "age": i, "scope": scope, "cancel": False, "deleting": False,
                   "conditions": True, "depends": [], "tokens": 0, "pod": "none"} for i in range(2)]}
        for name, scope in zip(("bad", "good"), scopes, strict=True)]}


def test_a_build_whose_candidates_cannot_be_read_is_left_out_and_the_other_dispatches() -> None:
    ctx = context_of(world(("src",), ("docs",)))
    readiness = ctx.readiness

    def broken(t: Any, build: Any) -> Any:
        if build.name == "bad":
            raise RecursionError("maximum recursion depth exceeded")
        return readiness(t, build)

    ctx.readiness = broken  # type: ignore[method-assign]
    chosen = dispatch.plan(ctx)
    assert chosen.admit == (("ns", "good-t1"),)  # the oldest of the good build (the scopes overlap: one at a time)
    assert ctx.dispatch_errors == {("ns", "bad"): "RecursionError"}
    assert chosen.failed == frozenset({("ns", "bad")})  # its reconcile writes DispatchFailed
    assert dispatch.plan(ctx).failed == frozenset()  # unchanged: nothing to write again
    ctx.readiness = readiness  # type: ignore[method-assign]
    healed = dispatch.plan(ctx)
    assert ctx.dispatch_errors == {} and healed.failed == frozenset({("ns", "bad")})  # cleared: written once
    assert ("ns", "bad-t1") in healed.admit


def test_a_build_whose_scope_check_raises_is_left_out_and_the_other_dispatches(monkeypatch: Any) -> None:
    """The scheduler's own containment, through the dispatch plan: the issue's RecursionError in the scope check
    of one build (here forced for its scopes) costs only that build."""
    ctx = context_of(world(("bad/scope",), ("docs",)))
    check = scheduler._Taken.blocks

    def exploding(self: Any, scope: tuple[str, ...], group: str, spent: int) -> tuple[bool, int, bool]:
        if "bad/scope" in scope:
            raise RecursionError("maximum recursion depth exceeded")
        return check(self, scope, group, spent)

    monkeypatch.setattr(scheduler._Taken, "blocks", exploding)
    chosen = dispatch.plan(ctx)
    assert chosen.admit == (("ns", "good-t1"),)
    assert ctx.dispatch_errors == {("ns", "bad"): "RecursionError"}

