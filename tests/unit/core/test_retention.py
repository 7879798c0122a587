from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from longshot.core import retention
from longshot.core.retention import FinishedPod

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def pod(name: str, minute: int | None, **kw: bool) -> FinishedPod:
    return FinishedPod(name, None if minute is None else T0 + timedelta(minutes=minute), **kw)


def test_the_most_recently_finished_are_kept_and_the_rest_deleted():
    pods = [pod(f"t{i}-a1", i) for i in range(10)]
    assert retention.to_delete(pods, keep=3) == [f"t{i}-a1" for i in range(7)]


def test_a_pod_whose_attempt_is_not_recorded_yet_is_never_deleted_nor_counted():
    pods = [pod("old-a1", 0), pod("unread-a1", None), pod("new-a1", 5)]
    assert retention.to_delete(pods, keep=1) == ["old-a1"]
    assert retention.to_delete(pods, keep=0) == ["new-a1", "old-a1"]


def test_a_planner_pod_stays_until_its_plan_is_taken_in():
    waiting = pod("b-planner-a1", 0, planner=True, plan_taken_in=False)
    assert retention.to_delete([waiting, pod("x-a1", 1)], keep=0) == ["x-a1"]
    taken = pod("b-planner-a1", 0, planner=True, plan_taken_in=True)
    assert retention.to_delete([taken, pod("x-a1", 1)], keep=0) == ["b-planner-a1", "x-a1"]


def test_ties_are_broken_by_name_so_every_replica_agrees():
    pods = [pod(n, 0) for n in ("c", "a", "b")]
    assert retention.to_delete(pods, keep=1) == ["a", "b"]
    assert retention.to_delete(list(reversed(pods)), keep=1) == ["a", "b"]


@given(st.lists(st.tuples(st.integers(0, 50) | st.none(), st.booleans(), st.booleans()), max_size=40),
       st.integers(0, 20))
def test_never_a_needed_pod_and_exactly_the_surplus(specs, keep):
    pods = [pod(f"p{i}", m, planner=pl, plan_taken_in=taken) for i, (m, pl, taken) in enumerate(specs)]
    gone = set(retention.to_delete(pods, keep))
    assert not any(p.needed for p in pods if p.name in gone)
    deletable = [p for p in pods if not p.needed]
    assert len(gone) == max(0, len(deletable) - keep)
    kept = [p for p in deletable if p.name not in gone]
    assert all((k.finished or T0) >= (g.finished or T0) for k in kept for g in deletable if g.name in gone)


def test_within_the_same_second_the_later_started_is_the_more_recent():
    planner = FinishedPod("b-planner-a1", T0, started=T0 - timedelta(minutes=5))
    worker = FinishedPod("b-part-0-a1", T0, started=T0 - timedelta(minutes=1))
    assert retention.to_delete([planner, worker], keep=1) == ["b-planner-a1"]


def test_within_the_same_second_a_planner_s_pod_is_older_than_the_tasks_it_planned():
    # a fast build: the planner and its first worker started and ended within one second
    planner = FinishedPod("b-planner-a1", T0, planner=True, started=T0)
    worker = FinishedPod("b-part-0-a1", T0, started=T0)
    assert retention.to_delete([planner, worker], keep=1) == ["b-planner-a1"]
    assert retention.to_delete([worker, planner], keep=1) == ["b-planner-a1"]
