"""The shell against an in-memory API (the same KubeAPI interface as the real adapter): a failed status write
is retried and lands, a plan becomes tasks and Pods, the periodic resync and the health check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_kube import FakeKube

from longshot import config
from longshot.api import handoff as ho
from longshot.controllers import manager as managermod
from longshot.runtime import kube

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def build(name: str = "b", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"request": "do it", "repository": {"url": "https://git.example/r.git"}, **spec}}


@pytest.fixture
def world():
    fake = FakeKube()
    clock = Clock()
    mono = [0.0]
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: mono[0])
    m.ctx.preflight = lambda k, b: None

    async def sync() -> None:
        """Deliver every object and Pod as a watch would, then run steps until nothing is due."""
        for _ in range(30):
            for (kind, _, _), obj in list(fake.objects.items()):
                m.observe(kind, "MODIFIED", obj)
            for pod in list(fake.pods.values()):
                m.observe("Pod", "MODIFIED", pod)
            await m.step()
            if not m.queue.pending():
                break

    return fake, m, clock, mono, sync


def status(fake: FakeKube, kind: str, name: str) -> dict[str, Any]:
    return fake.objects[(kind, "ns", name)].get("status") or {}


def cond(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions", []) if c["type"] == type_), {})


async def test_a_failed_status_write_is_retried_with_backoff_without_any_new_event(world):
    """Issue 9: one failed patch after spec.suspend: true was never retried over the following steps."""
    fake, m, clock, _mono, sync = world
    fake.create(build())
    await sync()
    obj = fake.patch("BuildRequest", "ns", "b", {"spec": {"suspend": True}})
    m.observe("BuildRequest", "MODIFIED", obj)  # the one and only event
    fake.fail_status[("BuildRequest", "b")] = [kube.Conflict("injected"), RuntimeError("a webhook refused once")]
    await m.step()
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 1
    await m.step()  # not due yet: nothing happens
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 1
    clock.now += timedelta(seconds=1)
    await m.step()
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 2
    assert cond(status(fake, "BuildRequest", "b"), "Suspended").get("status") != "True"
    clock.now += timedelta(seconds=5)
    await m.step()
    st = status(fake, "BuildRequest", "b")
    assert cond(st, "Suspended")["status"] == "True" and st["phase"] == "Suspended"
    assert cond(st, "Reconciling")["reason"] == "Suspended"
    assert all(c["observedGeneration"] == 2 for c in st["conditions"])
    assert m.queue.failures(("BuildRequest", "ns", "b")) == 0


async def test_a_plan_becomes_tasks_and_dependency_order_is_kept(world):
    fake, _m, _clock, _mono, sync = world
    fake.create(build())
    await sync()
    assert ("ns", "b-planner-a1") in fake.pods
    plan = ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                      tasks=[ho.PlannedTask(name="a", description="A"),
                             ho.PlannedTask(name="c", description="C", depends_on=["a"])])
    fake.finish_pod("ns", "b-planner-a1", 0, json.dumps(plan.to_wire()))
    await sync()
    assert {("AgentTask", "ns", "b-a"), ("AgentTask", "ns", "b-c")} <= set(fake.objects)
    assert ("ns", "b-a-a1") in fake.pods and ("ns", "b-c-a1") not in fake.pods
    c = status(fake, "AgentTask", "b-c")
    assert cond(c, "Reconciling")["reason"] == "WaitingForDependencies"
    st = status(fake, "BuildRequest", "b")
    assert st["phase"] == "Working" and cond(st, "Ready")["reason"] == "Working"


async def test_resync_marks_everything_and_health_follows_the_loop(world):
    fake, m, _clock, mono, sync = world
    fake.create(build())
    await sync()
    assert m.healthy()
    before = m.reconciles
    await m.step()
    assert m.reconciles == before  # nothing is marked: nothing is reconciled
    mono[0] += managermod.STALL_SECONDS + 1
    assert not m.healthy()  # the loop has not turned
    await m.step()  # the resync is due: everything is marked again and reconciled
    assert m.healthy()
    assert m.reconciles >= before + 2
