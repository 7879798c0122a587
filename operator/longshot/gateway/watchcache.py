"""The gateway's watch cache: the agent Pods, live AgentTasks and BuildRequests it reads to tell who is calling, kept
by list and watch, so that a request costs the API server no read.

Who is calling (:mod:`identity`) needs the caller's Pod, its AgentTask and its BuildRequest. Read with a GET each,
that was three API reads per caller every ``identity_cache_seconds`` (2 s): with a thousand agents, their heartbeats
alone were a hundred GETs a second, each a quorum read of etcd and a few milliseconds of the gateway's Python
(``make bench-fleet BENCH_FLEET_ARGS=--through-gateway``). controller-runtime's answer is a cached client; this is
the gateway's:

* one thread per kind and namespace (every namespace, or each of ``LONGSHOT_GATEWAY_WATCH_NAMESPACES``) lists, then
  watches from the list's ``resourceVersion`` (bookmarks on; the API server ends a watch after
  :data:`WATCH_SECONDS` and the thread resumes from the last version; an expired version (410) or any error lists
  again after :data:`RETRY_SECONDS`);
* kept: Pods with the label ``longshot.dev/build`` (agent attempts and warm sandboxes), BuildRequests, and only the
  AgentTasks that are live (:func:`live_task`: their last attempt has not ended), so that ten thousand pending or
  finished tasks cost no memory; each object :func:`~longshot.runtime.kube.slim` (no managedFields);
* :meth:`WatchCache.get` answers from the cache only while that kind's watch is synced (listed, and no error since);
  otherwise, and for any object it does not hold, it says so and the caller reads the API server.

So a read is as fresh as the watch: the API server sends each change to its watchers within milliseconds, where the
identity cache alone let an ended attempt keep access for up to two seconds. :mod:`identity` answers *yes* from the
cache and confirms every *no* (a Pod not found, an attempt not recorded yet or ended) with GETs before refusing, so a
watch that lags can delay a revocation by its lag, never refuse a caller the API server would accept.

Without the ``list`` and ``watch`` rights (an older chart), or with ``LONGSHOT_GATEWAY_WATCH_CACHE=false``, every
read is a GET, as before. Metrics: ``longshot_gateway_watch_cache_reads_total{kind,result}`` (hit, miss: not held,
unsynced: the watch is not synced) and ``longshot_gateway_watch_cache_objects{kind}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import kubernetes
from kubernetes.watch.watch import iter_resp_lines

from longshot import api
from longshot.api import keys
from longshot.gateway import metrics
from longshot.runtime import kube

log = logging.getLogger(__name__)

WATCH_SECONDS: Final = 120
"""One watch request's length (the API server ends it; the thread resumes from the last resourceVersion). A
connection that stalls silently is given up :data:`READ_TIMEOUT_SECONDS` after its last byte."""
READ_TIMEOUT_SECONDS: Final = WATCH_SECONDS + 30
RETRY_SECONDS: Final = 2.0
REFUSED_RETRY_SECONDS: Final = 60.0
"""After the API server refused a list (no right): how long until the next try."""
PAGE: Final = 500
"""Objects per list page."""
KINDS: Final = ("Pod", "AgentTask", "BuildRequest")
POD_SELECTOR: Final = keys.BUILD
"""The label every agent Pod and warm sandbox carries (``runtime.pods``): the Pods the cache holds."""


def live_task(task: Mapping[str, Any]) -> bool:
    """Whether the cache keeps the AgentTask ``task``: its last attempt has not ended (a running attempt's Pod, or
    one about to be recorded, calls the gateway). A task with no attempt yet or an ended one is read with a GET
    when a Pod of it calls, which only a Pod it no longer serves does. Pure."""
    attempts = [a for a in (task.get("status") or {}).get("attempts") or [] if isinstance(a, Mapping)]
    if not attempts:
        return False
    last = max(attempts, key=lambda a: int(a.get("number") or 0))
    return not last.get("endTime")


def kept(kind: str, body: Mapping[str, Any]) -> bool:
    """Whether the cache holds ``body`` of ``kind``. Pure."""
    if kind == "AgentTask":
        return live_task(body)
    return True


class _Expired(Exception):
    pass


class Store:
    """One kind's objects by (namespace, name), with whether its watch is synced. Thread-safe; pure logic apart
    from the lock (:meth:`replace` after a list, :meth:`apply` per watch event)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._synced: set[str] = set()
        """The namespaces ("" for every namespace) whose list is held and whose watch has not failed since."""
        self._lock = threading.Lock()

    def replace(self, namespace: str, items: Sequence[Mapping[str, Any]]) -> None:
        """A list of ``namespace`` ("" for all): its objects replace those held for it; the namespace is synced."""
        fresh = {_key(o): kube.slim(o) for o in items if kept(self.kind, o)}
        with self._lock:
            for key in [k for k in self._items if not namespace or k[0] == namespace]:
                if key not in fresh:
                    del self._items[key]
            self._items.update(fresh)
            self._synced.add(namespace)
        metrics.WATCH_CACHE_OBJECTS.labels(kind=self.kind).set(len(self._items))

    def apply(self, event_type: str, body: Mapping[str, Any]) -> None:
        """A watch event (ADDED, MODIFIED, DELETED)."""
        key = _key(body)
        with self._lock:
            if event_type == "DELETED" or not kept(self.kind, body):
                self._items.pop(key, None)
            else:
                self._items[key] = kube.slim(body)
        metrics.WATCH_CACHE_OBJECTS.labels(kind=self.kind).set(len(self._items))

    def unsync(self, namespace: str) -> None:
        """The watch of ``namespace`` failed: its reads go to the API server until it is listed again."""
        with self._lock:
            self._synced.discard(namespace)

    def get(self, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """``(True, object)`` when the cache holds it and is synced for ``namespace``; ``(False, None)`` when the
        caller must read the API server (not held, or not synced)."""
        with self._lock:
            synced = "" in self._synced or namespace in self._synced
            obj = self._items.get((namespace, name)) if synced else None
        metrics.WATCH_CACHE_READS.labels(kind=self.kind,
                                         result="unsynced" if not synced else "hit" if obj is not None else "miss")
        return (True, obj) if obj is not None else (False, None)

    def synced(self, namespace: str) -> bool:
        with self._lock:
            return "" in self._synced or namespace in self._synced

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchCache:
    """List and watch of :data:`KINDS` into a :class:`Store` each (see the module's docstring)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespaces: Sequence[str] = ()) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.namespaces = tuple(namespaces) or ("",)
        self.stores = {kind: Store(kind) for kind in KINDS}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: set[Any] = set()
        self._lock = threading.Lock()

    def get(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        return self.stores[kind].get(namespace, name)

    def start(self) -> None:
        for kind in KINDS:
            for ns in self.namespaces:
                t = threading.Thread(target=self._run, args=(kind, ns), daemon=True,
                                     name=f"gateway-watch-{kind}-{ns or 'all'}")
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        """Stop every watch: each stream's socket is shut down (a thread blocked reading it wakes up; closing the
        response instead would wait for the read to return), then the threads are joined, 5 s in all at most."""
        self._stop.set()
        with self._lock:
            for r in self._responses:
                sock = getattr(getattr(r, "connection", None) or getattr(r, "_connection", None), "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_synced(self, timeout: float) -> bool:
        """Whether every kind got synced within ``timeout`` seconds (tests and start-up logs)."""
        return _wait(lambda: all(s.synced(ns) for s in self.stores.values() for ns in self.namespaces), timeout,
                     self._stop)

    # --- the API calls ------------------------------------------------------------------------------------

    def _call(self, kind: str, ns: str, **kw: Any) -> Any:
        kw = {**kw, "_preload_content": False}
        if kind == "Pod":
            kw["label_selector"] = POD_SELECTOR
            return (self.core.list_namespaced_pod(ns, **kw) if ns else self.core.list_pod_for_all_namespaces(**kw))
        plural = kube.PLURALS[kind]
        if ns:
            return self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, ns, plural, **kw)
        return self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, plural, **kw)

    def _list(self, kind: str, ns: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            response = self._call(kind, ns, limit=PAGE, _continue=token, _request_timeout=(10, 60))
            page = json.loads(response.data)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def _events(self, kind: str, ns: str, rv: str) -> Iterator[dict[str, Any]]:
        response = self._call(kind, ns, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                              timeout_seconds=WATCH_SECONDS, _request_timeout=(10, READ_TIMEOUT_SECONDS))
        with self._lock:
            self._responses.add(response)
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                yield json.loads(line)
        finally:
            with self._lock:
                self._responses.discard(response)
            response.release_conn()

    def _run(self, kind: str, ns: str) -> None:
        store = self.stores[kind]
        refused = False
        while not self._stop.is_set():
            try:
                items, rv = self._list(kind, ns)
                store.replace(ns, items)
                while not self._stop.is_set():
                    for event in self._events(kind, ns, rv):
                        obj = event.get("object") or {}
                        kind_of_event = str(event.get("type"))
                        if kind_of_event == "ERROR":
                            raise _Expired(str(obj.get("message") or "the watch ended with an error"))
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind_of_event != "BOOKMARK":
                            store.apply(kind_of_event, obj)
            except _Expired as e:
                store.unsync(ns)
                log.info("the gateway's %s watch expired (%s); listing again", kind, e)
            except Exception as e:  # the API server went away, no list/watch right, 429: GETs until it lists again
                store.unsync(ns)
                if self._stop.is_set():
                    return
                status = getattr(e, "status", None)
                why = f"HTTP {status}" if status else f"{type(e).__name__}: {str(e)[:200]}"
                if status in (401, 403):  # no list/watch right (an older chart): said once, tried again slowly
                    if not refused:
                        log.warning("the gateway may not list and watch %s in %s (%s): every read of one is a GET "
                                    "(grant list and watch, as the chart's gateway RBAC does)", kind,
                                    ns or "every namespace", why)
                    refused = True
                    self._stop.wait(REFUSED_RETRY_SECONDS)
                    continue
                log.warning("the gateway's %s watch failed (%s); its reads go to the API server, listing again in "
                            "%.0f s", kind, why, RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)


def _wait(cond: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
    waited = 0.0
    while not cond():
        if waited >= timeout or stop.is_set():
            return False
        stop.wait(0.05)
        waited += 0.05
    return True
