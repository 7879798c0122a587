"""Trace collectors for the tests: Jaeger when it can be built here, else a small OTLP/HTTP receiver.

:func:`collector` starts the best one available and yields a :class:`Collector`: ``endpoint`` (the OTLP/HTTP base
URL to configure, ``http://127.0.0.1:<port>``) and ``spans(trace_id)``: every span it holds of that trace as
:class:`Span` (name, service, span and parent IDs, attributes).

* **Jaeger** (``hack/go-tools.sh jaeger``: ``github.com/jaegertracing/jaeger/cmd/jaeger`` at a pinned version,
  built from the Go module proxy), all-in-one with in-memory storage, on free loopback ports; spans are read back
  through its query API (``/api/v3/traces/<id>``, OTLP JSON).
* **The receiver** (:class:`Receiver`): an aiohttp-free ``http.server`` that takes ``POST /v1/traces`` and
  decodes the body with the official OTLP protobuf classes (``opentelemetry-proto``), the decoder every Python
  collector client uses. It is the fallback when Go or the module proxy is not there.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]  # the checkout: operator/longshot_testing/otlp.py


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    resource: dict[str, Any] = field(default_factory=dict)


class Collector(Protocol):
    endpoint: str
    kind: str

    def spans(self, trace_id: str) -> list[Span]: ...


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _value(v: Any) -> Any:
    """An OTLP AnyValue (protobuf message or OTLP JSON dict) as a Python value."""
    if isinstance(v, dict):
        for k in ("stringValue", "boolValue", "doubleValue"):
            if k in v:
                return v[k]
        if "intValue" in v:
            return int(v["intValue"])
        return None
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


# --- the OTLP/HTTP receiver (fallback) ----------------------------------------------------------------------

class Receiver:
    """``POST /v1/traces`` (protobuf), decoded with ``opentelemetry-proto``; kept in memory."""

    kind = "otlp-receiver"

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.why = ""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.endpoint = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    def take(self, request: Any) -> None:
        got = []
        for rs in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(Span(s.name, service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                    {a.key: _value(a.value) for a in s.attributes}, s.start_time_unix_nano,
                                    s.end_time_unix_nano, attrs))
        with self._lock:
            self.requests += 1
            self._spans.extend(got)

    def spans(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Jaeger ---------------------------------------------------------------------------------------------------

JAEGER_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: {host}:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary(build: bool = True) -> tuple[Path | None, str]:
    """(the pinned Jaeger binary, "") or (None, why not). ``build``: build it when it is not cached."""
    script = ROOT / "hack" / "go-tools.sh"
    if not script.exists():
        return None, "hack/go-tools.sh is not there (not a checkout)"
    if shutil.which("go") is None:
        return None, "no Go toolchain to build Jaeger"
    cached = subprocess.run(["bash", str(script), "--check", "jaeger"], capture_output=True, text=True,
                            check=False, timeout=60)
    if cached.returncode == 0:  # no lock taken: the cache path is the binary
        return Path(os.environ.get("LONGSHOT_TOOLS") or Path.home() / ".cache" / "longshot" / "tools") / "bin" / \
            "jaeger", ""
    if not build:
        return None, ("the pinned Jaeger is not built (hack/go-tools.sh jaeger builds it, 10+ minutes of CPU; or "
                      "set LONGSHOT_TRACING_BUILD_JAEGER=1)")
    done = subprocess.run(["bash", str(script), "jaeger"], capture_output=True, text=True, check=False,
                          timeout=3600)
    if done.returncode != 0:
        return None, f"hack/go-tools.sh jaeger failed: {done.stderr.strip()[-1500:]}"
    path = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    return (path, "") if path is not None and path.exists() else (None, "hack/go-tools.sh printed no binary")


class Jaeger:
    kind = "jaeger"

    def __init__(self, binary: Path, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.host = host
        self.otlp, self.query = _free_port(host), _free_port()
        self.endpoint = f"http://{host}:{self.otlp}"
        self._dir = tempfile.TemporaryDirectory(prefix="jaeger-")
        self.config = Path(self._dir.name) / "config.yaml"
        self.config.write_text(JAEGER_CONFIG.format(host=self.host, otlp=self.otlp, query=self.query,
                                                    query_grpc=_free_port()))
        self.log = Path(self._dir.name) / "jaeger.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Jaeger:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jaeger exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if self._up():
                return self
            time.sleep(0.1)  # polling the process's ports, not synchronising a test
        self.__exit__()
        raise RuntimeError(f"jaeger did not listen within 60 s: {self.log.read_text()[-3000:]}")

    def _up(self) -> bool:
        for host, port in ((self.host, self.otlp), ("127.0.0.1", self.query)):
            with socket.socket() as s, contextlib.suppress(OSError):
                s.settimeout(0.5)
                s.connect((host, port))
                continue
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()

    def spans(self, trace_id: str) -> list[Span]:
        """The trace through Jaeger's query API (api/v3: OTLP JSON, IDs in hex or base64)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.query}/api/v3/traces/{trace_id}", timeout=10) as r:
                data = json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        out = []
        for rs in (data.get("result") or {}).get("resourceSpans") or []:
            attrs = {a["key"]: _value(a.get("value") or {}) for a in (rs.get("resource") or {}).get("attributes", [])}
            for ss in rs.get("scopeSpans") or []:
                for s in ss.get("spans") or []:
                    out.append(Span(s["name"], str(attrs.get("service.name", "")), _hex(s.get("traceId", "")),
                                    _hex(s.get("spanId", "")), _hex(s.get("parentSpanId", "")),
                                    {a["key"]: _value(a.get("value") or {}) for a in s.get("attributes") or []},
                                    int(s.get("startTimeUnixNano") or 0), int(s.get("endTimeUnixNano") or 0),
                                    attrs))
        return out


