"""The gateway's watch cache: the agent Pods, live AgentTasks and BuildRequests it reads to tell who is calling, kept
by list and watch, so that a request costs the API server no read.

Who is calling (:mod:`identity`) needs the caller's Pod, its AgentTask and its BuildRequest. Read with a GET each,
that was three API reads per caller every ``identity_cache_seconds`` (2 s): with a thousand agents, their heartbeats
alone were a hundred GETs a second, each a quorum read of etcd and a few milliseconds of the gateway's Python
(``make bench-fleet BENCH_FLEET_ARGS=--through-gateway``). controller-runtime's answer is a cached client; this is
the gateway's:

* one thread per kind and namespace (every namespace, or each of ``LONGSHOT_GATEWAY_WATCH_NAMESPACES``) lists, then
  watches from the list's ``resourceVersion`` (bookmarks on; the API server ends a watch after
  :data:`WATCH_SECONDS` and the thread resumes from the last version; an expired version (410) lists again at
  once, any other error after :data:`RETRY_SECONDS`: :mod:`longshot.runtime.listwatch`);
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

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kubernetes

from longshot import api
from longshot.api import keys
from longshot.gateway import metrics
from longshot.runtime import kube, listwatch

WATCH_SECONDS: Final = 120
"""One watch request's length (the API server ends it; the thread resumes from the last resourceVersion)."""
RETRY_SECONDS: Final = 2.0
REFUSED_RETRY_SECONDS: Final = 60.0
"""After the API server refused a list (no right): how long until the next try."""
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
    """List and watch of :data:`KINDS` into a :class:`Store` each (see the module's docstring), on
    :class:`~longshot.runtime.listwatch.ListWatch`."""

    def __init__(self, client: kubernetes.client.ApiClient, namespaces: Sequence[str] = ()) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.namespaces = tuple(namespaces) or ("",)
        self.stores = {kind: Store(kind) for kind in KINDS}
        self.watches = listwatch.ListWatch(
            self._call, kinds=KINDS, namespaces=self.namespaces, name="gateway-watch",
            on_list=lambda kind, ns, items: self.stores[kind].replace(ns, items),
            on_event=lambda kind, type_, obj: self.stores[kind].apply(type_, obj),
            on_unsync=lambda kind, ns: self.stores[kind].unsync(ns),
            watch_seconds=WATCH_SECONDS, retry_seconds=RETRY_SECONDS, refused_retry_seconds=REFUSED_RETRY_SECONDS,
            refused_hint="every read of one is a GET (grant list and watch, as the chart's gateway RBAC does)")

    def get(self, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        return self.stores[kind].get(namespace, name)

    def start(self) -> None:
        self.watches.start()

    def stop(self) -> None:
        """Stop every watch (sockets shut down, threads joined: 5 s in all at most)."""
        self.watches.stop()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every kind got synced within ``timeout`` seconds (tests and start-up logs)."""
        return self.watches.wait(lambda: all(s.synced(ns) for s in self.stores.values() for ns in self.namespaces),
                                 timeout)

    def _call(self, kind: str, ns: str, **kw: Any) -> Any:
        if kind == "Pod":
            kw["label_selector"] = POD_SELECTOR
            return (self.core.list_namespaced_pod(ns, **kw) if ns else self.core.list_pod_for_all_namespaces(**kw))
        plural = kube.PLURALS[kind]
        if ns:
            return self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, ns, plural, **kw)
        return self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, plural, **kw)
