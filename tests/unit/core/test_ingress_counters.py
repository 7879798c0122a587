"""The ingress's pure counters (core.ingress): the in-flight byte budget and the per-caller lanes."""

from __future__ import annotations

import pytest

from longshot.core import ingress


def test_a_budget_reserves_before_and_refuses_past_its_limit() -> None:
    budget = ingress.Budget(100)
    assert budget.reserve(60) and budget.used == 60
    assert not budget.reserve(41) and budget.used == 60  # nothing taken when refused
    assert budget.reserve(40) and budget.used == 100
    budget.release(70)
    assert budget.used == 30
    budget.release(500)
    assert budget.used == 0
    with pytest.raises(ValueError, match="0 bytes or more"):
        budget.reserve(-1)


def test_lanes_bound_each_caller_and_forget_idle_ones() -> None:
    lanes = ingress.Lanes()
    assert lanes.enter("ledger", "a", 2) and lanes.enter("ledger", "a", 2)
    assert not lanes.enter("ledger", "a", 2)
    assert lanes.enter("ledger", "b", 2) and lanes.enter("model", "a", 2)  # other callers, other lanes
    lanes.leave("ledger", "a")
    assert lanes.in_flight("ledger", "a") == 1 and lanes.enter("ledger", "a", 2)
    for lane, key in (("ledger", "a"), ("ledger", "a"), ("ledger", "b"), ("model", "a")):
        lanes.leave(lane, key)
    assert len(lanes) == 0 and lanes.most == 2


def test_a_route_declaration_names_what_is_missing() -> None:
    ok = ingress.Route("ledger", "/ledger", ("POST",), "agent-token", 1024, 5.0, 30.0, 4)
    assert ok.problems() == [] and ok.lane_name == "ledger"
    assert ingress.Route("x", "/x", ("POST",), "agent-token", 1024, 40.0, 30.0, 4, lane="y").lane_name == "y"
    assert any("body_seconds" in p for p in ingress.Route("x", "/x", ("POST",), "agent-token", 1024, 40.0, 30.0,
                                                          4).problems())
    assert any("methods" in p for p in ingress.Route("x", "/x", ("BREW",), "agent-token", 0, 0, 3, 4).problems())
    assert any("caller" in p for p in ingress.Route("x", "/x", ("GET",), "anyone", 0, 0, 3, 4).problems())  # type: ignore[arg-type]
