"""OpenTelemetry traces: one trace per build, across the operator, longshot-gateway and the agent Pods.

Off by default, and free when off: nothing here imports the OpenTelemetry SDK until :func:`setup` is called with an
endpoint, and until then :func:`span` returns one shared no-op context manager and :func:`emit` returns at once.

**Identifiers are derived, not stored.** The operator is level-triggered and restarts at any moment, so a build's
trace ID is the first 16 bytes of ``sha256(build UID)`` (:func:`build_trace_id`, recorded on ``status.traceId``)
and the span IDs of the things it traces come from stable keys (:func:`span_id`): the build's root span from its
UID, an attempt's span from its task's UID and the attempt number. A replica that restarts continues the same
trace, and an agent Pod (``TRACEPARENT`` in its manifest: the attempt's span) joins it before the attempt's span
itself is exported. Long things (an attempt, a build) are emitted once, at their end, with the start and end times
their status recorded (:class:`SpanRecord`, :func:`emit`); work done within one reconcile (a merge queue's batch
and landing) is a live span (:func:`span`).

Export is OTLP over HTTP (protobuf) to ``<endpoint>/v1/traces``: the operator and the gateway export to the
collector; agent Pods, which may reach only the gateway, export to the gateway's ``/traces``, which keeps the spans
of the caller's own trace and forwards them (``gateway.server``). docs/tracing.md lists every span.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

log = logging.getLogger("longshot.tracing")

OPERATOR: Final = "longshot-operator"
GATEWAY: Final = "longshot-gateway"
AGENT: Final = "longshot-agent"
"""Service names (the ``service.name`` resource attribute) of the three components."""

TRACEPARENT_ENV: Final = "TRACEPARENT"
"""The agent Pod's parent: its attempt's span (W3C trace context, as ``traceparent``)."""
ENDPOINT_ENV: Final = "LONGSHOT_TRACING_ENDPOINT"
"""The OTLP/HTTP base URL (``http://collector:4318``); unset or empty: tracing is off."""
TRACES_PATH: Final = "/v1/traces"
MAX_ATTRIBUTE_CHARS: Final = 1024
"""Longer string attributes are cut (an exit reason comes from a hostile agent)."""

AttrValue = str | int | float | bool
_TRACEPARENT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


# --- identifiers (pure) ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parent:
    """A span to hang children on, by its IDs (it may not have been exported yet)."""

    trace_id: int
    span_id: int

    def traceparent(self) -> str:
        """The W3C ``traceparent`` of this span (sampled)."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"


def _digest(*key: object) -> bytes:
    return hashlib.sha256("\x00".join(str(k) for k in key).encode()).digest()


def build_trace_id(uid: str) -> int:
    """The trace ID of the build with this UID: the first 16 bytes of ``sha256(uid)`` (never zero)."""
    return int.from_bytes(_digest(uid)[:16], "big") or 1


def trace_id_hex(uid: str) -> str:
    """:func:`build_trace_id` as the 32 hex digits of ``status.traceId`` and of tracing UIs."""
    return f"{build_trace_id(uid):032x}"


def span_id(*key: object) -> int:
    """A span ID from a stable key (never zero): the same key, the same span, on any replica."""
    return int.from_bytes(_digest("span", *key)[:8], "big") or 1


def build_span(build_uid: str) -> Parent:
    """The build's root span."""
    return Parent(build_trace_id(build_uid), span_id(build_uid, "build"))


def attempt_span(build_uid: str, task_uid: str, attempt: int) -> Parent:
    """The span of ``attempt`` of the task with ``task_uid``: the parent of everything its agent Pod does."""
    return Parent(build_trace_id(build_uid), span_id(task_uid, "attempt", attempt))


def traceparent(build_uid: str, task_uid: str, attempt: int) -> str:
    """The ``TRACEPARENT`` of an attempt's Pod."""
    return attempt_span(build_uid, task_uid, attempt).traceparent()


def parse_traceparent(value: str | None) -> Parent | None:
    """The span a ``traceparent`` header names, or None when it is absent or malformed (it comes from an agent:
    bounded, exact format, no zero IDs)."""
    if not value or len(value) > 64:
        return None
    m = _TRACEPARENT.fullmatch(value.strip().lower())
    if m is None:
        return None
    trace, span = int(m.group(1), 16), int(m.group(2), 16)
    return Parent(trace, span) if trace and span else None


def clean(attributes: Mapping[str, Any] | None) -> dict[str, AttrValue]:
    """Attributes OpenTelemetry takes: None dropped, strings cut to :data:`MAX_ATTRIBUTE_CHARS`, others as text."""
    out: dict[str, AttrValue] = {}
    for k, v in (attributes or {}).items():
        if v is None:
            continue
        if isinstance(v, bool | int | float):
            out[k] = v
        else:
            s = str(v)
            out[k] = s if len(s) <= MAX_ATTRIBUTE_CHARS else s[:MAX_ATTRIBUTE_CHARS - 5] + "[...]"
    return out


@dataclass(frozen=True)
class SpanRecord:
    """A finished span with its own IDs and times, emitted after the fact (:func:`emit`)."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    """None: the trace's root."""
    start: datetime
    end: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Set: the span's status is ERROR with this description."""


def record(name: str, span: Parent, parent: Parent | None, start: datetime, end: datetime,
           attributes: Mapping[str, Any] | None = None, error: str | None = None) -> SpanRecord:
    """A :class:`SpanRecord` of ``span`` (child of ``parent``); an end before its start is moved to the start."""
    return SpanRecord(name, span.trace_id, span.span_id, parent.span_id if parent is not None else None,
                      start, max(start, end), clean(attributes), error)


# --- the SDK, only when enabled -----------------------------------------------------------------------------

_providers: dict[str, Any] = {}
"""Service name -> its TracerProvider (one per component; the integration tier runs the operator and the gateway
in one process)."""
_forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("longshot_span_ids", default=None)


class _Noop:
    """What :func:`span` yields when tracing is off: takes attributes, keeps nothing."""

    def set(self, key: str, value: Any) -> None:
        return None

    def error(self, description: str) -> None:
        return None


class _Live:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: Any) -> None:
        for k, v in clean({key: value}).items():
            self._span.set_attribute(k, v)

    def error(self, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, description[:MAX_ATTRIBUTE_CHARS]))


