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


# --- a call charged after the progress moved on to the next attempt (progress.earlier) ---------------------------

ENDED = [{"number": 1, "tokens": 1000, "cost": 0.25}, {"number": 2}]


def test_a_late_charge_of_an_earlier_attempt_starts_from_its_record_and_counts_once():
    progress = {"attempt": 2, "tokens": 40, "cost": 0.01}
    earlier = usage.charge_late(progress, ENDED, 1, Totals(700, 0.25))
    assert earlier == [{"attempt": 1, "tokens": 1700, "cost": 0.5}]
    again = usage.charge_late({**progress, "earlier": earlier}, ENDED, 1, Totals(10, 0.0))
    assert again == [{"attempt": 1, "tokens": 1710, "cost": 0.5}]
    t = task((1, 1000, 0.25), progress={**progress, "earlier": again})
    assert usage.task_usage(t) == Totals(1750, 0.51)  # attempt 1 at 1,710 (not 1,000 + 1,710), attempt 2 at 40
    # once the operator raised the record (core.tasks.late_usage), the entry counts no more than the record
    assert usage.task_usage(task((1, 1710, 0.5), progress={**progress, "earlier": again})) == Totals(1750, 0.51)


def test_a_record_that_said_more_than_was_metered_keeps_its_surplus_under_a_late_charge():
    # the handoff said 5,000 (the record); the gateway metered 1,000 while it ran; 700 more arrive late
    assert usage.charge_late({"attempt": 2}, [{"number": 1, "tokens": 5000, "cost": 1.0}], 1, Totals(700, 0.25)) \
        == [{"attempt": 1, "tokens": 5700, "cost": 1.25}]


def test_a_new_attempt_s_progress_carries_what_the_old_one_metered_past_its_record():
    # 700 tokens charged after attempt 1 was recorded, not yet copied into its record when attempt 2 starts
    assert usage.carry({"attempt": 1, "tokens": 1700, "cost": 0.5}, ENDED) == \
        [{"attempt": 1, "tokens": 1700, "cost": 0.5}]
    assert usage.carry({"attempt": 1, "tokens": 1000, "cost": 0.25}, ENDED) is None  # the record says it all
    assert usage.carry({"attempt": 1, "tokens": 900, "cost": 0.3}, ENDED) == \
        [{"attempt": 1, "tokens": 1000, "cost": 0.3}]
    assert usage.carry({}, ENDED) is None and usage.carry({"tokens": 5}, ENDED) is None  # nothing attributable


def test_metered_reads_the_progress_and_the_earlier_list_the_larger():
    progress = {"attempt": 3, "tokens": 40, "cost": 0.01,
                "earlier": [{"attempt": 1, "tokens": 1700, "cost": 0.5}, {"attempt": 3, "tokens": 10, "cost": 0.2}]}
    assert usage.metered(progress, 1) == Totals(1700, 0.5)
    assert usage.metered(progress, 3) == Totals(40, 0.2)
    assert usage.metered(progress, 2) is None


def test_the_earlier_list_is_bounded_to_the_newest_attempts_and_junk_counts_nothing():
    progress: dict = {"attempt": 20}
    for n in range(1, 13):
        progress["earlier"] = usage.charge_late(progress, [], n, Totals(n, 0.0))
    assert [e["attempt"] for e in progress["earlier"]] == list(range(5, 13))
    assert len(progress["earlier"]) == usage.EARLIER_MAX
    assert usage.earlier({"earlier": "x"}) == {} and usage.earlier({"earlier": [1, {"attempt": "y"}]}) == {}


def test_the_api_s_bound_on_the_earlier_list_is_the_gateway_s():
    from longshot.api.agenttask import Progress
    field = Progress.model_fields["earlier"]
    assert any(getattr(m, "max_length", None) == usage.EARLIER_MAX for m in field.metadata)
