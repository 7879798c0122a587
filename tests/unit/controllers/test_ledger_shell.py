"""The attempt ledger in the shell, against the in-memory API: an attempt's end writes its entry's ``result.json``
before the status write that records the end (so retention, which deletes only recorded Pods, never deletes a Pod
whose entry is not finalised), and the build's housekeeping deletes the oldest entries beyond
``spec.retention.ledger``."""

from __future__ import annotations

import json
from typing import Any

import pytest

import driving
from fake_kube import Clock, FakeKube, build
from longshot import config
from longshot.api import handoff as ho
from longshot.controllers import manager as managermod
from longshot.core import ledger

pytestmark = pytest.mark.unit


@pytest.fixture
def world():
    fake = FakeKube()
    clock = Clock()
    mono = [0.0]
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: mono[0])
    m.ctx.preflight = lambda k, b: None

    async def sync() -> None:
        for _ in range(30):
            for (kind, _, _), obj in list(fake.objects.items()):
                m.observe(kind, "MODIFIED", obj)
            for pod in list(fake.pods.values()):
                m.observe("Pod", "MODIFIED", pod)
            await driving.step(m)
            await driving.settle(m)
            if not m.queue.pending():
                break

    return fake, mono, clock, sync


def attempts(fake: FakeKube, task: str) -> list[dict[str, Any]]:
    return list((fake.objects[("AgentTask", "ns", task)].get("status") or {}).get("attempts") or [])


async def planned(fake: FakeKube, sync: Any, n: int) -> None:
    await sync()
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}") for i in range(n)])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()


async def test_an_ended_attempt_has_its_result_in_its_entry_and_its_record_names_the_entry(world):
    fake, _mono, _clock, sync = world
    fake.create(build(workers={"max": 5}))
    await planned(fake, sync, 1)
    done = ho.Handoff(task="b-p0", attempt=1, role="worker", outcome="failed", summary="no",
                      failure=ho.Failure(failure_class="AgentError", message="the tests would not pass"))
    fake.finish_pod("ns", "b-p0-a1", 3, json.dumps(done.to_wire()))
    await sync()
    first = attempts(fake, "b-p0")[0]
    assert first["ledger"] == "b-p0-a1-ledger" and first["endTime"]
    entry = fake.configmap_objects[("ns", "b-p0-a1-ledger")]
    result = json.loads(entry["data"][ledger.RESULT_KEY])
    assert result["failureClass"] == "AgentError" and result["exitCode"] == 3 and result["task"] == "b-p0"
    assert result["endTime"] == first["endTime"] and result["startTime"] == first["startTime"]
    assert entry["metadata"]["labels"][ledger.LABEL] == "true"
    assert entry["metadata"]["annotations"][ledger.ENDED_ANNOTATION] == first["endTime"]
    assert entry["metadata"]["ownerReferences"][0]["name"] == "b-p0"


async def test_an_entry_that_cannot_be_written_leaves_the_attempt_unrecorded_and_its_pod_kept(world):
    fake, mono, _clock, sync = world
    fake.create(build(workers={"max": 5}, retention={"finishedPods": 0}))
    await planned(fake, sync, 1)
    fake.fail_next["put_configmap"] = [RuntimeError("etcd is full")]
    done = ho.Handoff(task="b-p0", attempt=1, role="worker", outcome="succeeded", summary="nothing to change")
    fake.finish_pod("ns", "b-p0-a1", 0, json.dumps(done.to_wire()))
    await sync()
    # the reconcile failed on the entry, before the status write: the end is not recorded, so the Pod stays
    assert "endTime" not in attempts(fake, "b-p0")[0]
    assert ("ns", "b-p0-a1") in fake.pods and ("ns", "b-p0-a1-ledger") not in fake.configmap_objects
    mono[0] += 60  # the work queue's backoff is due
    await sync()
    assert attempts(fake, "b-p0")[0]["ledger"] == "b-p0-a1-ledger" and attempts(fake, "b-p0")[0]["endTime"]
    assert ("ns", "b-p0-a1-ledger") in fake.configmap_objects
    await sync()
    assert ("ns", "b-p0-a1") not in fake.pods  # recorded and finalised: now past spec.retention.finishedPods


async def test_the_oldest_entries_beyond_max_entries_are_deleted(world):
    fake, _mono, _clock, sync = world
    for i in range(5):
        m = ledger.manifest(namespace="ns", pod=f"b-old{i}-a1", task=f"b-old{i}", task_uid="u", build="b", attempt=1,
                            role="worker")
        m["metadata"]["annotations"] = {ledger.ENDED_ANNOTATION: f"2024-12-31T0{i}:00:00Z"}
        m["metadata"]["creationTimestamp"] = "2024-12-30T00:00:00Z"
        fake.configmap_objects[("ns", m["metadata"]["name"])] = m
    other = ledger.manifest(namespace="ns", pod="c-x-a1", task="c-x", task_uid="u", build="c", attempt=1,
                            role="worker")
    fake.configmap_objects[("ns", "c-x-a1-ledger")] = other
    fake.create(build(retention={"ledger": {"maxEntries": 2}}))
    await sync()
    left = sorted(n for (_, n) in fake.configmap_objects)
    assert left == ["b-old3-a1-ledger", "b-old4-a1-ledger", "c-x-a1-ledger"]  # another build's entry is not counted
    # the three of attempt 1 went in one request, by their labels (a thousand agents: one delete per entry was a
    # write per task, ``make bench-fleet``)
    assert fake.configmap_collection_deletes == [
        ("ns", "longshot.dev/ledger=true,longshot.dev/build=b,longshot.dev/attempt=1,"
               "longshot.dev/task in (b-old0,b-old1,b-old2)")]
    assert "delete_configmap" not in fake.calls