NOOP: Final = _Noop()
_OFF: Final = contextlib.nullcontext(NOOP)


def enabled(service: str = OPERATOR) -> bool:
    return service in _providers


def traces_url(endpoint: str) -> str:
    """``<endpoint>/v1/traces`` (an endpoint that ends in it already is taken as it is)."""
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def setup(service: str, endpoint: str, *, headers: Mapping[str, str] | None = None,
          url: str | None = None, exporter: Any = None) -> bool:
    """Export ``service``'s spans to ``endpoint`` (OTLP/HTTP); ``url``: the exact URL to post to instead;
    ``exporter``: an SDK span exporter to hand each span to as it ends (tests). None of them: nothing is set up
    (tracing stays off). Returns whether tracing is on."""
    if service in _providers:
        return True
    if not (endpoint or url or exporter is not None):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class Ids(RandomIdGenerator):
        """Random IDs, but the ones :func:`emit` asks for."""

        def generate_span_id(self) -> int:
            forced = _forced.get()
            return forced[1] if forced is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _forced.get()
            return forced[0] if forced is not None else super().generate_trace_id()

    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=Ids())
    if exporter is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        otlp = OTLPSpanExporter(endpoint=url or traces_url(endpoint), headers=dict(headers or {}), timeout=10)
        provider.add_span_processor(BatchSpanProcessor(otlp, schedule_delay_millis=1000))
        log.info("tracing: %s exports spans to %s", service, url or traces_url(endpoint))
    _providers[service] = provider
    return True


def setup_from_env(service: str, env: Mapping[str, str]) -> bool:
    return setup(service, env.get(ENDPOINT_ENV, ""))


def flush(service: str | None = None, timeout_millis: int = 10_000) -> None:
    for name, provider in list(_providers.items()):
        if service in (None, name):
            provider.force_flush(timeout_millis)


def shutdown(service: str | None = None) -> None:
    """Flush and stop ``service``'s exporter (every one when None)."""
    for name in [n for n in _providers if service in (None, n)]:
        provider = _providers.pop(name)
        try:
            provider.shutdown()
        except Exception as e:  # never fail a component on its telemetry
            log.warning("tracing: %s did not shut down cleanly: %s", name, e)


def _context(parent: Parent) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
        parent.trace_id, parent.span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))))


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


def emit(rec: SpanRecord, service: str = OPERATOR) -> None:
    """Export a finished span with its own IDs and times (nothing when ``service`` traces nothing)."""
    provider = _providers.get(service)
    if provider is None:
        return
    from opentelemetry import context as otel_context
    from opentelemetry.trace import Status, StatusCode

    tracer = provider.get_tracer("longshot")
    parent = (_context(Parent(rec.trace_id, rec.parent_id)) if rec.parent_id is not None
              else otel_context.Context())
    token = _forced.set((rec.trace_id, rec.span_id))
    try:
        span = tracer.start_span(rec.name, context=parent, start_time=_ns(rec.start), attributes=clean(rec.attributes))
    finally:
        _forced.reset(token)
    if rec.error:
        span.set_status(Status(StatusCode.ERROR, rec.error[:MAX_ATTRIBUTE_CHARS]))
    span.end(end_time=_ns(rec.end))


