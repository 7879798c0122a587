"""Tracing in the gateway, pure parts: an agent's spans are kept only in its own build's trace and carry the identity
the gateway verified, whatever the agent claimed; a request's span is in the caller's trace, under the agent's span
only when that span is in the same trace. The relay over HTTP, to a real collector, is in the integration tier."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from longshot import tracing
from longshot.api import handoff
from longshot.gateway import traces
from longshot.gateway.identity import Caller

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def caller() -> Caller:
    ti = handoff.TaskInput(task="b-t", build="b", namespace="ns", role="worker", description="d",
                           repository_url="https://git.example.com/o/r.git", branch="longshot/b/b-t")
    return Caller(namespace="ns", pod="b-t-a2", pod_uid="u", task="b-t", attempt=2, role="worker", build="b",
                  task_input=ti, task_obj={"metadata": {"uid": "task-uid"}},
                  build_obj={"metadata": {"uid": "build-uid"}, "spec": {}})


def export(*trace_ids: int, service: str = "forged") -> bytes:
    spans = [trace_pb2.Span(name=f"s{i}", trace_id=t.to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
             for i, t in enumerate(trace_ids)]
    rs = trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
    rs.resource.attributes.append(common_pb2.KeyValue(key="service.name",
                                                      value=common_pb2.AnyValue(string_value=service)))
    rs.resource.attributes.append(common_pb2.KeyValue(key="longshot.task",
                                                      value=common_pb2.AnyValue(string_value="someone-else")))
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def test_only_the_callers_own_trace_is_relayed_under_its_verified_identity():
    own = tracing.build_trace_id("build-uid")
    other = tracing.build_trace_id("another-build")
    body, kept, dropped = traces.keep_own(export(own, other, own), caller())
    assert (kept, dropped) == (2, 1)
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    (rs,) = request.resource_spans
    assert [s.name for s in rs.scope_spans[0].spans] == ["s0", "s2"]
    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
    assert attrs == {"service.name": tracing.AGENT, "longshot.namespace": "ns", "longshot.build": "b",
                     "longshot.task": "b-t", "longshot.pod": "b-t-a2"}


def test_a_body_that_is_not_an_otlp_export_is_refused():
    with pytest.raises(ValueError, match="not an OTLP"):
        traces.keep_own(b"\xff\xff\xff not protobuf", caller())


def test_a_requests_span_hangs_under_the_agents_span_only_in_the_callers_trace():
    attempt = tracing.attempt_span("build-uid", "task-uid", 2)
    agents = tracing.Parent(attempt.trace_id, 0xABC)
    rec = traces.request_span("model", caller(), {"traceparent": agents.traceparent()}, T0, T0, "ok", 200,
                              "/model/openai/chat/completions")
    assert (rec.name, rec.trace_id, rec.parent_id, rec.error) == ("gateway model", attempt.trace_id, 0xABC, None)
    assert rec.attributes["longshot.pod"] == "b-t-a2" and rec.attributes["http.response.status_code"] == 200
    foreign = tracing.Parent(tracing.build_trace_id("another-build"), 0xDEF).traceparent()
    rec = traces.request_span("git", caller(), {"traceparent": foreign}, T0, T0, "forbidden", 403, "/git/x")
    assert (rec.trace_id, rec.parent_id, rec.error) == (attempt.trace_id, attempt.span_id, "HTTP 403")
    rec = traces.request_span("git", caller(), {}, T0, T0, "ok", 200, "/git/x")
    assert rec.parent_id == attempt.span_id


# --- the walk's budget: a batch costs at most a count of fields, and relays at most what came plus the identity ---

def _ld(number: int, payload: bytes) -> bytes:
    return traces._field(number, payload)


OWN = tracing.build_trace_id("build-uid").to_bytes(16, "big")
FOREIGN = tracing.build_trace_id("another-build").to_bytes(16, "big")


def test_half_a_million_empty_resources_are_refused_before_any_is_stamped():
    # on main: 18 s of CPU, 579 MiB and a 75 MiB relayed body
    with pytest.raises(traces.TooMuch, match=f"at most {traces.MAX_RESOURCE_SPANS} ResourceSpans"):
        traces.keep_own(b"\x0a\x00" * 524_288, caller())


@pytest.mark.parametrize(("body", "limit"), [
    (_ld(1, _ld(2, b"\x12\x00" * 500_000)), "8192 spans"),
    (_ld(1, b"\x12\x00" * 2000), "1024 ScopeSpans"),
    (_ld(1, _ld(1, b"\x0a\x00" * 500_000)), "131072 protobuf fields"),
    (_ld(1, _ld(2, _ld(2, _ld(1, OWN) + b"\x4a\x00" * 500_000))), "131072 protobuf fields"),
])
def test_a_batch_over_a_count_is_refused(body: bytes, limit: str):
    with pytest.raises(traces.TooMuch, match=limit):
        traces.keep_own(body, caller())


def test_empty_resources_and_scopes_are_not_relayed():
    body = b"\x0a\x00" * 60 + _ld(1, _ld(2, _ld(2, _ld(1, FOREIGN))))
    assert traces.keep_own(body, caller()) == (b"", 0, 1)


def test_the_relayed_body_is_at_most_the_received_one_plus_the_identity_of_each_resource():
    stamped = len(traces._identity_attributes({"service.name": tracing.AGENT, "longshot.namespace": "ns",
                                               "longshot.build": "b", "longshot.task": "b-t",
                                               "longshot.pod": "b-t-a2"}))
    raw = _ld(1, _ld(2, _ld(2, _ld(1, OWN)))) * traces.MAX_RESOURCE_SPANS
    body, kept, _ = traces.keep_own(raw, caller())
    assert kept == traces.MAX_RESOURCE_SPANS
    assert len(body) <= len(raw) + traces.MAX_RESOURCE_SPANS * (stamped + 8)
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert len(request.resource_spans) == traces.MAX_RESOURCE_SPANS


def test_a_span_naming_two_traces_is_in_the_last_one_as_protobuf_reads_it():
    assert traces.keep_own(_ld(1, _ld(2, _ld(2, _ld(1, OWN) + _ld(1, FOREIGN)))), caller())[1:] == (0, 1)
    assert traces.keep_own(_ld(1, _ld(2, _ld(2, _ld(1, FOREIGN) + _ld(1, OWN)))), caller())[1:] == (1, 0)


def test_identity_keys_are_replaced_in_every_occurrence_of_the_resource():
    forged = common_pb2.KeyValue(key="longshot.pod", value=common_pb2.AnyValue(string_value="x")).SerializeToString()
    kept = common_pb2.KeyValue(key="host.name", value=common_pb2.AnyValue(string_value="h")).SerializeToString()
    raw = _ld(1, _ld(1, _ld(1, forged)) + _ld(1, _ld(1, forged) + _ld(1, kept)) + _ld(2, _ld(2, _ld(1, OWN))))
    body, _, _ = traces.keep_own(raw, caller())
    (rs,) = trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans
    assert [(a.key, a.value.string_value) for a in rs.resource.attributes if a.key in ("longshot.pod", "host.name")] \
        == [("host.name", "h"), ("longshot.pod", "b-t-a2")]


@pytest.mark.parametrize("body", [b"\x0a\x05ab", b"\x0a\x80", b"\x0b\x00", b"\x0a\x02\x12\x09",
                                  b"\x08\x01\x0a\x01\x00"])
def test_bytes_that_are_not_a_message_are_refused(body: bytes):
    with pytest.raises(ValueError, match="not an OTLP"):
        traces.keep_own(body, caller())
