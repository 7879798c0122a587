"""Kubernetes client helpers of the shell: one client, idempotent create, fenced status patch, Events.

Synchronous (the official client); the controllers call these from worker threads with
``asyncio.to_thread``. Nothing here decides anything. :class:`KubeAPI` is the interface the controllers use;
:class:`Kube` implements it on a real API server, and unit tests implement it in memory.

Status writes are *fenced*: ``patch_status(..., resource_version=rv)`` sends ``metadata.resourceVersion`` in the
merge patch, so the API server refuses it (409, :class:`Conflict`) when the object changed since the version
the decision was made on. The caller re-reads and decides again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

import kubernetes
from kubernetes.client import ApiException

from longshot import api
from longshot.api import boundedjson, conditions

log = logging.getLogger(__name__)

ApiClient = kubernetes.client.ApiClient
"""The Kubernetes client's connection, for the shell to pass along: no module outside ``runtime/`` (and the entry
points) imports ``kubernetes`` itself (an import-linter contract)."""


def is_api_error(e: BaseException) -> bool:
    """An error the API server answered (logged without a traceback: the answer says it all)."""
    return isinstance(e, ApiException)


PLURALS = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs",
           "BuildSchedule": "buildschedules"}
COMPONENT = "longshot-operator"


REFUSAL_BUDGET: Final = boundedjson.Budget(max_bytes=256 * 1024, max_values=10_000)
"""A refusal's Status (its message names the policy and the field; admission policies write long ones)."""


def refusal(e: BaseException) -> str | None:
    """The API server's message when it refused a write for what was written (400 Bad Request, 403 Forbidden by an
    admission policy or RBAC, 422 Invalid), at most 1,024 characters; None for any other error (tried again)."""
    if not isinstance(e, ApiException) or e.status not in (400, 403, 422):
        return None
    try:  # the API server's Status, read under a budget like any answer whose size the operator does not set
        message = str(boundedjson.loads(e.body or "{}", REFUSAL_BUDGET).get("message") or "")
    except (boundedjson.Refused, AttributeError):
        message = ""
    return (message or str(e.reason or f"HTTP {e.status}"))[:1024]


class Conflict(Exception):
    """The object changed since the resourceVersion a write was fenced on (HTTP 409)."""

    def __init__(self, kind: str, namespace: str, name: str, resource_version: str | None) -> None:
        super().__init__(f"{kind} {namespace}/{name} changed since resourceVersion {resource_version}")
        self.kind, self.namespace, self.name = kind, namespace, name
        self.resource_version = resource_version


class Forbidden(Exception):
    """RBAC does not let this ServiceAccount read the object (HTTP 403): not the same as "it does not exist"."""

    status = 403


def _raise_unless_missing(e: ApiException, what: str) -> None:
    """A failed read: returns when the object does not exist (404), raises :class:`Forbidden` when RBAC hides it
    (403), and anything else again."""
    if e.status == 404:
        return
    if e.status == 403:
        raise Forbidden(what) from None
    raise e


class KubeAPI(Protocol):
    """The API calls the controllers make (real: :class:`Kube`; unit tests: an in-memory fake)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> dict[str, Any] | None: ...
    def create_pod(self, pod: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None: ...
    def delete_pods(self, namespace: str, selector: str, grace_seconds: int | None = None) -> None: ...
    def claim_pod(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def delete_pod_at(self, namespace: str, name: str, resource_version: str) -> bool: ...
    def delete(self, kind: str, namespace: str, name: str) -> None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def put_configmap(self, manifest: Mapping[str, Any]) -> None: ...
    def list_configmap_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def delete_configmap(self, namespace: str, name: str) -> None: ...
    def delete_configmaps(self, namespace: str, selector: str) -> None: ...
    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def runtime_class_exists(self, name: str) -> bool: ...
    def pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]: ...
    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class BoundedApiClient(kubernetes.client.ApiClient):
    """The official client with a time limit on every call that does not set its own: (connect, read) seconds.

    The client's calls have no time limit by default: a connection the API server (or a partition) leaves
    half-open holds its thread, and the reconcile waiting on it, for ever. With a limit the call raises, the
    reconcile fails and is retried like any other API error."""

    request_timeout: tuple[float, float] = (10.0, 60.0)

    def call_api(self, method: str, url: str, header_params: Any = None, body: Any = None,
                 post_params: Any = None, _request_timeout: Any = None) -> Any:
        return super().call_api(method, url, header_params, body, post_params,
                                _request_timeout=self.request_timeout if _request_timeout is None else _request_timeout)


def load_client(pool_size: int = 64) -> kubernetes.client.ApiClient:
    """An API client from the in-cluster service account, else the kubeconfig ($KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # read $KUBECONFIG now: the client's default was fixed when it was imported
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),  # type: ignore[no-untyped-call]
                                           client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return BoundedApiClient(configuration)


