"""core.delivery: the table in its docstring, row by row, and the chain of fixers."""

from __future__ import annotations

import pytest

from longshot.core import delivery, tasks
from longshot.core import mergejobs as mj
from longshot.core.delivery import FixerFacts, JobFacts

pytestmark = pytest.mark.unit


def no_fixer(name: str) -> FixerFacts | None:
    raise AssertionError(f"no fixer should be looked up ({name})")


@pytest.mark.parametrize(("job", "delivered", "terminal", "undeliverable"), [
    (JobFacts(mj.MERGED), True, True, False),
    (JobFacts(mj.SUPERSEDED), True, True, False),
    (JobFacts(None), False, False, False),
    (JobFacts(mj.QUEUED), False, False, False),
    (JobFacts(mj.TESTING), False, False, False),
    (JobFacts(mj.AWAITING_APPROVAL), False, False, False),
    (JobFacts(mj.CONFLICTED, reconciling="True"), False, False, False),  # retried when the target moves
    (JobFacts(mj.CONFLICTED), False, False, False),
    (JobFacts(mj.CONFLICTED, reconciling="False"), False, True, True),
    (JobFacts(mj.FAILED), False, True, True),
])
def test_the_table_for_a_job_without_a_fixer(job: JobFacts, delivered: bool, terminal: bool,
                                              undeliverable: bool) -> None:
    assert delivery.delivered(job) is delivered
    assert delivery.terminal(job) is terminal
    assert delivery.undeliverable(job, no_fixer) is undeliverable


@pytest.mark.parametrize(("fixer", "undeliverable"), [
    (None, False),  # being created
    (FixerFacts(tasks.RUNNING, has_commit=False, job=None), False),
    (FixerFacts(tasks.FAILED, has_commit=False, job=None), True),
    (FixerFacts(tasks.CANCELLED, has_commit=True, job=None), True),
    (FixerFacts(tasks.SUCCEEDED, has_commit=False, job=None), True),  # it fixed nothing it could hand over
    (FixerFacts(tasks.SUCCEEDED, has_commit=True, job=None), False),  # its MergeJob comes
    (FixerFacts(tasks.SUCCEEDED, has_commit=True, job=JobFacts(mj.MERGED)), False),
    (FixerFacts(tasks.SUCCEEDED, has_commit=True, job=JobFacts(mj.QUEUED)), False),
    (FixerFacts(tasks.SUCCEEDED, has_commit=True, job=JobFacts(mj.FAILED)), True),
])
def test_a_failed_job_is_carried_by_its_fixer_until_the_fixer_fails(fixer: FixerFacts | None,
                                                                     undeliverable: bool) -> None:
    job = JobFacts(mj.FAILED, fixer="b-x-fix")
    assert delivery.terminal(job)
    assert delivery.undeliverable(job, lambda name: fixer if name == "b-x-fix" else None) is undeliverable


def test_a_conflicted_job_with_a_fixer_is_terminal_and_follows_the_fixer() -> None:
    job = JobFacts(mj.CONFLICTED, reconciling="True", fixer="f")
    assert delivery.terminal(job)
    assert not delivery.undeliverable(job, lambda name: FixerFacts(tasks.RUNNING, False, None))


def test_a_chain_of_fixers_is_followed_to_its_end_and_bounded() -> None:
    def chain(length: int, last: JobFacts) -> dict[str, FixerFacts]:
        out = {}
        for i in range(length):
            job = last if i == length - 1 else JobFacts(mj.FAILED, fixer=f"f{i + 1}")
            out[f"f{i}"] = FixerFacts(tasks.SUCCEEDED, has_commit=True, job=job)
        return out

    start = JobFacts(mj.FAILED, fixer="f0")
    merged = chain(3, JobFacts(mj.MERGED))
    assert not delivery.undeliverable(start, merged.get)
    failed = chain(3, JobFacts(mj.FAILED))
    assert delivery.undeliverable(start, failed.get)
    endless = chain(50, JobFacts(mj.QUEUED))  # longer than MAX_CHAIN: not followed to its (deliverable) end
    assert delivery.undeliverable(start, endless.get)


def test_fold_skips_impossible_events_and_keeps_the_rest_in_order() -> None:
    from longshot.core import builds, effects, mergejobs, tasks

    assert tasks.InvalidTransition is builds.InvalidTransition is mergejobs.InvalidTransition \
        is effects.InvalidTransition  # one class for every decider

    def decide(state: int, event: int) -> tuple[int, list[str]]:
        if event < 0:
            raise effects.InvalidTransition(f"{event} is impossible at {state}")
        return state + event, [f"+{event}"]

    state, out, invalid = effects.fold(decide, 0, [1, -5, 2])
    assert (state, out) == (3, ["+1", "+2"]) and [str(e) for e in invalid] == ["-5 is impossible at 1"]
