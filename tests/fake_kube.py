"""An in-memory ``runtime.kube.KubeAPI`` for the shell's unit tests: objects with resourceVersions, fenced status
writes, idempotent creates, and injectable failures."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from longshot import api
from longshot.runtime import kube

STATUS_DEFAULTS = {r.kind: r.status_default for r in api.RESOURCES if r.status_default is not None}
"""Like the API server: a status subresource drops ``status`` on create; the CRD's default status applies."""


def _matches(labels: Mapping[str, Any], selector: str) -> bool:
    """Equality terms and ``key in (a,b)`` terms, as the operator writes them."""
    terms = [(m[0], set(m[1].split(","))) if m[0] else (m[2], {m[3]})
             for m in re.findall(r"([\w./-]+) in \(([^)]*)\)|([\w./-]+)=([^,]+)", selector)]
    return all(labels.get(t) in vs for t, vs in terms)


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}
        self.runtime_classes: set[str] = set()
        self.configmap_objects: dict[tuple[str, str], dict[str, Any]] = {}
        """Whole ConfigMaps written with ``put_configmap`` (ledger entries)."""
        self.events: list[tuple[str, str, str, str]] = []
        self.calls: list[str] = []
        self.pod_collection_deletes: list[tuple[str, str]] = []
        self.configmap_collection_deletes: list[tuple[str, str]] = []
        self._rv = itertools.count(1)
        self.fail_next: dict[str, list[Exception]] = {}
        """method name -> exceptions to raise on its next calls."""
        self.fail_status: dict[tuple[str, str], list[Exception]] = {}
        """(kind, name) -> exceptions to raise on the next status writes of that object."""

    def _maybe_fail(self, method: str) -> None:
        self.calls.append(method)
        queue = self.fail_next.get(method)
        if queue:
            raise queue.pop(0)

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("create")
        key = (str(obj["kind"]), obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        o = copy.deepcopy(dict(obj))
        o["metadata"].setdefault("uid", f"uid-{key[2]}")
        o["metadata"].setdefault("generation", 1)
        o["metadata"].setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        o.pop("status", None)
        if key[0] in STATUS_DEFAULTS:
            o["status"] = copy.deepcopy(STATUS_DEFAULTS[key[0]])
        self.objects[key] = o
        return self._stamp(o)

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("patch")
        o = self.objects.get((kind, namespace, name))
        if o is None:
            return None
        fence = (body.get("metadata") or {}).get("resourceVersion")
        if fence and fence != o["metadata"]["resourceVersion"]:
            raise kube.Conflict(kind, namespace, name, fence)
        for part, value in body.items():
            if isinstance(value, Mapping):
                o.setdefault(part, {}).update(value)
        if "spec" in body:
            o["metadata"]["generation"] = int(o["metadata"].get("generation", 1)) + 1
        return self._stamp(o)

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any], *,
                     resource_version: str | None = None) -> dict[str, Any] | None:
        self._maybe_fail("patch_status")
        queued = self.fail_status.get((kind, name))
        if queued:
            raise queued.pop(0)
        o = self.objects.get((kind, namespace, name))
        if o is None:
            return None
        if resource_version and o["metadata"]["resourceVersion"] != resource_version:
            raise kube.Conflict(kind, namespace, name, resource_version)
        current = o.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = copy.deepcopy(v)
        return self._stamp(o)

    def create_pod(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("create_pod")
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if key in self.pods:
            return None
        p = copy.deepcopy(dict(pod))
        p["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
        p["metadata"].setdefault("uid", f"uid-{key[1]}")
        self.pods[key] = p
        return self._stamp(p)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        p = self.pods.get((namespace, name))
        return copy.deepcopy(p) if p else None

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        self._maybe_fail("delete_pod")
        self.pods.pop((namespace, name), None)

    def claim_pod(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("claim_pod")
        p = self.pods.get((namespace, name))
        if p is None:
            return None
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != str(p["metadata"].get("resourceVersion", "")):
            raise kube.Conflict("Pod", namespace, name, rv)
        meta = body.get("metadata") or {}
        for k in ("labels", "annotations"):
            p["metadata"].setdefault(k, {}).update(meta.get(k) or {})
        if "ownerReferences" in meta:
            p["metadata"]["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
        p.setdefault("spec", {}).update(body.get("spec") or {})
        return self._stamp(p)

    def delete_pod_at(self, namespace: str, name: str, resource_version: str) -> bool:
        self._maybe_fail("delete_pod_at")
        p = self.pods.get((namespace, name))
        if p is None or str(p["metadata"].get("resourceVersion", "")) != resource_version:
            return False
        del self.pods[(namespace, name)]
        return True

    def delete_pods(self, namespace: str, selector: str, grace_seconds: int | None = None) -> None:
        self._maybe_fail("delete_pods")
        self.pod_collection_deletes.append((namespace, selector))
        for key in [k for k, pod in self.pods.items() if k[0] == namespace and _matches(
                (pod.get("metadata") or {}).get("labels") or {}, selector)]:
            del self.pods[key]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._maybe_fail("delete")
        self.objects.pop((kind, namespace, name), None)

    def runtime_class_exists(self, name: str) -> bool:
        self._maybe_fail("runtime_class_exists")
        return name in self.runtime_classes

    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        self._maybe_fail("get_configmap")
        return self.configmaps.get((namespace, name))

    def put_configmap(self, manifest: Mapping[str, Any]) -> None:
        self._maybe_fail("put_configmap")
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        stored = self.configmap_objects.setdefault(key, copy.deepcopy(dict(manifest)))
        if stored is not manifest:
            for part in ("data", "binaryData"):
                stored.setdefault(part, {}).update(manifest.get(part) or {})
            stored["metadata"].setdefault("annotations", {}).update(meta.get("annotations") or {})
        self.configmaps[key] = dict(stored.get("data") or {})

    def list_configmap_metadata(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._maybe_fail("list_configmap_metadata")
        want = dict(part.split("=", 1) for part in selector.split(","))
        return [copy.deepcopy(o["metadata"]) for (ns, _), o in sorted(self.configmap_objects.items())
                if ns == namespace and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())]

    def delete_configmap(self, namespace: str, name: str) -> None:
        self._maybe_fail("delete_configmap")
        self.configmap_objects.pop((namespace, name), None)
        self.configmaps.pop((namespace, name), None)

    def delete_configmaps(self, namespace: str, selector: str) -> None:
        self._maybe_fail("delete_configmaps")
        self.configmap_collection_deletes.append((namespace, selector))
        for key in [k for k, cm in self.configmap_objects.items() if k[0] == namespace and _matches(
                (cm.get("metadata") or {}).get("labels") or {}, selector)]:
            self.configmap_objects.pop(key, None)
            self.configmaps.pop(key, None)

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self._maybe_fail("get_secret")
        return self.secrets.get((namespace, name))

    def pod_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return []

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason, message))

    def finish_pod(self, namespace: str, name: str, exit_code: int, message: str) -> dict[str, Any]:
        """Play the kubelet: the agent container terminated."""
        p = self.pods[(namespace, name)]
        p["status"] = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [
            {"name": "agent", "state": {"terminated": {"exitCode": exit_code, "reason": "Completed",
                                                       "message": message}}}]}
        return self._stamp(p)


Hook = Callable[[], None]


# --- shared by the manager tests ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def build(name: str = "b", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"request": "do it", "repository": {"url": "https://git.example/r.git"}, **spec}}
