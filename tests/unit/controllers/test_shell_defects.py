"""Three defects of the shell (issue 30), each reproduced against the real classes and the in-memory API:

* A: a step that raised outside a reconcile left the references it had taken "processing" for ever;
* B: counters were incremented before the fenced status write that can lose with 409 (and be retried);
* C: a Pod read directly from the API was stored with its references dropped, so its lagging watch event looked
  like an echo and nothing reconciled the task until the resync.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

import driving
from fake_kube import Clock, FakeKube, build
from longshot import config, metrics
from longshot.api import handoff as ho
from longshot.controllers import dispatcher
from longshot.controllers import manager as managermod
from longshot.runtime import handoffs, kube

pytestmark = pytest.mark.unit


def manager(fake: FakeKube, clock: Clock, mono: list[float]) -> managermod.Manager:
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: mono[0])
    m.ctx.preflight = lambda k, b: None
    return m


async def sync(fake: FakeKube, m: managermod.Manager, *, pods: bool = True) -> None:
    """Deliver every object (and Pod) as a watch would, then run steps until nothing is due."""
    for _ in range(30):
        for (kind, _, _), obj in list(fake.objects.items()):
            m.observe(kind, "MODIFIED", obj)
        if pods:
            for pod in list(fake.pods.values()):
                m.observe("Pod", "MODIFIED", pod)
        await driving.step(m)
        await driving.settle(m)
        if not m.queue.pending():
            break


def status(fake: FakeKube, kind: str, name: str) -> dict[str, Any]:
    return fake.objects[(kind, "ns", name)].get("status") or {}


def cond(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions", []) if c["type"] == type_), {})


def plan_of(n: int) -> str:
    return json.dumps(ho.Handoff(task="b-planner", attempt=1, role="planner", outcome="succeeded",
                                 tasks=[ho.PlannedTask(name=f"p{i}", description=f"part {i}")
                                        for i in range(n)]).to_wire())


# --- A ----------------------------------------------------------------------------------------------------------


async def test_a_dispatch_that_raises_leaves_no_reference_processing():
    """A suspended build whose first dispatch raised once never got its Suspended condition, even after five more
    steps and a resync: the step had taken its reference and never handed it back. Now every controller hands back
    what it took in its own ``finally``, and the dispatcher is a controller of its own: its failure is its own
    retry."""
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)
    obj = fake.patch("BuildRequest", "ns", "b", {"spec": {"suspend": True}})
    m.observe("BuildRequest", "MODIFIED", obj)  # the one and only event

    dispatch = m.dispatcher.dispatch
    raised: list[str] = []

    async def dispatch_raising_once(why: str = "") -> None:
        if not raised:
            raised.append(why)
            raise RuntimeError("a bug in the dispatch")
        await dispatch(why)

    m.dispatcher.dispatch = dispatch_raising_once  # type: ignore[method-assign]
    await driving.step(m)
    assert raised  # and retried with its key's backoff
    assert not m.queue.busy(("BuildRequest", "ns", "b"))  # handed back, whatever raised
    for _ in range(5):
        clock.now += timedelta(seconds=1)
        await driving.step(m)
    st = status(fake, "BuildRequest", "b")
    assert cond(st, "Suspended").get("status") == "True" and st["phase"] == "Suspended"


async def test_a_dispatcher_that_keeps_raising_is_unhealthy_and_one_good_dispatch_heals_it():
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)
    assert m.healthy()

    async def broken(why: str = "") -> None:
        raise RuntimeError("a bug in the dispatch")

    dispatch = m.dispatcher.dispatch
    m.dispatcher.dispatch = broken  # type: ignore[method-assign]
    for _ in range(dispatcher.FAILURES_UNHEALTHY):
        assert m.healthy()
        m.dispatcher.poke("test")
        clock.now += timedelta(seconds=60)  # past its backoff
        await driving.step(m)
    assert not m.healthy()  # the housekeeping turned every time, but dispatch does nothing useful
    m.dispatcher.dispatch = dispatch  # type: ignore[method-assign]
    clock.now += timedelta(seconds=60)
    await driving.step(m)
    assert m.healthy()


async def test_housekeeping_that_keeps_raising_is_unhealthy_and_one_good_turn_heals_it():
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)

    def broken() -> None:
        raise RuntimeError("a bug in the gauges")

    gauges = m._gauges
    m._gauges = broken  # type: ignore[method-assign]
    for _ in range(managermod.STEP_FAILURES_UNHEALTHY):
        assert m.healthy()
        await driving.step(m)
    assert not m.healthy()
    m._gauges = gauges  # type: ignore[method-assign]
    await driving.step(m)
    assert m.healthy()


# --- B ----------------------------------------------------------------------------------------------------------


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def meter(fake: FakeKube, tokens: int, cost: float, attempt: int = 1, **more: object) -> None:
    """The gateway's progress write of the planner's attempt: its metered usage so far."""
    rv = fake.objects[("AgentTask", "ns", "b-planner")]["metadata"]["resourceVersion"]
    fake.patch_status("AgentTask", "ns", "b-planner",
                      {"progress": {"attempt": attempt, "tokens": tokens, "cost": cost, **more}}, resource_version=rv)


async def metered_planner(tokens: int, cost: float) -> tuple[FakeKube, Clock, Any]:
    """A build whose planner's first attempt runs, with ``tokens`` and ``cost`` metered by the gateway so far."""
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)
    meter(fake, tokens, cost)
    await sync(fake, m)
    return fake, clock, m


