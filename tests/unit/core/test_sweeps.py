from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from longshot.core import sweeps
from longshot.core.sweeps import Settings, Start, SweepView, WaitUntil, next_sweep

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def done(n: int, *, passed: bool = True, merged: int = 1, ago: float = 3600, fixer: bool = False) -> SweepView:
    return SweepView(name=f"b-sweep-{n}", finished=True, passed=passed, merged_at_start=merged,
                     ended=NOW - timedelta(seconds=ago), fixer_exists=fixer)


def test_nothing_before_the_first_merge_or_with_sweeps_disabled():
    assert next_sweep([], 0, Settings(), NOW) is None
    assert next_sweep([], 3, Settings(enabled=False), NOW) is None


def test_the_first_merge_starts_the_first_sweep():
    assert next_sweep([], 1, Settings(), NOW) == Start(1, 1)


def test_one_sweep_at_a_time():
    running = SweepView(name="b-sweep-2", finished=False, merged_at_start=3)
    assert next_sweep([done(1), running], 9, Settings(), NOW) is None


def test_no_sweep_while_nothing_merged_since_the_last_one_began():
    assert next_sweep([done(1, merged=4)], 4, Settings(), NOW) is None
    assert next_sweep([done(1, merged=4)], 5, Settings(), NOW) == Start(2, 5)


def test_no_sweep_while_the_tip_is_the_commit_a_covering_gate_tested():
    """The shell found the tip tested by the gate when 3 branches had merged: no sweep until more merge."""
    assert next_sweep([], 3, Settings(), NOW, tip_tested_at=3) is None
    assert next_sweep([done(1, merged=1)], 3, Settings(), NOW, tip_tested_at=3) is None
    assert next_sweep([done(1, merged=1)], 4, Settings(), NOW, tip_tested_at=3) == Start(2, 4)
    assert next_sweep([], 3, Settings(), NOW, tip_tested_at=None) == Start(1, 3)


def test_the_interval_after_a_passing_sweep_and_a_quarter_of_it_after_a_failing_one():
    recent = done(1, ago=100)
    assert next_sweep([recent], 2, Settings(interval_seconds=300), NOW) == WaitUntil(NOW + timedelta(seconds=200))
    failed = done(1, passed=False, ago=100)
    assert next_sweep([failed], 2, Settings(interval_seconds=300), NOW) == Start(2, 2, fix="b-sweep-1")  # 75 s
    assert next_sweep([done(1, passed=False, ago=10)], 2, Settings(interval_seconds=60), NOW) == WaitUntil(
        NOW + timedelta(seconds=sweeps.FAILED_INTERVAL_FLOOR - 10))  # never under 30 s


def test_a_failed_sweep_gets_one_fixer_when_the_build_may_create_it():
    failed = done(1, passed=False)
    assert next_sweep([failed], 2, Settings(), NOW) == Start(2, 2, fix="b-sweep-1")
    assert next_sweep([done(1, passed=False, fixer=True)], 2, Settings(), NOW) == Start(2, 2)
    assert next_sweep([failed], 2, Settings(fixers_left=0), NOW) == Start(2, 2)
    assert next_sweep([failed], 2, Settings(max_fixers_per_sweep=0), NOW) == Start(2, 2)
    assert next_sweep([done(1)], 2, Settings(), NOW) == Start(2, 2)  # a passing sweep needs no fixer


def test_a_sweep_without_an_end_time_does_not_hold_the_next_one():
    unrecorded = SweepView(name="b-sweep-1", finished=True, passed=True, merged_at_start=1)
    assert next_sweep([unrecorded], 2, Settings(), NOW) == Start(2, 2)



def test_an_early_final_sweep_is_kept_while_it_tests_what_the_build_ends_with():
    from longshot.core.sweeps import EarlySweep, early_sweep_kept

    sweep = EarlySweep("b-final-i2", iteration=2, merged_at_start=5)
    base = {"iteration": 2, "planning": True, "request_met": False, "attempt": 0, "merged": 5}
    assert early_sweep_kept(sweep, **base)  # the planner has not answered
    assert early_sweep_kept(sweep, **{**base, "planning": False, "request_met": True})  # it answered done
    for change, why in (({"planning": False}, "it planned more work"), ({"merged": 6}, "something merged since"),
                        ({"iteration": 3}, "a later iteration"), ({"attempt": 1}, "finalization began without it")):
        assert not early_sweep_kept(sweep, **{**base, **change}), why
    adopted = EarlySweep("b-final-i2", iteration=2, merged_at_start=5, adopted=True)
    assert early_sweep_kept(adopted, **{**base, "planning": False, "attempt": 1, "merged": 9})


@pytest.mark.parametrize(("parts", "command", "covers"), [
    (["make test"], "make test", True),
    (["make lint", "make test"], "make test", True),  # the standard profile: lint, then the tests
    (["make lint", "make test"], "make lint && make test", True),  # the whole gate
    (["  make test "], "make test", True),
    (["make lint", "make test"], "make lint && make test && make e2e", False),
    (["make test"], "make e2e", False),
    (["make test"], "make", False),  # a part is a command, not a prefix
    (["make test"], "", False),  # no reconciler command: nothing to cover
    ([], "make test", False),  # no gate
])
def test_gate_covers_the_reconciler_command_when_it_is_the_gate_or_one_of_its_parts(parts, command, covers):
    assert sweeps.gate_covers(parts, command) is covers
