"""The status writes the pure queue owes its jobs: held checks (``QueueState.held``, ``WriteChecks``), first statuses,
a fixer's merge and finalization's retry asked (``observe``). These facts used to be the shell's, held together by
timers and a hook between two reconcilers; now the decider says when to write them, and no timer does."""

from __future__ import annotations

import pytest

from longshot.core import mergequeue as q
from longshot.core.mergequeue import Candidate, JobFacts, QueueState

pytestmark = pytest.mark.unit


def ready(*names: str, build: str = "b") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, build) for n in names)


def in_batch(*names: str, build: str = "b", bid: str = "B") -> tuple[Candidate, ...]:
    return tuple(Candidate(n, build, batch_id=bid, position=i, commit=f"S{i}", base="T0")
                 for i, n in enumerate(names, start=1))


def writes(effects: list[q.Effect]) -> list[str]:
    return [e.name for e in effects if isinstance(e, q.WriteChecks)]


def test_held_checks_taken_by_a_batch_are_written_with_it() -> None:
    state = QueueState(ready("a", "b"), target_head="T0", max_window={"b": 4}, held=frozenset({"a", "b"}))
    effects = q.decide(state)
    assert effects == [q.PrepareBatch("b", ("a", "b"))]  # their checks go with their batch's write


def test_held_checks_beyond_the_window_wait_for_the_batch_their_build_builds_now() -> None:
    state = QueueState(ready("a", "b", "c"), target_head="T0", max_window={"b": 2}, held=frozenset({"c"}))
    effects = q.decide(state)
    assert effects == [q.PrepareBatch("b", ("a", "b"))] and writes(effects) == []


def test_held_checks_wait_while_a_batch_of_their_build_is_under_test() -> None:
    state = QueueState((*in_batch("a", "b"), *ready("c")), target_head="T0", max_window={"b": 2},
                       max_depth={"b": 1}, held=frozenset({"c"}))
    assert writes(q.decide(state)) == []


def test_held_checks_no_batch_takes_are_written_on_their_own() -> None:
    """Another build's batch is built, and nothing of the held job's build is under test: written now."""
    state = QueueState((*ready("a", build="b1"), *ready("x", build="b2")), target_head="T0", held=frozenset({"x"}))
    effects = q.decide(state)
    assert q.PrepareBatch("b1", ("a",)) in effects and writes(effects) == ["x"]
    assert not any(isinstance(e, q.Wait) for e in effects)


def test_nothing_is_written_for_a_queue_that_holds_nothing() -> None:
    state = QueueState((*in_batch("a"), *ready("x", build="b2")), target_head="T0", max_depth={"b": 1})
    assert writes(q.decide(state)) == []


def test_observe_writes_a_first_status_only_where_no_step_is_about_to() -> None:
    facts = [JobFacts("new", "Queued", seen=False, checking=True),  # the checks step writes it with its checks
             JobFacts("held", "Queued", seen=False, checking=True, held=True),  # its batch writes it
             JobFacts("restored", "Testing", seen=False),  # a batch member after a restore: nobody else would
             JobFacts("written", "Queued")]
    assert q.observe(facts) == [q.Observe("restored")]


def test_observe_carries_a_job_whose_fixer_merged_if_it_failed_or_conflicted() -> None:
    facts = [JobFacts("f", "Failed", fixer_merged="c1"), JobFacts("c", "Conflicted", fixer_merged="c2"),
             JobFacts("m", "Merged", fixer_merged="c3"), JobFacts("q", "Queued")]
    assert q.observe(facts) == [q.FixerMerged("f", "c1"), q.FixerMerged("c", "c2")]


def test_observe_answers_finalization_s_retry_asked() -> None:
    """A job that ended unmerged is tried again (a status write); any other has the ask taken away."""
    facts = [JobFacts("f", "Failed", retry="2"), JobFacts("c", "Conflicted", retry="2"),
             JobFacts("q", "Queued", retry="2"), JobFacts("m", "Merged", retry="2"), JobFacts("n", "Failed")]
    assert q.observe(facts) == [q.RetryAsked("f", "2", again=True), q.RetryAsked("c", "2", again=True),
                                q.RetryAsked("q", "2", again=False), q.RetryAsked("m", "2", again=False)]
