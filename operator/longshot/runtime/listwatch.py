"""List, then watch: the one loop behind every long-lived watch Longshot keeps outside kopf (the gateway's watch
cache, the console's live view).

Each (kind, namespace) gets a thread that lists (paginated, :data:`PAGE` objects a page), hands the items to
``on_list``, then watches from the list's ``resourceVersion`` with bookmarks and hands each event to ``on_event``.
The API server ends a watch after ``watch_seconds``; the thread resumes from the last resourceVersion it saw. An
expired version (an ``ERROR`` event, 410) and any other error both call ``on_unsync`` (what was held may be stale);
the first lists again at once, the second after ``retry_seconds``. A 401 or 403 (no list or watch right) is logged
once and tried again every ``refused_retry_seconds``.

The API calls are made by the caller's ``call(kind, namespace, **kwargs)``, which returns the raw response
(``_preload_content=False``): the loop reads and parses each page and each event line itself, so no model objects
are built. :meth:`ListWatch.stop` shuts down every open watch socket (a thread blocked reading one wakes at once;
closing the response instead would wait for the read to return) and joins the threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

PAGE: Final = 500
"""Objects per list page."""

Call = Callable[..., Any]
"""``call(kind, namespace or "" for every namespace, **list_kwargs)``: the raw list or watch response."""
OnList = Callable[[str, str, list[dict[str, Any]]], object]
"""``(kind, namespace or "", items)``: a whole list; what was held for that namespace is replaced."""
OnEvent = Callable[[str, str, dict[str, Any]], object]
"""``(kind, ADDED | MODIFIED | DELETED, object)``."""
OnUnsync = Callable[[str, str], object]
"""``(kind, namespace or "")``: the watch failed; what was held may be stale until the next list."""


class Expired(Exception):
    """The watch ended with an ERROR event (typically 410: its resourceVersion is too old): list again."""


class ListWatch:
    """One thread per kind and namespace, listing and watching (see the module's docstring)."""

    def __init__(self, call: Call, *, kinds: Sequence[str], on_list: OnList, on_event: OnEvent,
                 namespaces: Sequence[str] = (), on_unsync: OnUnsync | None = None, name: str = "watch",
                 watch_seconds: int = 120, retry_seconds: float = 2.0, refused_retry_seconds: float = 60.0,
                 refused_hint: str = "grant list and watch") -> None:
        self.call = call
        self.kinds = tuple(kinds)
        self.namespaces = tuple(namespaces) or ("",)
        self.on_list, self.on_event = on_list, on_event
        self.on_unsync: OnUnsync = on_unsync or (lambda kind, ns: None)
        self.name = name
        self.watch_seconds = watch_seconds
        self.retry_seconds, self.refused_retry_seconds = retry_seconds, refused_retry_seconds
        self.refused_hint = refused_hint
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: set[Any] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for kind in self.kinds:
            for ns in self.namespaces:
                t = threading.Thread(target=self._run, args=(kind, ns), daemon=True,
                                     name=f"{self.name}-{kind}-{ns or 'all'}")
                t.start()
                self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every watch: each stream's socket is shut down, then the threads are joined, ``timeout`` s in all
        at most."""
        self.stopping.set()
        with self._lock:
            for r in self._responses:
                sock = getattr(getattr(r, "connection", None) or getattr(r, "_connection", None), "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Whether ``cond()`` came true within ``timeout`` seconds (polled every 50 ms; False once stopping)."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline or self.stopping.is_set():
                return False
            self.stopping.wait(0.05)
        return True

    # --- the API calls ------------------------------------------------------------------------------------

    def list(self, kind: str, ns: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` in ``ns``, page by page, and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response = self.call(kind, ns, limit=PAGE, _continue=token, _preload_content=False,
                                 _request_timeout=(10, 60))
            page = json.loads(response.data)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def events(self, kind: str, ns: str, rv: str) -> Iterator[dict[str, Any]]:
        """One watch request's events from ``rv``, until the API server ends it."""
        response = self.call(kind, ns, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                             timeout_seconds=self.watch_seconds, _preload_content=False,
                             _request_timeout=(10, self.watch_seconds + 30))
        with self._lock:
            self._responses.add(response)
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if line.strip():
                    yield json.loads(line)
        finally:
            with self._lock:
                self._responses.discard(response)
            response.release_conn()

    # --- the loop -----------------------------------------------------------------------------------------

    def _run(self, kind: str, ns: str) -> None:
        refused = False
        where = ns or "every namespace"
        while not self.stopping.is_set():
            try:
                items, rv = self.list(kind, ns)
                self.on_list(kind, ns, items)
                refused = False
                while not self.stopping.is_set():
                    for event in self.events(kind, ns, rv):
                        obj = event.get("object") or {}
                        type_ = str(event.get("type"))
                        if type_ == "ERROR":
                            raise Expired(str(obj.get("message") or "the watch ended with an error"))
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if type_ != "BOOKMARK":
                            self.on_event(kind, type_, obj)
            except Expired as e:
                self.on_unsync(kind, ns)
                log.info("%s: the %s watch in %s expired (%s); listing again", self.name, kind, where, e)
            except Exception as e:  # the API server went away, a partition, 429, no right: list again later
                self.on_unsync(kind, ns)
                if self.stopping.is_set():
                    return
                status = getattr(e, "status", None)
                why = f"HTTP {status}" if status else f"{type(e).__name__}: {str(e)[:200]}"
                if status in (401, 403):  # no list/watch right: said once, tried again slowly
                    if not refused:
                        log.warning("%s may not list and watch %s in %s (%s): %s", self.name, kind, where, why,
                                    self.refused_hint)
                    refused = True
                    self.stopping.wait(self.refused_retry_seconds)
                    continue
                log.warning("%s: the %s watch in %s failed (%s); listing again in %.0f s", self.name, kind, where,
                            why, self.retry_seconds)
                self.stopping.wait(self.retry_seconds)
