"""Tracing in longshot-gateway (only when it has a ``tracing_endpoint``; docs/tracing.md).

* A span per git and model request of an attempt (``gateway git``, ``gateway model``, ``gateway progress``), in
  the trace of the caller's build. The trace is the one the caller's identity names (its BuildRequest's UID, as the
  API server knows it), never one the agent chose: the agent's ``traceparent`` only picks the parent span (its
  model call) when it is in that trace; otherwise the parent is the attempt's span.
* ``POST /traces``: an agent's spans (OTLP/HTTP protobuf, as the SDK's exporter sends them), relayed to the
  collector. The agent Pod may reach nothing but the gateway, and it is hostile: the body is bounded
  (``max_trace_bytes``), spans outside its build's trace are dropped, and the resource says who sent them
  (``service.name`` ``longshot-agent`` and the attempt's Pod, task and build, from its verified identity).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from aiohttp import web

from longshot import tracing
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings
from longshot.net import ingress

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"


def attempt_of(caller: Caller) -> tracing.Parent:
    """The caller's attempt span (the parent its Pod's ``TRACEPARENT`` named)."""
    return tracing.attempt_span(str((caller.build_obj.get("metadata") or {}).get("uid") or ""),
                                str((caller.task_obj.get("metadata") or {}).get("uid") or ""), caller.attempt)


def request_span(route: str, caller: Caller, headers: Mapping[str, str], start: datetime, end: datetime,
                 result: str, status: int, path: str) -> tracing.SpanRecord:
    """The span of one request of ``caller``."""
    attempt = attempt_of(caller)
    given = tracing.parse_traceparent(headers.get("traceparent"))
    parent = given if given is not None and given.trace_id == attempt.trace_id else attempt
    span = tracing.Parent(attempt.trace_id, secrets.randbits(64) or 1)
    return tracing.record(f"gateway {route}", span, parent, start, end, {
        "longshot.namespace": caller.namespace, "longshot.build": caller.build, "longshot.task": caller.task,
        "longshot.attempt": caller.attempt, "longshot.pod": caller.pod, "longshot.route": route,
        "longshot.result": result, "http.response.status_code": status, "url.path": path[:256],
    }, error=f"HTTP {status}" if status >= 400 else None)


def keep_own(raw: bytes, caller: Caller) -> tuple[bytes, int, int]:
    """(the request with only the spans of ``caller``'s trace and its identity on every resource, spans kept,
    spans dropped). Raises ValueError on a body that is not an OTLP trace export request."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        raise ValueError("the body is not an OTLP ExportTraceServiceRequest (protobuf)") from None
    trace_id = attempt_of(caller).trace_id.to_bytes(16, "big")
    kept = dropped = 0
    identity = {"service.name": tracing.AGENT, "longshot.namespace": caller.namespace, "longshot.build": caller.build,
                "longshot.task": caller.task, "longshot.pod": caller.pod}
    for rs in request.resource_spans:
        attrs = [a for a in rs.resource.attributes if a.key not in identity]
        del rs.resource.attributes[:]
        rs.resource.attributes.extend(attrs)
        rs.resource.attributes.extend(common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                                      for k, v in identity.items())
        for ss in rs.scope_spans:
            own = [s for s in ss.spans if s.trace_id == trace_id]
            dropped += len(ss.spans) - len(own)
            kept += len(own)
            del ss.spans[:]
            ss.spans.extend(own)
    return request.SerializeToString(), kept, dropped


class Relay:
    """``POST /traces``: an agent's spans to the collector."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.url = tracing.traces_url(settings.tracing_endpoint)
        self.max_bytes = settings.max_trace_bytes
        # the collector is the operator's own configuration, not a build's: no egress policy of builds applies
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False, follow_redirects=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def relay(self, caller: Caller, call: ingress.Call) -> tuple[web.StreamResponse, str]:
        """``call``'s body (at most ``max_trace_bytes``: the ingress route's limit) to the collector."""
        raw = bytes(await call.body())
        try:
            body, kept, dropped = await asyncio.to_thread(keep_own, raw, caller)
        except ValueError as e:
            return _error(400, str(e)), "bad_request"
        if dropped:
            log.warning("dropped %d span(s) of %s/%s outside its build's trace", dropped, caller.namespace, caller.pod)
        if kept:
            try:
                answer = await self.client.post(self.url, content=body, headers={"Content-Type": PROTOBUF})
            except httpx.HTTPError as e:
                return _error(502, f"the trace collector cannot be reached: {type(e).__name__}"), "upstream_error"
            if answer.status_code >= 300:
                return _error(502, f"the trace collector answered {answer.status_code}"), "upstream_error"
        return web.Response(status=200, body=b"", content_type=PROTOBUF), "ok"


def _error(status: int, message: str) -> web.Response:
    body: dict[str, Any] = {"error": f"longshot-gateway: {message}"}
    return web.json_response(body, status=status)
