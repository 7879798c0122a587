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
