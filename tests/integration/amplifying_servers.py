"""Hostile servers for the parse-budget tests (issue 50, item 2): a tenant's tracker and forge that answer with the
largest bodies the operator reads, shaped to cost the most once parsed, and a trace collector that counts what the
gateway relays. Also used by ``hack/hostile_trackers.py``.

Shapes (each at most ``runtime.trackers.MAX_RESPONSE_BYTES``, valid JSON):

* ``arrays``: ``[[],[],...]``, 2.8 million empty lists (226 MiB as Python objects, 27 times the body);
* ``deep``: ``[[[...]]]``, 4 million levels (``json.loads`` raises RecursionError);
* ``objects``: ``[{"a":{}},...]``, a million small objects (two dicts each).
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from forge_server import ForgeServer

from longshot.runtime import trackers

SHAPES = ("arrays", "deep", "objects")


@functools.cache
def amplifying(shape: str, size: int = trackers.MAX_RESPONSE_BYTES) -> bytes:
    """A JSON text of at most ``size`` bytes in ``shape`` (see the module's docstring)."""
    if shape == "arrays":
        return b"[" + b"[]," * ((size - 4) // 3) + b"[]]"
    if shape == "deep":
        return b"[" * (size // 2) + b"]" * (size // 2)
    if shape == "objects":
        unit = b'{"a":{}},'
        return b"[" + unit * ((size - 12) // len(unit)) + b'{"a":{}}]'
    raise ValueError(shape)


def _handler(answer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            answer(self, "GET")

        def do_POST(self) -> None:
            answer(self, "POST")

        def do_PATCH(self) -> None:
            answer(self, "PATCH")

    return Handler


def _write(h: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class AmplifyingTracker:
    """GitHub's issue API whose every listing of ``org/<shape>`` is the amplifying body of that shape."""

    def __init__(self) -> None:
        self.listings = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self._answer))
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def github_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/github"

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        if length:
            h.rfile.read(length)
        match = re.fullmatch(r"/github/repos/org/([a-z]+)/issues", urllib.parse.urlsplit(h.path).path)
        if method != "GET" or match is None or match.group(1) not in SHAPES:
            _write(h, 201 if method == "POST" else 404, b"{}")
            return
        with self._lock:
            self.listings += 1
        _write(h, 200, amplifying(match.group(1)))

    def __enter__(self) -> AmplifyingTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


class AmplifyingForge(ForgeServer):
    """The local forge (forge_server.py) whose pull-request listings are the amplifying body of ``shape``."""

    def __init__(self, token: str, shape: str = "arrays") -> None:
        super().__init__(token)
        self.shape = shape
        self.amplified = 0

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urllib.parse.urlsplit(h.path).path
        if method == "GET" and path.endswith("/pulls"):
            with self.lock:
                self.amplified += 1
            _write(h, 200, amplifying(self.shape))
            return
        super()._serve(h, method)


@contextmanager
def amplifying_forge(token: str, shape: str = "arrays") -> Iterator[AmplifyingForge]:
    server = AmplifyingForge(token, shape)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class CountingCollector:
    """An OTLP/HTTP trace endpoint that records the size of every body it receives (and answers 200)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                collector.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> CountingCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def peak_mib_since(mark: int) -> float:
    """MiB this process's peak RSS (VmHWM) rose above ``mark`` (KiB, from :func:`reset_peak`)."""
    return (_status("VmHWM") - mark) / 1024


def reset_peak() -> int:
    """Reset this process's peak RSS to its current RSS (``/proc/self/clear_refs``); the current RSS in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    assert match is not None, field
    return int(match.group(1))