async def test_tokens_and_cost_are_counted_once_when_the_status_write_that_records_them_lost_once():
    """An attempt with 1,000 metered tokens whose write lost once made longshot_tokens_total grow by 2,000."""
    fake, clock, m = await metered_planner(1000, 0.25)
    tokens, cost = sample("longshot_tokens_total"), sample("longshot_cost_dollars_total")
    fake.finish_pod("ns", "b-planner-a1", 0, plan_of(1))
    fake.fail_status[("AgentTask", "b-planner")] = [kube.Conflict("AgentTask", "ns", "b-planner",
                                                    "the gateway wrote progress meanwhile")]
    for _ in range(5):
        await sync(fake, m)
        clock.now += timedelta(seconds=2)
    assert status(fake, "AgentTask", "b-planner")["phase"] == "Succeeded"
    assert not fake.fail_status[("AgentTask", "b-planner")]  # the write did lose once
    assert sample("longshot_tokens_total") == tokens + 1000
    assert sample("longshot_cost_dollars_total") == pytest.approx(cost + 0.25)


async def test_a_call_metered_after_its_attempt_ended_raises_the_attempt_s_record_and_the_counter():
    """CI (e2e-llm): a model call in flight when the planner's Pod ended was charged by the gateway after the operator
    had recorded the attempt; the build's usage counted it (the larger of record and meter) but the attempt's record
    never did, so the build's usage was more than the sum of its attempts (47,041 against 39,901 tokens)."""
    fake, _, m = await metered_planner(1000, 0.25)
    fake.finish_pod("ns", "b-planner-a1", 0, plan_of(1))
    await sync(fake, m)
    planner = status(fake, "AgentTask", "b-planner")
    assert planner["phase"] == "Succeeded" and planner["attempts"][0]["tokens"] == 1000
    tokens, cost = sample("longshot_tokens_total"), sample("longshot_cost_dollars_total")
    meter(fake, 1700, 0.5)  # the answer of the call in flight, charged now
    await sync(fake, m)
    attempt = status(fake, "AgentTask", "b-planner")["attempts"][0]
    assert (attempt["tokens"], attempt["cost"]) == (1700, 0.5)
    assert attempt["endTime"] == planner["attempts"][0]["endTime"]  # the same ended attempt, nothing else changed
    assert sample("longshot_tokens_total") == tokens + 700
    assert sample("longshot_cost_dollars_total") == pytest.approx(cost + 0.25)
    assert status(fake, "BuildRequest", "b")["usage"]["tokens"] == 1700
    await sync(fake, m)  # and once only
    assert sample("longshot_tokens_total") == tokens + 700


async def test_a_call_charged_after_the_next_attempt_started_metering_raises_the_earlier_attempt_s_record():
    """A late charge that reached the gateway after the task's next attempt had written its first progress was
    dropped: not in the attempt's record, not in the build's usage, not in the counter. The gateway now keeps it in
    ``progress.earlier`` (``core.usage.charge_late``) and the task raises that attempt's record from it."""
    fake, clock, m = await metered_planner(1000, 0.25)
    fake.finish_pod("ns", "b-planner-a1", 1, "it broke")
    for _ in range(30):  # its backoff, then attempt 2
        await sync(fake, m)
        if any(a["number"] == 2 for a in status(fake, "AgentTask", "b-planner").get("attempts") or []):
            break
        clock.now += timedelta(seconds=5)
    first = status(fake, "AgentTask", "b-planner")["attempts"][0]
    assert (first["number"], first["tokens"], first["cost"]) == (1, 1000, 0.25) and first.get("endTime")
    tokens, cost = sample("longshot_tokens_total"), sample("longshot_cost_dollars_total")
    meter(fake, 10, 0.0, attempt=2)
    await sync(fake, m)
    meter(fake, 10, 0.0, attempt=2, earlier=[{"attempt": 1, "tokens": 1700, "cost": 0.5}])  # a late charge of 700
    await sync(fake, m)
    first = status(fake, "AgentTask", "b-planner")["attempts"][0]
    assert (first["tokens"], first["cost"]) == (1700, 0.5)
    assert sample("longshot_tokens_total") == tokens + 700
    assert sample("longshot_cost_dollars_total") == pytest.approx(cost + 0.25)
    assert status(fake, "BuildRequest", "b")["usage"]["tokens"] == 1710
    await sync(fake, m)  # and once only
    assert sample("longshot_tokens_total") == tokens + 700


