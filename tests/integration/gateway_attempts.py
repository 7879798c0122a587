"""Agent attempts as the API server knows them, for the gateway's tests: a BuildRequest, an AgentTask, the
attempt's Pod exactly as ``runtime.pods`` builds it, and a token bound to that Pod (TokenRequest, the
audience and expiry of the Pod's projected volume, as the kubelet asks for it), with the Pod's UID recorded on
the task's attempt as the operator records it. No kubelet: the Pod stays
Pending unless a test marks it otherwise, like the process kubelet does."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import kubernetes
from k8s_builders import build as build_obj
from k8s_builders import create, get

from longshot.config import Settings
from longshot.runtime import pods


@dataclass
class AgentAttempt:
    namespace: str
    build: dict[str, Any]
    task: dict[str, Any]
    pod: dict[str, Any]
    token: str

    @property
    def name(self) -> str:
        return str(self.task["metadata"]["name"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def progress(self, custom: kubernetes.client.CustomObjectsApi) -> dict[str, Any]:
        return (get(custom, self.namespace, "agenttasks", self.name).get("status") or {}).get("progress") or {}


def pod_token(core: kubernetes.client.CoreV1Api, namespace: str, pod: dict[str, Any], *,
              audience: str = pods.GATEWAY_AUDIENCE, seconds: int = 600, bound: bool = True) -> str:
    spec: dict[str, Any] = {"audiences": [audience], "expirationSeconds": seconds}
    if bound:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                  "uid": pod["metadata"]["uid"]}
    return str(core.create_namespaced_service_account_token("default", namespace, {"spec": spec}).status.token)


def secret(core: kubernetes.client.CoreV1Api, namespace: str, name: str, data: dict[str, str]) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": {
        k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def ensure_build(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, **spec: Any
                 ) -> dict[str, Any]:
    try:
        return get(custom, namespace, "buildrequests", name)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise
    body = build_obj(name)
    body["spec"].update(spec)
    return create(custom, namespace, body)


def record_attempt(custom: kubernetes.client.CustomObjectsApi, namespace: str, task: str, attempt: int,
                   pod: dict[str, Any] | None) -> None:
    """Write ``status.attempts`` as the operator does when it creates the attempt's Pod: its name and, given the
    Pod, its UID (``podUID``, what the gateway binds the caller to)."""
    record: dict[str, Any] = {"number": attempt, "pod": pods.pod_name(task, attempt)}
    if pod is not None:
        record["podUID"] = pod["metadata"]["uid"]
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", task,
                                                 {"status": {"phase": "Running", "attempts": [record]}})


def make_attempt(core: kubernetes.client.CoreV1Api, custom: kubernetes.client.CustomObjectsApi, namespace: str,
                 gateway_url: str, *, build: str = "b1", task: str = "b1-t1", role: str = "worker", attempt: int = 1,
                 build_spec: dict[str, Any] | None = None, record: bool = True, **task_spec: Any) -> AgentAttempt:
    b = ensure_build(custom, namespace, build, **(build_spec or {}))
    t = create(custom, namespace, {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": task, "labels": {"longshot.dev/build": build, "longshot.dev/role": role}},
        "spec": {"buildRef": {"name": build}, "description": "Do a thing", "role": role, **task_spec}})
    manifest = pods.build_agent_pod(t, b, Settings(identity="test", gateway_url=gateway_url), attempt)
    p = kubernetes.client.ApiClient().sanitize_for_serialization(core.create_namespaced_pod(namespace, manifest))
    if record:
        record_attempt(custom, namespace, task, attempt, p)
    return AgentAttempt(namespace, b, t, p, pod_token(core, namespace, p))
