"""The gateway's Kubernetes calls (synchronous, official client; the server runs them in threads).

Only what the gateway's RBAC (charts/longshot/templates/gateway-rbac.yaml) allows: TokenReviews; Pods,
AgentTasks and BuildRequests read, listed and watched (the watch cache, :mod:`watchcache`); Secrets and the price
ConfigMap read; AgentTask status patched; Events created; ledger
entries (ConfigMaps) created, read and patched.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from longshot import api
from longshot.api import keys
from longshot.core import ledger, names
from longshot.gateway import watchcache
from longshot.gateway.flights import Flights
from longshot.runtime import kube

log = logging.getLogger(__name__)
SECRET_CACHE_SIZE = 1024
"""Most Secrets held by the read cache (least recently used dropped)."""
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read it again and retry."""


@dataclass(frozen=True)
class Review:
    """A successful TokenReview of a Pod-bound ServiceAccount token."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


class Cluster:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self.kube = kube.Kube(client)
        self.auth = kubernetes.client.AuthenticationV1Api(client)
        self.secret_cache_seconds = 0.0
        """How long a Secret read is reused (the gateway's ``secret_cache_seconds``); 0: read every time."""
        self._secrets: OrderedDict[tuple[str, str], tuple[float, dict[str, str]]] = OrderedDict()
        self._secrets_lock = threading.Lock()
        self._secret_flights: Flights[dict[str, str] | None] = Flights()
        """Reads of a Secret under way (:meth:`aget_secret`): requests that miss the cache together share one GET."""
        self.cache: watchcache.WatchCache | None = None
        """The watch cache of Pods, live AgentTasks and BuildRequests (:meth:`watch`); None: every read is a GET."""

    def watch(self, namespaces: tuple[str, ...] = ()) -> watchcache.WatchCache:
        """Start the watch cache (every namespace, or each of ``namespaces``); reads use it from now on."""
        self.cache = watchcache.WatchCache(self.client, namespaces)
        self.cache.start()
        return self.cache

    def stop_watching(self) -> None:
        if self.cache is not None:
            self.cache.stop()
            self.cache = None

    def review(self, token: str, audience: str) -> Review | None:
        """The Pod the token is bound to, or None when the API server does not accept it for ``audience``."""
        body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                     "spec": {"token": token, "audiences": [audience]}}
        serialize: Any = self.client.sanitize_for_serialization
        result = cast(dict[str, Any], serialize(self.auth.create_token_review(body)))
        status = result.get("status") or {}
        if not status.get("authenticated") or audience not in (status.get("audiences") or []):
            return None
        user = status.get("user") or {}
        username = str(user.get("username") or "")
        prefix = "system:serviceaccount:"
        if not username.startswith(prefix) or username.count(":") != 3:
            return None
        namespace, account = username[len(prefix):].split(":", 1)
        extra = user.get("extra") or {}
        pod_name = (extra.get(POD_NAME_KEY) or [None])[0]
        pod_uid = (extra.get(POD_UID_KEY) or [None])[0]
        if not pod_name or not pod_uid:
            return None
        return Review(namespace, account, str(pod_name), str(pod_uid))

    def _cached(self, kind: str, namespace: str, name: str, fresh: bool) -> tuple[bool, dict[str, Any] | None]:
        if fresh or self.cache is None:
            return False, None
        return self.cache.get(kind, namespace, name)

    def get_pod(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """The Pod: from the watch cache when it holds it (and ``fresh`` is not asked), else read."""
        held, pod = self._cached("Pod", namespace, name, fresh)
        return pod if held else self.kube.get_pod(namespace, name)

    def get_task(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """The AgentTask: from the watch cache when it holds it (a live task) and ``fresh`` is not asked, else read."""
        held, task = self._cached("AgentTask", namespace, name, fresh)
        return task if held else self.kube.get("AgentTask", namespace, name)

    def get_build(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        held, build = self._cached("BuildRequest", namespace, name, fresh)
        return build if held else self.kube.get("BuildRequest", namespace, name)

    async def aget_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """:meth:`get_secret` from the event loop: a cached Secret is returned at once, only a read of the API
        server goes to a thread (on a busy gateway a thread was 0.33 s away on average: docs/benchmarks.md)."""
        hit = self._cached_secret(namespace, name)
        if hit is not None:
            return hit
        found = await self._secret_flights.run((namespace, name),
                                               lambda: asyncio.to_thread(self.get_secret, namespace, name))
        return dict(found) if found is not None else None

    def _cached_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        if self.secret_cache_seconds <= 0:
            return None
        with self._secrets_lock:
            hit = self._secrets.get((namespace, name))
            return dict(hit[1]) if hit is not None and hit[0] > time.monotonic() else None

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, decoded, reused for ``secret_cache_seconds`` (every git request and model call of a
        build reads its credentials; a rotated credential is used from at most that long after). Never log it."""
        ttl = self.secret_cache_seconds
        key = (namespace, name)
        now = time.monotonic()
        hit = self._cached_secret(namespace, name)
        if hit is not None:
            return hit
        data = self.kube.get_secret(namespace, name)
        if data is not None and ttl > 0:
            with self._secrets_lock:
                self._secrets[key] = (now + ttl, dict(data))
                self._secrets.move_to_end(key)
                while len(self._secrets) > SECRET_CACHE_SIZE:
                    self._secrets.popitem(last=False)
        return data

    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.kube.get_configmap(namespace, name)

    def put_configmap(self, manifest: Mapping[str, Any]) -> None:
        """Create the ConfigMap, or merge its data into the existing one (a ledger entry)."""
        self.kube.put_configmap(manifest)

    def get_ledger_transcript(self, namespace: str, name: str) -> bytes | None:
        """The stored (compressed) transcript of a ledger entry; None when there is none."""
        try:
            found = self.kube.core.call("GET", "/api/v1/namespaces/{namespace}/configmaps/{name}",
                                        {"namespace": namespace, "name": name})
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        blob = ((found or {}).get("binaryData") or {}).get(ledger.TRANSCRIPT_KEY)
        return base64.b64decode(blob) if isinstance(blob, str) else None

    def build_tasks(self, namespace: str, build: str) -> list[dict[str, Any]]:
        """Every AgentTask of ``build`` (by its label, checked against ``spec.buildRef``)."""
        listed = cast(dict[str, Any], self.kube.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, "agenttasks", label_selector=f"{keys.BUILD}={names.fit(build)}"))
        items: list[dict[str, Any]] = listed.get("items", [])
        return [t for t in items if ((t.get("spec") or {}).get("buildRef") or {}).get("name") == build]

    def patch_task_status(self, namespace: str, name: str, resource_version: str,
                          status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch ``status`` if the task is still at ``resource_version``; None when it is gone,
        :class:`Conflict` when it changed meanwhile."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        try:
            return cast(dict[str, Any], self.kube.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, "agenttasks", name, body))
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 409:
                raise Conflict(f"AgentTask {namespace}/{name} changed") from None
            raise

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.kube.event(obj, type_, reason, message)
