"""Budget reservations of model calls (core.modelcalls): admitted only while they fit, one call per attempt
beyond, released after settlement; and the per-attempt token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import modelcalls, usage

pytestmark = pytest.mark.unit

BUILD = ("ns", "b1")


def attempt(n: int = 1) -> modelcalls.AttemptKey:
    return ("ns", f"b1-t{n}", 1)


def test_a_reservation_is_the_body_estimate_plus_max_tokens_priced():
    claim = modelcalls.estimate(4001, 100, default_output_tokens=4096, input_price=2.0, output_price=8.0)
    assert (claim.input_tokens, claim.output_tokens, claim.tokens) == (1001, 100, 1101)
    assert claim.cost == pytest.approx((1001 * 2 + 100 * 8) / 1e6)


def test_without_max_tokens_the_default_output_is_reserved():
    assert modelcalls.estimate(0, None, default_output_tokens=4096).output_tokens == 4096


def test_twenty_parallel_calls_against_max_tokens_100_admit_one():
    ledger = modelcalls.Ledger()
    claim = modelcalls.estimate(200, 50, default_output_tokens=4096)  # 100 tokens: fits exactly
    decisions = [ledger.admit(BUILD, attempt(), claim, budget={"maxTokens": 100}, spent=usage.Totals())
                 for _ in range(20)]
    admitted = [d for d in decisions if isinstance(d, modelcalls.Admitted)]
    assert len(admitted) == 1 and not admitted[0].beyond_budget
    refused = [d for d in decisions if isinstance(d, modelcalls.Refused)]
    assert {(r.status, r.kind) for r in refused} == {(429, "budget_reserved")}
    assert "reserved by 1 model call(s) in flight" in refused[0].message


def test_a_reservation_that_does_not_fit_is_admitted_once_per_attempt():
    ledger = modelcalls.Ledger()
    big = modelcalls.Claim(50, 4096)
    first = ledger.admit(BUILD, attempt(1), big, budget={"maxTokens": 1000}, spent=usage.Totals(10))
    assert isinstance(first, modelcalls.Admitted) and first.beyond_budget
    again = ledger.admit(BUILD, attempt(1), big, budget={"maxTokens": 1000}, spent=usage.Totals(10))
    assert isinstance(again, modelcalls.Refused) and again.status == 429
    # another attempt sees the budget reached by what is reserved
    other = ledger.admit(BUILD, attempt(2), big, budget={"maxTokens": 1000}, spent=usage.Totals(10))
    assert isinstance(other, modelcalls.Refused)
    ledger.release(first.ticket)
    assert ledger.outstanding(BUILD) == usage.Totals()


def test_a_spent_budget_is_402_with_the_reason():
    d = modelcalls.Ledger().admit(BUILD, attempt(), modelcalls.Claim(1, 1), budget={"maxCost": 0.5},
                                  spent=usage.Totals(10, 0.5))
    assert isinstance(d, modelcalls.Refused) and d.status == 402 and "spec.budget.maxCost" in d.message


def test_cost_reservations_count_against_max_cost():
    ledger = modelcalls.Ledger()
    claim = modelcalls.Claim(10, 10, 0.4)
    assert isinstance(ledger.admit(BUILD, attempt(1), claim, budget={"maxCost": 1.0}, spent=usage.Totals()),
                      modelcalls.Admitted)
    assert isinstance(ledger.admit(BUILD, attempt(2), claim, budget={"maxCost": 1.0}, spent=usage.Totals()),
                      modelcalls.Admitted)
    third = ledger.admit(BUILD, attempt(3), claim, budget={"maxCost": 1.0}, spent=usage.Totals())
    assert isinstance(third, modelcalls.Admitted) and third.beyond_budget  # 0.8 < 1.0: one more may go
    assert isinstance(ledger.admit(BUILD, attempt(4), claim, budget={"maxCost": 1.0}, spent=usage.Totals()),
                      modelcalls.Refused)


def test_no_budget_admits_everything():
    ledger = modelcalls.Ledger()
    for _ in range(50):
        assert isinstance(ledger.admit(BUILD, attempt(), modelcalls.Claim(10**6, 10**6), budget=None,
                                       spent=usage.Totals()), modelcalls.Admitted)


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(0, 5000), attempts=st.integers(1, 6),
       calls=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000), st.booleans(), st.integers(0, 3000)),
                      max_size=60))
def test_served_tokens_never_pass_the_budget_by_more_than_one_reservation_per_attempt(budget, attempts, calls):
    """Any interleaving of admissions and settlements, with real usage at most the reservation: what is served
    stays within the budget plus one reservation per attempt."""
    ledger = modelcalls.Ledger()
    spent = 0
    open_: list[tuple[int, modelcalls.Claim, int]] = []
    biggest = 0
    for who, size, settle_first, used in calls:
        if settle_first and open_:
            ticket, claim, real = open_.pop(0)
            spent += real
            ledger.release(ticket)
        claim = modelcalls.Claim(size // 2, size - size // 2)
        d = ledger.admit(BUILD, attempt(who % attempts), claim, budget={"maxTokens": budget},
                         spent=usage.Totals(spent))
        if isinstance(d, modelcalls.Admitted):
            biggest = max(biggest, claim.tokens)
            open_.append((d.ticket, claim, min(used, claim.tokens)))
    served = spent + sum(real for _, _, real in open_)
    assert served <= budget + attempts * biggest


def test_the_bucket_allows_a_burst_then_the_rate():
    bucket = modelcalls.TokenBucket(rate=2.0, burst=3)
    assert [bucket.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a", 0.0) == pytest.approx(0.5)
    assert bucket.take("b", 0.0) == 0.0  # per key
    assert bucket.take("a", 0.5) == 0.0
    assert bucket.take("a", 0.5) > 0


def test_a_rate_of_zero_turns_the_bucket_off():
    bucket = modelcalls.TokenBucket(rate=0.0, burst=1)
    assert all(bucket.take("a", 0.0) == 0.0 for _ in range(100))
