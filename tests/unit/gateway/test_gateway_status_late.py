"""The gateway's progress writes (``gateway.status.TaskStatus``) when a model call's answer arrives after the
task moved on to its next attempt: the charge goes to ``progress.earlier``, never lost and never counted twice;
other late writes are dropped; a new attempt's first write keeps what the old one metered past its record."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from longshot.api import handoff as ho
from longshot.core import usage
from longshot.gateway import cluster as gcluster
from longshot.gateway.identity import Caller
from longshot.gateway.status import TaskStatus

pytestmark = pytest.mark.unit


def merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch: what the API server does with the status patch."""
    for k, v in patch.items():
        if v is None:
            into.pop(k, None)
        elif isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


class Cluster:
    """The two calls TaskStatus makes, in memory, fenced on the resourceVersion like the API server."""

    def __init__(self, status: dict[str, Any], *, stale: dict[str, Any] | None = None) -> None:
        self.task: dict[str, Any] = {"metadata": {"name": "b-t", "uid": "task-uid", "resourceVersion": "5"},
                                     "status": copy.deepcopy(status)}
        self.stale = stale
        """What the watch cache still holds (an older resourceVersion), read first."""
        self.patches: list[dict[str, Any]] = []

    def get_task(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        if self.stale is not None and not fresh:
            return copy.deepcopy(self.stale)
        return copy.deepcopy(self.task)

    def patch_task_status(self, namespace: str, name: str, resource_version: str,
                          status: dict[str, Any]) -> dict[str, Any] | None:
        if resource_version != self.task["metadata"]["resourceVersion"]:
            raise gcluster.Conflict("changed")
        self.patches.append(copy.deepcopy(status))
        merge(self.task["status"], status)
        self.task["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        return self.task


def caller(attempt: int) -> Caller:
    ti = ho.TaskInput(task="b-t", build="b", namespace="ns", role="worker", description="d",
                      repository_url="https://x/r.git", branch="longshot/ns/b/b-t")
    return Caller(namespace="ns", pod=f"b-t-a{attempt}", pod_uid=f"u{attempt}", task="b-t", attempt=attempt,
                  role="worker", build="b", task_input=ti, task_obj={"metadata": {"uid": "task-uid"}}, build_obj={})


RECORDED = [{"number": 1, "pod": "b-t-a1", "tokens": 1000, "cost": 0.25, "endTime": "2026-11-29T10:00:00Z"},
            {"number": 2, "pod": "b-t-a2"}]


def test_a_call_of_attempt_1_answered_after_attempt_2_started_metering_goes_to_earlier():
    fake = Cluster({"attempts": RECORDED, "progress": {"attempt": 2, "tokens": 40, "inputTokens": 30,
                                                       "outputTokens": 10, "cost": 0.01, "calls": 1}})
    TaskStatus(fake).add_usage(caller(1), input_tokens=500, output_tokens=200, cost=0.25)  # type: ignore[arg-type]
    p = fake.task["status"]["progress"]
    assert (p["attempt"], p["tokens"], p["calls"], p["cost"]) == (2, 40, 1, 0.01)  # attempt 2's untouched
    assert p["earlier"] == [{"attempt": 1, "tokens": 1700, "cost": 0.5}]
    assert fake.patches == [{"progress": {"earlier": [{"attempt": 1, "tokens": 1700, "cost": 0.5}]}}]
    # the build counts attempt 1 at 1,700 and attempt 2 at 40; with the record raised by the operator, the same
    assert usage.task_usage(fake.task) == usage.Totals(1740, 0.51)
    fake.task["status"]["attempts"][0].update(tokens=1700, cost=0.5)
    assert usage.task_usage(fake.task) == usage.Totals(1740, 0.51)


def test_the_late_path_is_taken_after_a_conflict_with_the_watch_cache_s_stale_copy():
    # the watch cache still shows attempt 1's progress; the write fenced on it conflicts, the fresh read is past it
    stale = {"metadata": {"name": "b-t", "uid": "task-uid", "resourceVersion": "4"},
             "status": {"attempts": RECORDED[:1], "progress": {"attempt": 1, "tokens": 1000, "cost": 0.25}}}
    fake = Cluster({"attempts": RECORDED, "progress": {"attempt": 2, "tokens": 0, "cost": 0.0}}, stale=stale)
    TaskStatus(fake).add_usage(caller(1), input_tokens=7, output_tokens=3, cost=0.0)  # type: ignore[arg-type]
    assert fake.task["status"]["progress"] == {"attempt": 2, "tokens": 0, "cost": 0.0,
                                               "earlier": [{"attempt": 1, "tokens": 1010, "cost": 0.25}]}


def test_a_late_message_heartbeat_or_free_call_of_an_older_attempt_is_dropped():
    fake = Cluster({"attempts": RECORDED, "progress": {"attempt": 2, "tokens": 40, "cost": 0.01}})
    status = TaskStatus(fake)  # type: ignore[arg-type]
    assert status.report(caller(1), "late words") is None
    assert status.add_mcp_call(caller(1)) is None
    status.add_usage(caller(1), input_tokens=0, output_tokens=0, cost=0.0)
    assert fake.patches == []


def test_a_new_attempt_s_first_write_keeps_what_the_old_one_metered_past_its_record():
    # 700 tokens charged to attempt 1 after it was recorded at 1,000; attempt 2 writes before the operator copied them
    fake = Cluster({"attempts": RECORDED, "progress": {"attempt": 1, "tokens": 1700, "cost": 0.5, "calls": 3,
                                                       "earlier": [{"attempt": 1, "tokens": 1, "cost": 0.0}]}})
    TaskStatus(fake).report(caller(2), "cloning")  # type: ignore[arg-type]
    p = fake.task["status"]["progress"]
    assert (p["attempt"], p["tokens"], p["calls"], p["message"]) == (2, 0, 0, "cloning")
    assert p["earlier"] == [{"attempt": 1, "tokens": 1700, "cost": 0.5}]
    assert usage.task_usage(fake.task) == usage.Totals(1700, 0.5)


def test_a_new_attempt_s_first_write_leaves_the_earlier_list_when_the_record_says_it_all():
    kept = [{"attempt": 1, "tokens": 1200, "cost": 0.3}]
    fake = Cluster({"attempts": [{"number": 1, "tokens": 1200, "cost": 0.3}, {"number": 2}, {"number": 3}],
                    "progress": {"attempt": 2, "tokens": 50, "cost": 0.0, "earlier": kept}})
    fake.task["status"]["attempts"][1].update(tokens=50)
    TaskStatus(fake).report(caller(3), None)  # type: ignore[arg-type]
    assert "earlier" not in fake.patches[0]["progress"]
    assert fake.task["status"]["progress"]["earlier"] == kept and fake.task["status"]["progress"]["attempt"] == 3