def now_rfc3339() -> str:
    return conditions.rfc3339(conditions.now_utc())


ANSWERS: Final = {"200": "object", "201": "object", "202": "object"}


class Core:
    """The core API (``/api/v1``) calls the operator makes, through the official client's ``ApiClient`` (its
    configuration, TLS, bearer token, time limits and :class:`ApiException`), answered as plain JSON.

    Not ``CoreV1Api``: importing it loads the client's whole core model tree (hundreds of modules, a large share of
    the operator's memory), and its typed answers are parsed into those models only to be turned back
    into dicts here."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client

    def call(self, method: str, path: str, params: Mapping[str, str], *, query: list[tuple[str, Any]] | None = None,
             body: Any = None, content_type: str = "application/json") -> Any:
        """``method`` on ``path`` (with ``{name}`` placeholders filled, escaped, from ``params``); the answer's JSON.
        Raises :class:`ApiException` for an answer that is not a success."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.client.param_serialize(
            method=method, resource_path=path, path_params=dict(params), query_params=query or [],
            header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.client.call_api(*request)
        response.read()  # type: ignore[no-untyped-call]
        return self.client.response_deserialize(response, ANSWERS).data


class Kube:
    """The few API calls the controllers make, with the error handling they all need."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client
        self.core = Core(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self._local = threading.local()

    # --- custom resources ------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _obj(self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, PLURALS[kind],
                                                                 name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a custom object; None when it already exists (creation is idempotent by name)."""
        meta = obj["metadata"]
        try:
            return _obj(self.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, meta["namespace"], PLURALS[obj["kind"]], dict(obj)))
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the object (spec or metadata); None when it is gone; raises :class:`Conflict` when ``body``
        is fenced (``metadata.resourceVersion``) and the object changed since."""
        try:
            return _obj(self.custom.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, PLURALS[kind], name, dict(body)))
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 409:
                raise Conflict(kind, namespace, name, (body.get("metadata") or {}).get("resourceVersion")) from None
            raise

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> dict[str, Any] | None:
        """Merge-patch ``status``, fenced on ``resource_version`` when given; None when the object is gone;
        raises :class:`Conflict` when it changed since that version."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return _obj(self.custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, PLURALS[kind], name, body))
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 409:
                raise Conflict(kind, namespace, name, resource_version) from None
            raise

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a custom object (in the background: what it owns goes with it); NotFound is fine."""
        try:
            self.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, PLURALS[kind], name,
                                                        propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    # --- pods ------------------------------------------------------------------------------------------

    def create_pod(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a Pod; the API server's answer (the Pod as created), or None when a Pod of that name exists
        already (a restart re-created it). The answer is plain JSON, not the client's models (a thousand ``V1Pod``
        deserialisations cost seconds of CPU during a dispatch burst)."""
        try:
            return _obj(self.core.call("POST", "/api/v1/namespaces/{namespace}/pods",
                                       {"namespace": pod["metadata"]["namespace"]}, body=dict(pod)))
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _obj(self.core.call("GET", "/api/v1/namespaces/{namespace}/pods/{name}",
                                       {"namespace": namespace, "name": name}))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        query: list[tuple[str, Any]] = [("propagationPolicy", "Background")]
        if grace_seconds is not None:
            query.append(("gracePeriodSeconds", grace_seconds))
        try:
            self.core.call("DELETE", "/api/v1/namespaces/{namespace}/pods/{name}",
                           {"namespace": namespace, "name": name}, query=query)
        except ApiException as e:
            if e.status != 404:
                raise

    def claim_pod(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch a warm Pod (``core.warmpool``: the claim), fenced on the ``metadata.resourceVersion`` in
        ``body``; the Pod as patched, None when it is gone; raises :class:`Conflict` when it changed since that
        version (another replica claimed it)."""
        try:
            return _obj(self.core.call("PATCH", "/api/v1/namespaces/{namespace}/pods/{name}",
                                       {"namespace": namespace, "name": name}, body=dict(body),
                                       content_type="application/merge-patch+json"))
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 409:
                raise Conflict("Pod", namespace, name, (body.get("metadata") or {}).get("resourceVersion")) from None
            raise

    def delete_pod_at(self, namespace: str, name: str, resource_version: str) -> bool:
        """Delete a Pod only while it is at ``resource_version`` (a warm Pod no claim took meanwhile); False when it
        changed (or is gone)."""
        try:
            self.core.call("DELETE", "/api/v1/namespaces/{namespace}/pods/{name}",
                           {"namespace": namespace, "name": name}, query=[("propagationPolicy", "Background")],
                           body={"kind": "DeleteOptions", "apiVersion": "v1",
                                 "preconditions": {"resourceVersion": resource_version}})
            return True
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise

    def delete_pods(self, namespace: str, selector: str, grace_seconds: int | None = None) -> None:
        """Delete the Pods of ``namespace`` that match the label ``selector``: one request (a collection delete)."""
        query: list[tuple[str, Any]] = [("labelSelector", selector), ("propagationPolicy", "Background")]
        if grace_seconds is not None:
            query.append(("gracePeriodSeconds", grace_seconds))
        self.core.call("DELETE", "/api/v1/namespaces/{namespace}/pods", {"namespace": namespace}, query=query)

    def pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Events about the Pod ``name`` (reason, message, type, firstTimestamp), newest last."""
        try:
            listed = self.core.call("GET", "/api/v1/namespaces/{namespace}/events", {"namespace": namespace},
                                    query=[("fieldSelector", f"involvedObject.kind=Pod,involvedObject.name={name}")])
        except ApiException as e:
            if e.status in (403, 404):
                return []
            raise
        items = _obj(listed).get("items") or []
        return [{"reason": i.get("reason") or "", "message": i.get("message") or "", "type": i.get("type") or "",
                 "firstTimestamp": _event_first(i)}
                for i in items if isinstance(i, Mapping)]

    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's data; None when it does not exist; :class:`Forbidden` when RBAC hides it."""
        try:
            found = self.core.call("GET", "/api/v1/namespaces/{namespace}/configmaps/{name}",
                                   {"namespace": namespace, "name": name})
        except ApiException as e:
            _raise_unless_missing(e, f"ConfigMap {namespace}/{name}")
            return None
        return {str(k): str(v) for k, v in (_obj(found).get("data") or {}).items()}

    def put_configmap(self, manifest: Mapping[str, Any]) -> None:
        """Create the ConfigMap, or when it exists merge-patch its ``data``, ``binaryData`` and annotations into it
        (its labels and owners stay as its creator made them)."""
        meta = manifest["metadata"]
        params = {"namespace": str(meta["namespace"]), "name": str(meta["name"])}
        try:
            self.core.call("POST", "/api/v1/namespaces/{namespace}/configmaps", params, body=dict(manifest))
            return
        except ApiException as e:
            if e.status != 409:
                raise
        patch: dict[str, Any] = {k: manifest[k] for k in ("data", "binaryData") if manifest.get(k)}
        if meta.get("annotations"):
            patch["metadata"] = {"annotations": dict(meta["annotations"])}
        request = self.client.param_serialize(
            method="PATCH", resource_path="/api/v1/namespaces/{namespace}/configmaps/{name}", path_params=params,
            header_params={"Accept": "application/json", "Content-Type": "application/merge-patch+json"},
            body=patch, auth_settings=["BearerToken"])
        response = self.client.call_api(*request)
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)

    def list_configmap_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The metadata (name, labels, annotations, creationTimestamp) of the ConfigMaps matching ``selector``: a
        metadata-only list (``PartialObjectMetadataList``), so a build's ledger is listed without its transcripts."""
        request = self.client.param_serialize(
            method="GET", resource_path="/api/v1/namespaces/{namespace}/configmaps",
            path_params={"namespace": namespace}, query_params=[("labelSelector", selector)],
            header_params={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,"
                                     "application/json"},
            auth_settings=["BearerToken"])
        response = self.client.call_api(*request)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
        items = (json.loads(data or b"{}").get("items")) or []
        return [dict(i.get("metadata") or {}) for i in items if isinstance(i, Mapping)]

    def delete_configmap(self, namespace: str, name: str) -> None:
        """Delete a ConfigMap; NotFound is fine."""
        try:
            self.core.call("DELETE", "/api/v1/namespaces/{namespace}/configmaps/{name}",
                           {"namespace": namespace, "name": name})
        except ApiException as e:
            if e.status != 404:
                raise

    def delete_configmaps(self, namespace: str, selector: str) -> None:
        """Delete the ConfigMaps of ``namespace`` that match the label ``selector``: one request."""
        self.core.call("DELETE", "/api/v1/namespaces/{namespace}/configmaps", {"namespace": namespace},
                       query=[("labelSelector", selector)])

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, base64-decoded (None when it does not exist; :class:`Forbidden` when RBAC hides it).
        Never log the result."""
        import base64

        try:
            found = self.core.call("GET", "/api/v1/namespaces/{namespace}/secrets/{name}",
                                   {"namespace": namespace, "name": name})
        except ApiException as e:
            _raise_unless_missing(e, f"Secret {namespace}/{name}")
            return None
        data = _obj(found).get("data") or {}
        return {str(k): base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    def runtime_class_exists(self, name: str) -> bool:
        """Whether the RuntimeClass exists (:class:`Forbidden` when RBAC hides RuntimeClasses)."""
        try:
            self.core.call("GET", "/apis/node.k8s.io/v1/runtimeclasses/{name}", {"name": name})
        except ApiException as e:
            _raise_unless_missing(e, f"RuntimeClass {name}")
            return False
        return True

    # --- events ----------------------------------------------------------------------------------------

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on ``obj``. Failures are logged, never raised: events are best effort."""
        meta = obj.get("metadata") or {}
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'longshot')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", api.API_VERSION), "kind": obj.get("kind"),
                "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.call("POST", "/api/v1/namespaces/{namespace}/events", {"namespace": str(meta.get("namespace"))},
                           body=body)
        except ApiException as e:
            log.warning("could not record event %s on %s/%s: %s", reason, obj.get("kind"), meta.get("name"),
                        e.reason)


def _event_first(event: Mapping[str, Any]) -> str:
    """When an Event first happened: ``firstTimestamp`` (the kubelet's recorder), else ``eventTime`` (the
    events.k8s.io API), else its creation; "" when it has none."""
    meta = event.get("metadata")
    created = meta.get("creationTimestamp") if isinstance(meta, Mapping) else None
    for value in (event.get("firstTimestamp"), event.get("eventTime"), created):
        if isinstance(value, str) and value:
            return value
    return ""


def _obj(value: object) -> dict[str, Any]:
    """An API answer as the dict it is (the client's stubs say ``object``)."""
    return dict(value) if isinstance(value, Mapping) else {}


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the controllers keep of an object in memory: no managedFields, no kopf annotations."""
    meta = body.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith("kopf.") and k != "kubectl.kubernetes.io/last-applied-configuration"}
    keep = {k: meta[k] for k in ("name", "namespace", "uid", "labels", "creationTimestamp", "generation",
                                 "resourceVersion", "ownerReferences", "deletionTimestamp") if k in meta}
    if annotations:
        keep["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": keep}
    for key in ("spec", "status"):
        if key in body:
            out[key] = _plain(body[key])
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
