"""``longshot.tracing``: identifiers derived from UIDs (the same on any replica), the hostile ``traceparent``
refused, spans of attempts and builds made from status, the no-op path when off (no SDK imported), and spans
exported only after the status write that records them succeeded. Spans are caught with the SDK's in-memory
exporter; the OTLP wire and a real collector are the integration tier's (tests/integration/test_tracing.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fake_kube import FakeKube
from longshot import tracing
from longshot.config import Settings
from longshot.controllers import cache as cachemod
from longshot.controllers import executor as ex
from longshot.controllers import workqueue
from longshot.runtime import pods

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup(tracing.OPERATOR, "", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown(tracing.OPERATOR)


def test_a_builds_trace_id_is_the_first_16_bytes_of_the_sha256_of_its_uid():
    uid = "6f1d0c2e-8a7b-4f5e-9c3d-2b1a0e9f8d7c"
    assert tracing.trace_id_hex(uid) == hashlib.sha256(uid.encode()).hexdigest()[:32]
    assert tracing.build_trace_id(uid) == int(hashlib.sha256(uid.encode()).hexdigest()[:32], 16)
    assert tracing.trace_id_hex("another-uid") != tracing.trace_id_hex(uid)


def test_span_ids_come_from_stable_keys_so_a_restarted_replica_names_the_same_spans():
    a = tracing.attempt_span("build-uid", "task-uid", 2)
    assert a == tracing.attempt_span("build-uid", "task-uid", 2)
    assert a.trace_id == tracing.build_trace_id("build-uid")
    assert len({a.span_id, tracing.attempt_span("build-uid", "task-uid", 3).span_id,
                tracing.attempt_span("build-uid", "other-task", 2).span_id,
                tracing.build_span("build-uid").span_id}) == 4
    tp = tracing.traceparent("build-uid", "task-uid", 2)
    assert tp == f"00-{a.trace_id:032x}-{a.span_id:016x}-01"
    assert tracing.parse_traceparent(tp) == a


@pytest.mark.parametrize("value", [
    None, "", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # zero trace ID
    "00-" + "a" * 32 + "-" + "0" * 16 + "-01",  # zero span ID
    "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + " " * 100,  # too long
    "00-" + "g" * 32 + "-" + "b" * 16 + "-01", "00-" + "a" * 31 + "-" + "b" * 16 + "-01",
])
def test_a_malformed_traceparent_names_no_parent(value):
    assert tracing.parse_traceparent(value) is None


def test_an_ended_attempt_is_a_span_with_its_recorded_times_exit_and_failure_class():
    rec = tracing.attempt_record(build_uid="b-uid", build="app", namespace="ns", task_uid="t-uid", task="app-t1",
                                 role="worker", purpose=None, attempt={
                                     "number": 2, "pod": "app-t1-a2", "startTime": "2026-01-01T12:00:00Z",
                                     "endTime": "2026-01-01T12:03:00Z", "exitCode": 4, "exitReason": "x" * 5000,
                                     "failureClass": "Timeout"})
    assert rec is not None
    assert (rec.name, rec.start, rec.end) == ("attempt", T0, T0 + timedelta(minutes=3))
    assert (rec.trace_id, rec.span_id) == (tracing.build_trace_id("b-uid"),
                                           tracing.attempt_span("b-uid", "t-uid", 2).span_id)
    assert rec.parent_id == tracing.build_span("b-uid").span_id
    assert rec.attributes["longshot.failure_class"] == "Timeout" and rec.attributes["longshot.exit_code"] == 4
    assert len(rec.attributes["longshot.exit_reason"]) == tracing.MAX_ATTRIBUTE_CHARS  # hostile text is cut
    assert rec.error == "Timeout"
    named = {p: tracing.attempt_record(build_uid="b", build="a", namespace="n", task_uid="t", task="t", role=r,
                                       purpose=p, attempt={"number": 1, "endTime": "2026-01-01T12:00:00Z"})
             for r, p in (("planner", None), ("tester", "gate"), ("tester", "sweep"), ("reviewer", "review"))}
    assert {p: r.name for p, r in named.items() if r} == {None: "planning", "gate": "gate", "sweep": "sweep",
                                                          "review": "review"}
    assert tracing.attempt_record(build_uid="b", build="a", namespace="n", task_uid="t", task="t", role="worker",
                                  purpose=None, attempt={"number": 1, "startTime": "2026-01-01T12:00:00Z"}) is None


def test_a_build_span_ends_when_finalized_turns_true_or_false_and_only_then():
    kw: dict[str, Any] = {"build_uid": "b-uid", "build": "app", "namespace": "ns", "created": T0,
                          "now": T0 + timedelta(hours=1), "finalization_attempts": 1}
    running = {"type": "Finalized", "status": "Unknown", "reason": "InProgress",
               "lastTransitionTime": "2026-01-01T12:50:00Z"}
    passed = {"type": "Finalized", "status": "True", "reason": "Passed"}
    failed = {"type": "Finalized", "status": "False", "reason": "TestsFailed"}
    finalization, root = tracing.build_records(before=running, after=passed, **kw)
    assert (root.name, root.parent_id, root.span_id) == ("build", None, tracing.build_span("b-uid").span_id)
    assert (root.start, root.end, root.error) == (T0, T0 + timedelta(hours=1), None)
    assert finalization.name == "finalization" and finalization.parent_id == root.span_id
    assert finalization.start == T0 + timedelta(minutes=50)
    assert tracing.build_records(before=running, after=failed, **kw)[-1].error == "TestsFailed"
    assert tracing.build_records(before=passed, after=passed, **kw) == ()  # already ended: nothing twice
    assert tracing.build_records(before=None, after=running, **kw) == ()


def test_emit_exports_a_span_with_the_ids_and_times_it_was_given(spans):
    root = tracing.build_span("b-uid")
    child = tracing.attempt_span("b-uid", "t-uid", 1)
    tracing.emit(tracing.record("attempt", child, root, T0, T0 + timedelta(seconds=90), {"longshot.attempt": 1}))
    tracing.emit(tracing.record("build", root, None, T0 - timedelta(seconds=5), T0 + timedelta(minutes=5)))
    got = {s.name: s for s in spans.get_finished_spans()}
    a, b = got["attempt"], got["build"]
    assert (a.context.trace_id, a.context.span_id, a.parent.span_id) == (child.trace_id, child.span_id, root.span_id)
    assert a.start_time == int(T0.timestamp() * 1e9) and a.end_time - a.start_time == 90 * 10**9
    assert (b.context.trace_id, b.context.span_id, b.parent) == (root.trace_id, root.span_id, None)
    assert a.resource.attributes["service.name"] == tracing.OPERATOR


def test_a_live_span_is_a_child_of_the_parent_given_and_carries_its_traceparent(spans):
    root = tracing.build_span("b-uid")
    with tracing.span("landing", {"longshot.size": 2}, parent=root) as s:
        s.set("longshot.landed", True)
        inner = tracing.parse_traceparent(tracing.current_traceparent())
    (landing,) = spans.get_finished_spans()
    assert landing.parent.span_id == root.span_id and landing.context.trace_id == root.trace_id
    assert inner == tracing.Parent(landing.context.trace_id, landing.context.span_id)
    assert dict(landing.attributes) == {"longshot.size": 2, "longshot.landed": True}


def _status_write(spans_: tuple[tracing.SpanRecord, ...]) -> ex.WriteStatus:
    return ex.WriteStatus("AgentTask", "ns", "t1", "1", {"phase": "Failed"}, spans=spans_)


async def test_the_executor_exports_a_writes_spans_only_once_the_write_succeeded(spans):
    fake = FakeKube()
    fake.objects[("AgentTask", "ns", "t1")] = {"metadata": {"name": "t1", "namespace": "ns", "resourceVersion": "1"}}
    clock = lambda: T0  # noqa: E731
    e = ex.Executor(fake, cachemod.Cache(), workqueue.WorkQueue(clock), clock)
    rec = tracing.record("attempt", tracing.attempt_span("b", "t", 1), tracing.build_span("b"), T0, T0)
    fake.fail_status[("AgentTask", "t1")] = [RuntimeError("conflict")]
    with pytest.raises(RuntimeError):
        await e.run([_status_write((rec,))])
    assert spans.get_finished_spans() == ()  # the write lost: its reconcile is retried, the span not sent twice
    await e.run([_status_write((rec,))])
    assert [s.name for s in spans.get_finished_spans()] == ["attempt"]


def test_an_agent_pod_gets_its_attempts_traceparent_only_while_tracing():
    task = {"metadata": {"name": "app-t1", "namespace": "ns", "uid": "task-uid"},
            "spec": {"buildRef": {"name": "app"}, "description": "d", "role": "worker"}}
    build = {"metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
             "spec": {"request": "r", "repository": {"url": "https://git.example.com/a.git"},
                      "agent": {"backend": "scripted", "env": [{"name": "TRACEPARENT", "value": "00-forged"}]}}}

    def env(settings: Settings) -> dict[str, str]:
        pod = pods.build_agent_pod(task, build, settings, 3)
        return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}

    traced = env(Settings(identity="t", tracing_endpoint="http://collector:4318"))
    assert traced["TRACEPARENT"] == tracing.traceparent("build-uid", "task-uid", 3)
    assert "00-forged" not in traced.values() and "LONGSHOT_TRACING_ENDPOINT" not in traced
    assert env(Settings(identity="t")).get("TRACEPARENT") == "00-forged"  # off: the build's env as it is