def span(name: str, attributes: Mapping[str, Any] | None = None, *, parent: Parent | None = None,
         service: str = OPERATOR) -> contextlib.AbstractContextManager[_Noop | _Live]:
    """A live span around a block: a child of ``parent`` when given, else of the current span. Yields an object
    whose ``set(key, value)`` adds an attribute and ``error(text)`` marks the span failed. When ``service``
    traces nothing this is one shared no-op context manager (no allocation, no SDK)."""
    if service not in _providers:
        return _OFF
    return _live(name, attributes, parent, service)


@contextlib.contextmanager
def _live(name: str, attributes: Mapping[str, Any] | None, parent: Parent | None,
          service: str) -> Iterator[_Noop | _Live]:
    tracer = _providers[service].get_tracer("longshot")
    ctx = _context(parent) if parent is not None else None
    with tracer.start_as_current_span(name, context=ctx, attributes=clean(attributes)) as s:
        yield _Live(s)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current live span (for an outgoing request), or None outside one."""
    if not _providers:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return Parent(ctx.trace_id, ctx.span_id).traceparent()


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current span's ``traceparent`` added (unchanged when there is none)."""
    tp = current_traceparent()
    if tp is not None:
        headers["traceparent"] = tp
    return headers


# --- the operator's spans, from status -----------------------------------------------------------------------

ATTEMPT_NAMES: Final = {"gate": "gate", "sweep": "sweep", "final": "sweep", "review": "review"}
"""Span name of an attempt by the task's purpose (``longshot.dev/purpose``); a planner's is ``planning``, any
other ``attempt``."""


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def attempt_record(*, build_uid: str, build: str, namespace: str, task_uid: str, task: str, role: str,
                   purpose: str | None, attempt: Mapping[str, Any]) -> SpanRecord | None:
    """The span of an ended attempt from its status record (``status.attempts[]`` in wire form: ``number``,
    ``pod``, ``startTime``, ``endTime``, ``exitCode``, ``exitReason``, ``failureClass``, ``tokens``, ``cost``): a
    child of the build's root span, with the IDs its Pod's ``TRACEPARENT`` named. None without an end time."""
    end = _time(attempt.get("endTime"))
    number = attempt.get("number")
    if end is None or not isinstance(number, int) or not build_uid or not task_uid:
        return None
    start = _time(attempt.get("startTime")) or end
    name = ATTEMPT_NAMES.get(purpose or "") or ("planning" if role == "planner" else "attempt")
    failure = attempt.get("failureClass")
    return record(name, attempt_span(build_uid, task_uid, number), build_span(build_uid), start, end, {
        "longshot.namespace": namespace, "longshot.build": build, "longshot.task": task, "longshot.role": role,
        "longshot.purpose": purpose, "longshot.attempt": number, "longshot.pod": attempt.get("pod"),
        "longshot.exit_code": attempt.get("exitCode"), "longshot.exit_reason": attempt.get("exitReason"),
        "longshot.failure_class": failure, "longshot.tokens": attempt.get("tokens"),
        "longshot.cost": attempt.get("cost"),
    }, error=str(failure) if failure else None)


def build_records(*, build_uid: str, build: str, namespace: str, created: datetime | None, now: datetime,
                  before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                  finalization_attempts: int, usage: Mapping[str, Any] | None = None) -> tuple[SpanRecord, ...]:
    """The spans a build's status write ends: when its ``Finalized`` condition turns from neither True nor False
    (``before``) to True or False (``after``), the last finalization round (from when ``Finalized`` became
    ``Unknown/InProgress``) and the build's root span (from its creation). Nothing otherwise."""
    done = ("True", "False")
    if not build_uid or after is None or after.get("status") not in done or \
            (before is not None and before.get("status") in done):
        return ()
    root = build_span(build_uid)
    outcome = str(after.get("reason") or "")
    failed = None if after.get("status") == "True" else outcome or "Failed"
    attrs = {"longshot.namespace": namespace, "longshot.build": build, "longshot.outcome": outcome,
             "longshot.finalization_attempts": finalization_attempts}
    out = []
    started = _time((before or {}).get("lastTransitionTime")) if (before or {}).get("status") == "Unknown" else None
    if started is not None and finalization_attempts:
        out.append(record("finalization", Parent(root.trace_id, span_id(build_uid, "finalization",
                                                                          finalization_attempts)),
                          root, started, now, attrs, error=failed))
    usage = usage or {}
    out.append(record("build", root, None, created or now, now,
                      {**attrs, "longshot.tokens": usage.get("tokens"), "longshot.cost": usage.get("cost")},
                      error=failed))
    return tuple(out)