def _hex(value: str) -> str:
    """An OTLP JSON ID: hex as the spec says, or base64 as protobuf's JSON mapping writes bytes."""
    if not value:
        return ""
    if all(c in "0123456789abcdef" for c in value.lower()) and len(value) in (16, 32):
        return value.lower()
    return base64.b64decode(value).hex()


class CollectorUnavailable(RuntimeError):
    """A real collector was required and cannot be had here; the message says why and what to do."""


@contextlib.contextmanager
def collector(host: str = "127.0.0.1", *, require_jaeger: bool = False) -> Iterator[Collector]:
    """Jaeger when its pinned build is cached (``hack/go-tools.sh jaeger`` builds it; with
    ``LONGSHOT_TRACING_BUILD_JAEGER=1`` this builds it when missing), else the OTLP/HTTP receiver;
    ``LONGSHOT_TRACING_COLLECTOR=receiver`` forces the receiver. ``.kind`` says which one; the receiver's ``.why``
    says why it is not Jaeger. ``host``: the address its OTLP receiver listens on (the local cluster's bridge, for
    Pods to reach it).

    ``require_jaeger`` (the e2e tier, whose ``make e2e`` builds Jaeger first: ``make collector``): Jaeger is built
    when missing, and when it cannot be had this raises :class:`CollectorUnavailable` instead of falling back; only
    an explicit ``LONGSHOT_TRACING_COLLECTOR=receiver`` still picks the receiver."""
    why = "LONGSHOT_TRACING_COLLECTOR=receiver"
    if os.environ.get("LONGSHOT_TRACING_COLLECTOR", "jaeger") != "receiver":
        build = require_jaeger or os.environ.get("LONGSHOT_TRACING_BUILD_JAEGER") == "1"
        binary, why = jaeger_binary(build=build)
        if binary is not None:
            with Jaeger(binary, host) as j:
                yield j
            return
        if require_jaeger:
            raise CollectorUnavailable(f"a real trace collector is required and Jaeger cannot be had: {why} (make "
                                       "collector builds it; LONGSHOT_TRACING_COLLECTOR=receiver runs the test "
                                       "against the OTLP/HTTP receiver instead)")
    with Receiver(host) as r:
        r.why = why
        yield r
