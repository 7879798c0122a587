"""The clean-up of a deleted build's refs (core.cleanup): which refs go, when the finalizer goes, retries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from longshot.core import cleanup, effects
from longshot.core.cleanup import Ref, TaskFacts
from longshot.core.effects import EmitEvent

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS, B = "team", "demo"
BR = f"refs/heads/longshot/{NS}/{B}/"
HO = f"refs/longshot/handoffs/{NS}/{B}/"


def state(policy: cleanup.Policy = "OnSuccess", *, deleting: bool = True, finalizer: bool = True,
          succeeded: bool = True, attempts: int = 0, retry_at: datetime | None = None) -> cleanup.State:
    return cleanup.State(NS, B, policy, finalizer, T0 if deleting else None, succeeded, attempts, retry_at)


def listed(*refs: str, **tasks: TaskFacts) -> cleanup.Listed:
    return cleanup.Listed(tuple(Ref(r, f"{i:040x}") for i, r in enumerate(refs, 1)), tasks)


def worker(name: str, *, landed: bool = False, phase: str = "Succeeded") -> TaskFacts:
    return TaskFacts(name, "worker", phase, landed=landed)


def deleted(s: cleanup.State, event: cleanup.Listed) -> list[str]:
    _, effects = cleanup.decide(s, event, now=T0)
    return [r.name for e in effects if isinstance(e, cleanup.DeleteRefs) for r in e.refs]


def events(effects: list[cleanup.Effect]) -> list[EmitEvent]:
    return [e for e in effects if isinstance(e, EmitEvent)]


# --- the table -------------------------------------------------------------------------------------------


def test_the_first_reconcile_adds_the_finalizer_and_later_ones_do_nothing():
    s, effects = cleanup.decide(state(deleting=False, finalizer=False), cleanup.Observed(), now=T0)
    assert effects == [cleanup.AddFinalizer()] and s.phase == cleanup.GUARDED
    assert cleanup.decide(s, cleanup.Observed(), now=T0) == (s, [])


def test_a_build_being_deleted_without_the_finalizer_is_left_to_the_api_server():
    s = state(finalizer=False)
    assert s.phase == cleanup.RELEASED
    assert cleanup.decide(s, cleanup.Observed(), now=T0) == (s, [])


def test_deletion_lists_the_build_refs_under_its_own_prefixes():
    _, effects = cleanup.decide(state(), cleanup.Observed(), now=T0)
    assert effects == [cleanup.ListRefs((BR, HO))]


def test_never_removes_the_finalizer_without_touching_the_repository():
    s, effects = cleanup.decide(state("Never"), cleanup.Observed(), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer()
    assert not any(isinstance(e, cleanup.ListRefs | cleanup.DeleteRefs) for e in effects)
    assert events(effects)[0].reason == "CleanupSkipped" and not s.finalizer


@pytest.mark.parametrize(("s", "event"), [
    (state(deleting=False), cleanup.Listed(())),
    (state(deleting=False, finalizer=False), cleanup.Deleted(())),
    (state(finalizer=False), cleanup.ForgeFailed("x")),
])
def test_an_event_impossible_in_the_phase_is_refused(s, event):
    with pytest.raises(effects.InvalidTransition):  # the deciders' one exception, which effects.fold collects
        cleanup.decide(s, event, now=T0)
    _, _, invalid = effects.fold(lambda st, e: cleanup.decide(st, e, now=T0), s, [event])
    assert len(invalid) == 1


# --- what goes and what stays ------------------------------------------------------------------------------


def test_on_success_deletes_landed_branches_their_handoffs_and_queue_branches():
    event = listed(BR + "demo-a", HO + "demo-a/1", BR + "_queue/b1/1", HO + "demo-planner/1",
                   **{"demo-a": worker("demo-a", landed=True),
                      "demo-planner": TaskFacts("demo-planner", "planner", "Succeeded")})
    assert sorted(deleted(state(), event)) == sorted(
        [BR + "demo-a", HO + "demo-a/1", BR + "_queue/b1/1", HO + "demo-planner/1"])


def test_on_success_keeps_a_branch_whose_work_did_not_merge_and_says_why():
    event = listed(BR + "demo-a", BR + "demo-b", HO + "demo-b/2",
                   **{"demo-a": worker("demo-a", landed=True), "demo-b": worker("demo-b", phase="Failed")})
    assert deleted(state(), event) == [BR + "demo-a"]
    chosen = cleanup.select("OnSuccess", True, NS, B, event)
    assert dict(chosen.kept) == {BR + "demo-b": "the work of demo-b did not merge",
                                 HO + "demo-b/2": "the work of demo-b did not merge"}


def test_on_success_of_a_build_that_failed_keeps_everything_but_queue_branches():
    event = listed(BR + "demo-a", HO + "demo-a/1", BR + "_queue/b1/2", **{"demo-a": worker("demo-a", landed=True)})
    assert deleted(state(succeeded=False), event) == [BR + "_queue/b1/2"]


def test_a_ref_whose_task_is_gone_or_that_longshot_did_not_write_is_kept_on_success():
    event = listed(BR + "demo-gone", BR + "notes/by-hand", HO + "weird")
    _, effects = cleanup.decide(state(), event, now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer()  # nothing to delete: done at once
    (ev,) = events(effects)
    assert "kept 3" in ev.message and "no AgentTask demo-gone" in ev.message
    assert "not a ref Longshot wrote" in ev.message


def test_a_losing_best_of_n_candidate_is_abandoned_and_goes():
    lost = TaskFacts("demo-a-c2", "worker", "Succeeded", lost=True)
    won = TaskFacts("demo-a-c1", "worker", "Succeeded", landed=True)
    event = listed(BR + "demo-a-c1", BR + "demo-a-c2", **{"demo-a-c1": won, "demo-a-c2": lost})
    assert deleted(state(), event) == [BR + "demo-a-c1", BR + "demo-a-c2"]


def test_a_running_reviewer_handoff_is_not_a_report_yet():
    assert cleanup.fate(TaskFacts("r", "reviewer", "Running")) == "open"
    assert cleanup.fate(TaskFacts("r", "reviewer", "Succeeded")) == "report"
    assert cleanup.fate(TaskFacts("w", "worker", "Succeeded")) == "open"


def test_always_deletes_every_ref_of_the_build_and_never_another_builds():
    event = listed(BR + "demo-b", BR + "notes/x", HO + "demo-b/1", f"refs/heads/longshot/{NS}/demo2/demo2-a",
                   f"refs/heads/longshot/other/{B}/x", **{"demo-b": worker("demo-b", phase="Failed")})
    assert sorted(deleted(state("Always", succeeded=False), event)) == sorted(
        [BR + "demo-b", BR + "notes/x", HO + "demo-b/1"])


# --- done, retries, giving up ----------------------------------------------------------------------------


def test_when_every_deletion_went_through_the_finalizer_is_removed():
    s, _ = cleanup.decide(state(), listed(BR + "demo-a", **{"demo-a": worker("demo-a", landed=True)}), now=T0)
    s, effects = cleanup.decide(s, cleanup.Deleted(()), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer() and "deleted 1 ref" in events(effects)[0].message


def test_the_event_after_deleting_names_what_the_policy_kept():
    event = listed(BR + "demo-a", BR + "demo-b", **{"demo-a": worker("demo-a", landed=True),
                                                    "demo-b": worker("demo-b", phase="Failed")})
    s, _ = cleanup.decide(state(), event, now=T0)
    _, effects = cleanup.decide(s, cleanup.Deleted(()), now=T0)
    message = events(effects)[0].message
    assert "deleted 1 ref" in message and f"kept 1: {BR}demo-b (the work of demo-b did not merge)" in message


def test_an_unreachable_forge_is_retried_with_growing_delays_recorded_on_the_build():
    s = state()
    delays = []
    for n in range(1, cleanup.MAX_ATTEMPTS):
        now = T0 + timedelta(seconds=n)
        s, effects = cleanup.decide(s, cleanup.ForgeFailed("connection refused"), now=now)
        (record,) = [e for e in effects if isinstance(e, cleanup.RecordAttempt)]
        assert record.attempts == n and cleanup.RetryAt(record.retry_at) in effects
        assert cleanup.RemoveFinalizer() not in effects
        assert events(effects)[0].type == "Warning"
        delays.append(record.retry_at - now)
    assert delays == sorted(delays) and delays[0] == cleanup.BASE_DELAY and delays[-1] <= cleanup.MAX_DELAY


def test_a_retry_not_due_yet_only_waits():
    s = state(attempts=1, retry_at=T0 + timedelta(seconds=30))
    assert cleanup.decide(s, cleanup.Observed(), now=T0 + timedelta(seconds=10)) == (
        s, [cleanup.RetryAt(T0 + timedelta(seconds=30))])
    _, effects = cleanup.decide(s, cleanup.Observed(), now=T0 + timedelta(seconds=30))
    assert effects == [cleanup.ListRefs((BR, HO))]


def test_after_the_last_attempt_the_finalizer_goes_with_a_warning_naming_what_was_left():
    s = state(attempts=cleanup.MAX_ATTEMPTS - 1)
    s, effects = cleanup.decide(s, cleanup.ForgeFailed("could not list the refs: timed out"), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer()
    (ev,) = events(effects)
    assert (ev.type, ev.reason) == ("Warning", "CleanupAbandoned")
    assert BR in ev.message and HO in ev.message and "timed out" in ev.message


def test_past_the_deadline_a_failure_is_the_last_one():
    _, effects = cleanup.decide(state(attempts=1), cleanup.ForgeFailed("down"), now=T0 + cleanup.DEADLINE)
    assert effects[-1] == cleanup.RemoveFinalizer() and "minutes after the deletion" in events(effects)[0].message


def test_refs_the_server_kept_are_retried_and_named_when_given_up():
    event = listed(BR + "demo-a", **{"demo-a": worker("demo-a", landed=True)})
    s, _ = cleanup.decide(state(), event, now=T0)
    s2, effects = cleanup.decide(s, cleanup.Deleted((BR + "demo-a",)), now=T0)
    assert any(isinstance(e, cleanup.RecordAttempt) for e in effects)
    _, effects = cleanup.decide(dataclasses.replace(s2, attempts=cleanup.MAX_ATTEMPTS),
                                cleanup.Deleted((BR + "demo-a",)), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer() and BR + "demo-a" in events(effects)[0].message


def test_an_event_names_at_most_a_bounded_number_of_refs():
    event = listed(*(f"{BR}gone-{i}" for i in range(500)))
    _, effects = cleanup.decide(state(), event, now=T0)
    message = events(effects)[0].message
    assert f"and {500 - cleanup.MAX_NAMED} more" in message and len(message) < 2000


def test_a_credentials_secret_gone_gives_up_at_once():
    _, effects = cleanup.decide(state(), cleanup.CredentialsGone("git-token"), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer()
    (ev,) = events(effects)
    assert ev.reason == "CleanupAbandoned" and "credentials Secret git-token is gone" in ev.message
    _, effects = cleanup.decide(state(), cleanup.CredentialsGone("git-token", forbidden=True), now=T0)
    assert effects[-1] == cleanup.RemoveFinalizer()
    assert "git-token can no longer be read (Forbidden" in events(effects)[0].message