async def test_a_pod_failure_is_counted_once_when_the_status_write_that_records_it_lost_once():
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)
    failed = {"failure_class": "AgentError"}
    before = sample("longshot_pod_failures_total", failed)
    fake.finish_pod("ns", "b-planner-a1", 1, "it broke")
    fake.fail_status[("AgentTask", "b-planner")] = [kube.Conflict("AgentTask", "ns", "b-planner",
                                                    "the gateway wrote progress meanwhile")]
    await sync(fake, m)
    clock.now += timedelta(seconds=2)
    await sync(fake, m)
    assert not fake.fail_status[("AgentTask", "b-planner")]
    attempts = status(fake, "AgentTask", "b-planner")["attempts"]
    assert attempts[0].get("failureClass") == "AgentError"
    assert sample("longshot_pod_failures_total", failed) == before + 1


# --- C ----------------------------------------------------------------------------------------------------------


async def test_a_pod_read_from_the_api_has_its_task_reconciled_though_its_watch_event_looks_like_an_echo():
    """A planner whose Pod had ended stayed Running until the 60 s resync: the task's reconcile read the Pod from
    the API (the watch lagged after a restart), stored it and dropped its references; the Pod's watch event, with
    the same resourceVersion, then changed nothing."""
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    first = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, first)
    assert status(fake, "AgentTask", "b-planner")["phase"] == "Running"
    fake.finish_pod("ns", "b-planner-a1", 0, plan_of(1))

    m = manager(fake, clock, mono)  # a restart; the Pods' watch lags behind the objects'
    await sync(fake, m, pods=False)
    for _ in range(5):  # the Pods' events arrive now, steps go on; no resync is due (the clocks stand)
        await sync(fake, m)
    assert status(fake, "AgentTask", "b-planner")["phase"] == "Succeeded"


# --- a replayed success -------------------------------------------------------------------------------------------


async def test_a_success_whose_status_write_lost_creates_its_merge_job_once(monkeypatch: pytest.MonkeyPatch):
    """A worker's Succeeded write lost with 409 after its MergeJob was created: the replay found the job by name,
    took it for the MergeJob of an earlier attempt and made a second one (``<task>-a1``, a relaunch's name), so the
    branch was queued twice (seen in the chaos test: six MergeJobs "already on the target")."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    # the repository: the branch is there
    monkeypatch.setattr(handoffs, "branch_tips", lambda k, b, branches, egress=None: dict.fromkeys(branches, commit))
    fake, clock, mono = FakeKube(), Clock(), [0.0]
    m = manager(fake, clock, mono)
    fake.create(build())
    await sync(fake, m)
    fake.finish_pod("ns", "b-planner-a1", 0, plan_of(1))
    await sync(fake, m)
    assert ("AgentTask", "ns", "b-p0") in fake.objects
    fake.finish_pod("ns", "b-p0-a1", 0, json.dumps(ho.Handoff(
        task="b-p0", attempt=1, role="worker", outcome="succeeded", branch="longshot/ns/b/b-p0",
        commit=commit, summary="done").to_wire()))
    fake.fail_status[("AgentTask", "b-p0")] = [kube.Conflict("AgentTask", "ns", "b-p0",
                                               "the gateway wrote progress meanwhile")]
    for _ in range(3):
        await sync(fake, m)
        clock.now += timedelta(seconds=2)
    assert not fake.fail_status[("AgentTask", "b-p0")], status(fake, "AgentTask", "b-p0")  # the write lost once
    assert status(fake, "AgentTask", "b-p0")["phase"] == "Succeeded"
    jobs = sorted(name for kind, _, name in fake.objects if kind == "MergeJob")
    assert jobs == ["b-p0"]
    assert status(fake, "AgentTask", "b-p0")["mergeJob"] == "b-p0"
