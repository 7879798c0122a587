"""Tracing in longshot-gateway (only when it has a ``tracing_endpoint``; docs/tracing.md).

* A span per git and model request of an attempt (``gateway git``, ``gateway model``, ``gateway progress``), in
  the trace of the caller's build. The trace is the one the caller's identity names (its BuildRequest's UID, as the
  API server knows it), never one the agent chose: the agent's ``traceparent`` only picks the parent span (its
  model call) when it is in that trace; otherwise the parent is the attempt's span.
* ``POST /traces``: an agent's spans (OTLP/HTTP protobuf, as the SDK's exporter sends them), relayed to the
  collector. The agent Pod may reach nothing but the gateway, and it is hostile: the body is bounded
  (``max_trace_bytes``), walked at the protobuf wire level under counts of resources, scopes, spans and fields
  (never built as a tree of messages), spans outside its build's trace are dropped (and the resources and scopes
  left empty), and the resource says who sent them (``service.name`` ``longshot-agent`` and the attempt's Pod,
  task and build, from its verified identity).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator, Mapping
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


MAX_RESOURCE_SPANS = 64
"""Most ``ResourceSpans`` in one batch (an SDK sends one per process); a batch with more is refused (413)."""
MAX_SCOPE_SPANS = 1024
"""Most ``ScopeSpans`` in one batch, across its ResourceSpans."""
MAX_SPANS = 8192
"""Most spans in one batch (the SDK's batch processor sends at most 512)."""
MAX_FIELDS = 131_072
"""Most protobuf fields the walk reads in one batch (512 spans of 30 attributes are about 25,000; the walk of the
most takes about 0.2 s of CPU)."""


class TooMuch(ValueError):
    """The batch is over one of the counts above (the message names it)."""


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise ValueError("the body is not an OTLP ExportTraceServiceRequest (a truncated varint)")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


class _Walk:
    """The fields of protobuf messages in ``buf``, read without building them (so the cost is a count of fields
    with a budget, not a tree of objects: upb's parse of 1 MiB of empty spans takes 88 MiB)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.fields = 0

    def fields_of(self, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
        """(field number, wire type, where the field starts, where its value starts, where it ends) of the message
        ``buf[start:end]``; ValueError for bytes that are not a message, :class:`TooMuch` past :data:`MAX_FIELDS`."""
        buf, i = self.buf, start
        while i < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise TooMuch(f"a batch of spans has at most {MAX_FIELDS} protobuf fields")
            first = i
            key, i = _varint(buf, i, end)
            number, wire = key >> 3, key & 7
            value = i
            if wire == 0:
                _, i = _varint(buf, i, end)
            elif wire == 1:
                i += 8
            elif wire == 2:
                size, value = _varint(buf, i, end)
                i = value + size
            elif wire == 5:
                i += 4
            else:
                raise ValueError("the body is not an OTLP ExportTraceServiceRequest (a group or an unknown wire type)")
            if number == 0 or i > end:
                raise ValueError("the body is not an OTLP ExportTraceServiceRequest (a field runs past its message)")
            yield number, wire, first, value, i


def _field(number: int, payload: bytes | bytearray) -> bytes:
    """A length-delimited field: its key, its length and ``payload``."""
    size = len(payload)
    head = bytearray([number << 3 | 2])
    while size >= 0x80:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + payload


def _identity_attributes(identity: Mapping[str, str]) -> bytes:
    """The resource attributes that say who sent the spans (KeyValue with a string AnyValue), encoded."""
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, _field(1, v.encode())))
                    for k, v in identity.items())


def keep_own(raw: bytes, caller: Caller) -> tuple[bytes, int, int]:
    """(the request with only the spans of ``caller``'s trace and its identity on every resource, spans kept,
    spans dropped). Raises ValueError on a body that is not an OTLP trace export request, :class:`TooMuch` on one
    over a count (:data:`MAX_RESOURCE_SPANS`, :data:`MAX_SCOPE_SPANS`, :data:`MAX_SPANS`, :data:`MAX_FIELDS`).

    The body is walked at the protobuf wire level: spans are copied as they came, or left out; the fields of a
    span other than its trace id are not read. ScopeSpans and ResourceSpans left without spans are left out, so
    an empty batch relays nothing, and the relayed body is at most the received one plus the identity attributes
    of at most :data:`MAX_RESOURCE_SPANS` resources."""
    trace_id = attempt_of(caller).trace_id.to_bytes(16, "big")
    identity = {"service.name": tracing.AGENT, "longshot.namespace": caller.namespace, "longshot.build": caller.build,
                "longshot.task": caller.task, "longshot.pod": caller.pod}
    stamped = _identity_attributes(identity)
    names = {k.encode() for k in identity}
    walk = _Walk(raw)
    out = bytearray()
    counts = {"resource": 0, "scope": 0, "span": 0}
    kept = dropped = 0

    def count(what: str, limit: int, name: str) -> None:
        counts[what] += 1
        if counts[what] > limit:
            raise TooMuch(f"a batch of spans has at most {limit} {name}")

    def expect(wire: int) -> None:
        if wire != 2:
            raise ValueError("the body is not an OTLP ExportTraceServiceRequest (a field of the wrong type)")

    for number, wire, _, rs_start, rs_end in walk.fields_of(0, len(raw)):
        if number != 1:
            continue  # ExportTraceServiceRequest has no other field
        expect(wire)
        count("resource", MAX_RESOURCE_SPANS, "ResourceSpans")
        resource = bytearray()
        rest = bytearray()
        scopes = bytearray()
        for rnum, rwire, rfirst, rvalue, rend in walk.fields_of(rs_start, rs_end):
            if rnum == 1:  # the Resource (occurrences of a message field merge: each one's fields are kept)
                expect(rwire)
                for anum, awire, afirst, avalue, aend in walk.fields_of(rvalue, rend):
                    if anum == 1:  # an attribute: left out when its key is one the gateway sets
                        expect(awire)
                        key = b""
                        for knum, kwire, _, kvalue, kend in walk.fields_of(avalue, aend):
                            if knum == 1:
                                expect(kwire)
                                key = raw[kvalue:kend]
                        if key in names:
                            continue
                    resource += raw[afirst:aend]
            elif rnum == 2:  # ScopeSpans
                expect(rwire)
                count("scope", MAX_SCOPE_SPANS, "ScopeSpans")
                spans = bytearray()
                other = bytearray()
                for snum, swire, sfirst, svalue, send in walk.fields_of(rvalue, rend):
                    if snum != 2:
                        other += raw[sfirst:send]
                        continue
                    expect(swire)
                    count("span", MAX_SPANS, "spans")
                    span_trace = b""
                    for fnum, fwire, _, fvalue, fend in walk.fields_of(svalue, send):
                        if fnum == 1:  # the last occurrence wins, as in every protobuf parser
                            expect(fwire)
                            span_trace = raw[fvalue:fend]
                    if span_trace == trace_id:
                        kept += 1
                        spans += raw[sfirst:send]
                    else:
                        dropped += 1
                if spans:
                    scopes += _field(2, other + spans)
            else:
                rest += raw[rfirst:rend]
        if scopes:
            out += _field(1, _field(1, resource + stamped) + scopes + rest)
    return bytes(out), kept, dropped


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
        except TooMuch as e:
            return _error(413, f"{e}; send smaller batches"), "too_large"
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
