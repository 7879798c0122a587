from __future__ import annotations

import pytest

from longshot.core import usage
from longshot.core.usage import Totals

pytestmark = pytest.mark.unit


def task(*attempts: tuple[int, int, float], progress: dict | None = None) -> dict:
    status: dict = {"attempts": [{"number": n, "pod": f"t-a{n}", "tokens": t, "cost": c} for n, t, c in attempts]}
    if progress is not None:
        status["progress"] = progress
    return {"metadata": {"name": "t"}, "status": status}


def test_finished_attempts_and_the_live_attempt_add_up():
    tasks = [task((1, 100, 0.5), (2, 50, 0.25), progress={"attempt": 3, "tokens": 10, "cost": 0.01}),
             task((1, 7, 0.0))]
    assert usage.build_usage(tasks) == Totals(167, 0.76)


def test_an_attempt_recorded_and_metered_counts_once_at_the_larger_figure():
    # the gateway metered 120 tokens while it ran; the handoff (the agent's word) said 100
    assert usage.task_usage(task((1, 100, 0.0), progress={"attempt": 1, "tokens": 120, "cost": 0.3})) == \
        Totals(120, 0.3)
    assert usage.task_usage(task((1, 200, 0.4), progress={"attempt": 1, "tokens": 120, "cost": 0.3})) == \
        Totals(200, 0.4)


def test_no_status_no_usage_and_junk_is_zero():
    assert usage.build_usage([{"metadata": {"name": "x"}}]) == Totals()
    assert usage.task_usage({"status": {"progress": {"tokens": 99}}}) == Totals()  # no attempt: not attributable
    assert usage.task_usage({"status": {"attempts": [{"number": 1, "tokens": "x", "cost": -3}]}}) == Totals()


@pytest.mark.parametrize("budget, used, spent", [
    ({}, Totals(10**9, 10**6), None),
    ({"maxTokens": 100}, Totals(99, 0), None),
    ({"maxTokens": 100}, Totals(100, 0), "100 tokens of its budget of 100"),
    ({"maxCost": 1.5}, Totals(0, 1.49), None),
    ({"maxCost": 1.5}, Totals(0, 1.5), "spec.budget.maxCost"),
    ({"maxCost": 0}, Totals(), "spec.budget.maxCost"),
])
def test_a_budget_is_spent_once_a_limit_is_reached(budget, used, spent):
    reason = usage.budget_spent(budget, used)
    assert (reason is None) == (spent is None)
    if spent:
        assert spent in reason
