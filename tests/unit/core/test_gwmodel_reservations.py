"""Budget reservations of model calls (core.modelcalls): n x max reserved, admitted only while they fit, the
maximum clamped to what is left (and written) when nothing else is in flight, released after settlement; and
the per-attempt token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import modelcalls, usage
from property_budget import examples

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


def asked(input_tokens: int, maximum: int | None, *, choices: int = 1, default: int = 4096,
          prices: tuple[float, float] = (0.0, 0.0)) -> modelcalls.Request:
    return modelcalls.Request(input_tokens, choices, maximum, default, prices[0], prices[1], 1_000_000)


def test_a_reservation_counts_every_choice_of_n_and_best_of():
    claim = modelcalls.estimate(20, 4000, choices=128, default_output_tokens=4096)
    assert (claim.input_tokens, claim.output_tokens) == (5, 512_000)
    assert modelcalls.request(20, None, choices=0, default_output_tokens=4096).choices == 1


def test_twenty_parallel_calls_against_max_tokens_100_admit_one():
    ledger = modelcalls.Ledger()
    call = modelcalls.request(200, 50, default_output_tokens=4096)  # 100 tokens: fits exactly
    decisions = [ledger.admit(BUILD, attempt(), call, budget={"maxTokens": 100}, spent=usage.Totals())
                 for _ in range(20)]
    admitted = [d for d in decisions if isinstance(d, modelcalls.Admitted)]
    assert len(admitted) == 1 and admitted[0].write_max is None and admitted[0].claim.tokens == 100
    refused = [d for d in decisions if isinstance(d, modelcalls.Refused)]
    assert {(r.status, r.kind) for r in refused} == {(429, "budget_reserved")}
    assert "reserved by 1 model call(s) in flight" in refused[0].message


@pytest.mark.parametrize(("call", "budget", "spent", "write_max", "tokens"), [
    # it fits as asked: the request's own maximum stands
    (asked(5, 100), {"maxTokens": 10_000}, 0, None, 105),
    # it names none: the default is reserved and written into the body
    (asked(5, None), {"maxTokens": 10_000}, 0, 4096, 4101),
    (asked(5, None), None, 0, 4096, 4101),
    # n=128 x max_tokens=4000 against 10,000: clamped to what is left per choice, written
    (asked(5, 4000, choices=128), {"maxTokens": 10_000}, 0, 78, 5 + 128 * 78),
    # no maximum, 35 tokens left after 9,965 spent: clamped to 35 - 5
    (asked(5, None), {"maxTokens": 10_000}, 9_965, 30, 35),
    # a cost budget: 0.01 left at 8 per million output tokens (the prompt free)
    (asked(5, None, prices=(0.0, 8.0)), {"maxCost": 0.01}, 0, 1250, 1255),
])
def test_a_reservation_never_exceeds_what_is_left(call, budget, spent, write_max, tokens):
    d = modelcalls.Ledger().admit(BUILD, attempt(), call, budget=budget, spent=usage.Totals(spent))
    assert isinstance(d, modelcalls.Admitted)
    assert (d.write_max, d.claim.tokens) == (write_max, tokens)
    assert modelcalls.fits(budget, usage.Totals(spent) + d.claim.totals)


@pytest.mark.parametrize(("call", "budget", "spent", "words"), [
    (asked(5, None), {"maxTokens": 10_000}, 9_995, "prompt of about 5 tokens and one output token;"),
    (asked(5, 10, choices=128), {"maxTokens": 10_000}, 9_900, "each of its 128 completions (n, best_of)"),
    (asked(10_000, None, prices=(1.0, 1.0)), {"maxCost": 0.005}, 0, "does not pay for this call"),
])
def test_a_call_that_what_is_left_cannot_pay_for_is_402(call, budget, spent, words):
    d = modelcalls.Ledger().admit(BUILD, attempt(), call, budget=budget, spent=usage.Totals(spent))
    assert isinstance(d, modelcalls.Refused) and (d.status, d.kind) == (402, "budget_exceeded")
    assert words in d.message and "spec.budget" in d.message


def test_while_other_calls_hold_the_rest_a_call_waits_rather_than_shrinks():
    ledger = modelcalls.Ledger()
    first = ledger.admit(BUILD, attempt(1), asked(50, 600), budget={"maxTokens": 1000}, spent=usage.Totals(10))
    assert isinstance(first, modelcalls.Admitted)
    second = ledger.admit(BUILD, attempt(2), asked(50, 600), budget={"maxTokens": 1000}, spent=usage.Totals(10))
    assert isinstance(second, modelcalls.Refused) and second.status == 429
    ledger.release(first.ticket)
    assert ledger.outstanding(BUILD) == usage.Totals()
    third = ledger.admit(BUILD, attempt(2), asked(50, 600), budget={"maxTokens": 1000}, spent=usage.Totals(400))
    assert isinstance(third, modelcalls.Admitted) and third.write_max == 550 and third.claim.tokens == 600


def test_a_spent_budget_is_402_with_the_reason():
    d = modelcalls.Ledger().admit(BUILD, attempt(), asked(1, 1), budget={"maxCost": 0.5},
                                  spent=usage.Totals(10, 0.5))
    assert isinstance(d, modelcalls.Refused) and d.status == 402 and "spec.budget.maxCost" in d.message


def test_cost_reservations_count_against_max_cost():
    ledger = modelcalls.Ledger()
    call = asked(10, 10, prices=(20_000.0, 20_000.0))  # 0.4 a call
    assert isinstance(ledger.admit(BUILD, attempt(1), call, budget={"maxCost": 1.0}, spent=usage.Totals()),
                      modelcalls.Admitted)
    assert isinstance(ledger.admit(BUILD, attempt(2), call, budget={"maxCost": 1.0}, spent=usage.Totals()),
                      modelcalls.Admitted)
    third = ledger.admit(BUILD, attempt(3), call, budget={"maxCost": 1.0}, spent=usage.Totals())
    assert isinstance(third, modelcalls.Refused) and third.status == 429  # 0.8 + 0.4 > 1.0, two in flight


def test_no_budget_admits_everything():
    ledger = modelcalls.Ledger()
    for _ in range(50):
        d = ledger.admit(BUILD, attempt(), asked(10**6, 10**6, choices=128), budget=None, spent=usage.Totals())
        assert isinstance(d, modelcalls.Admitted) and d.write_max is None


@settings(max_examples=examples(300), deadline=None)
@given(budget=st.integers(0, 5000), attempts=st.integers(1, 6),
       calls=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000), st.one_of(st.none(), st.integers(0, 3000)),
                                st.integers(1, 130), st.booleans(), st.integers(0, 10**6)), max_size=60))
def test_served_tokens_never_pass_the_budget(budget, attempts, calls):
    """Any interleaving of admissions and settlements, with real usage at most the reservation: what is served
    stays within the budget, and every admitted call's maximum is bounded (its own or the one written)."""
    ledger = modelcalls.Ledger()
    spent = 0
    open_: list[tuple[int, modelcalls.Claim, int]] = []
    for who, prompt, maximum, choices, settle_first, used in calls:
        if settle_first and open_:
            ticket, _, real = open_.pop(0)
            spent += real
            ledger.release(ticket)
        call = asked(prompt, maximum, choices=choices)
        d = ledger.admit(BUILD, attempt(who % attempts), call, budget={"maxTokens": budget},
                         spent=usage.Totals(spent))
        if isinstance(d, modelcalls.Admitted):
            bound = d.write_max if d.write_max is not None else maximum
            assert bound is not None and d.claim.tokens == prompt + choices * bound
            open_.append((d.ticket, d.claim, min(used, d.claim.tokens)))
    served = spent + sum(real for _, _, real in open_)
    assert served <= budget


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
