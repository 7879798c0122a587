"""The console's one watch per kind (BuildRequest, AgentTask, MergeJob), with its own ServiceAccount (list and
watch of those three, nothing else), shared by every viewer: the API server sees three watches per console
process whatever the number of people looking.

Each kind has a thread: list (every namespace, or each of ``namespaces``), hand the items to ``on_list``, then
watch from the list's resourceVersion and hand each event to ``on_event``; a watch the API server ends is
resumed from the last resourceVersion, an expired one (410) and any error start again with a list, after a
short pause. The callbacks are called in the thread: the server passes them on to its event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import kubernetes

from longshot.api import common
from longshot.core import console as core

log = logging.getLogger(__name__)

OnList = Callable[[str, str, list[dict[str, Any]]], object]
"""(kind, namespace or "" for every namespace, items)"""
OnEvent = Callable[[str, str, dict[str, Any]], object]
WATCH_SECONDS = 240
"""One watch request's length (the API server ends it; the thread resumes from the last resourceVersion)."""
RETRY_SECONDS = 2.0


class Watches:
    def __init__(self, client: kubernetes.client.ApiClient, on_list: OnList, on_event: OnEvent, *,
                 namespaces: Sequence[str] = ()) -> None:
        self.client = client
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.on_list = on_list
        self.on_event = on_event
        self.namespaces = tuple(namespaces)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[kubernetes.watch.Watch] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for kind in core.KINDS:
            for ns in self.namespaces or ("",):
                t = threading.Thread(target=self._run, args=(kind, ns), name=f"console-watch-{kind}-{ns or 'all'}",
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for w in self._watches:
                w.stop()  # type: ignore[no-untyped-call]
        for t in self._threads:
            t.join(timeout=5)

    def _list(self, kind: str, ns: str, **kwargs: Any) -> Any:
        plural = core.PLURALS[kind]
        if ns:
            return self.custom.list_namespaced_custom_object(common.GROUP, common.VERSION, ns, plural, **kwargs)
        return self.custom.list_cluster_custom_object(common.GROUP, common.VERSION, plural, **kwargs)

    def _events(self, kind: str, ns: str, rv: str) -> Iterator[Mapping[str, Any]]:
        w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        with self._lock:
            self._watches.append(w)
        try:
            plural = core.PLURALS[kind]
            if ns:
                fn: Any = self.custom.list_namespaced_custom_object
                args: tuple[Any, ...] = (common.GROUP, common.VERSION, ns, plural)
            else:
                fn, args = self.custom.list_cluster_custom_object, (common.GROUP, common.VERSION, plural)
            stream: Any = w.stream
            yield from stream(fn, *args, resource_version=rv, allow_watch_bookmarks=True,
                              timeout_seconds=WATCH_SECONDS, _request_timeout=(10, WATCH_SECONDS + 30))
        finally:
            with self._lock:
                self._watches.remove(w)

    def _run(self, kind: str, ns: str) -> None:
        while not self._stop.is_set():
            try:
                listed = self._list(kind, ns)
                rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                self.on_list(kind, ns, list(listed.get("items") or []))
                while not self._stop.is_set():
                    for event in self._events(kind, ns, rv):
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise _Expired(str(obj.get("message") or "the watch ended with an error"))
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if event.get("type") != "BOOKMARK":
                            self.on_event(kind, str(event.get("type")), obj)
                        if self._stop.is_set():
                            return
            except _Expired as e:
                log.info("the %s watch expired (%s); listing again", kind, e)
            except Exception as e:  # the API server went away, a partition, 429: list again after a pause
                if self._stop.is_set():
                    return
                status = getattr(e, "status", None)
                why = f"HTTP {status}" if status else f"{type(e).__name__}: {str(e)[:200]}"
                log.warning("the %s watch failed (%s); listing again in %.0f s", kind, why, RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)


class _Expired(Exception):
    pass
