"""Progress on stdout: one JSON object per line, every string redacted.

Event types: ``heartbeat``, ``tool_call``, ``tokens``, ``log`` and, last, ``handoff``. Each (redacted)
record is also offered to an optional ``sink`` (the gateway's progress channel); a sink never blocks the
runner and its failures are ignored.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from longshot.agent import redact


class Events:
    """Writes structured progress lines; thread-safe (the heartbeat runs in a thread)."""

    def __init__(
        self,
        redactor: redact.Redactor,
        *,
        stream: TextIO | None = None,
        context: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.redactor = redactor
        self.sink = sink
        self._stream = stream
        self._context = dict(context or {})
        self._clock = clock
        self._lock = threading.Lock()

    def set_context(self, **fields: Any) -> None:
        self._context.update(fields)

    def emit(self, type_: str, **fields: Any) -> None:
        record = {"type": type_, "ts": round(self._clock(), 3), **self._context, **fields}
        redacted = self.redactor.value(record)
        line = json.dumps(redacted, default=str, ensure_ascii=False)
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
        if self.sink is not None:
            with contextlib.suppress(Exception):  # progress is best effort: never fail the attempt on it
                self.sink(redacted)

    def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        self.emit("log", level=level, message=message, **fields)


class Heartbeat:
    """Emits a ``heartbeat`` event every ``interval`` seconds until stopped."""

    def __init__(self, events: Events, interval: float) -> None:
        self._events = events
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="longshot-heartbeat", daemon=True)
        self._beats = 0

    def __enter__(self) -> Heartbeat:
        if self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beats += 1
            self._events.emit("heartbeat", beat=self._beats)
