"""The operator's core API calls (``runtime.kube.Core``: Pods, Events, ConfigMaps, Secrets through the official
client's ApiClient, answered as plain JSON) on the real API server, and that the operator never loads the client's
``CoreV1Api`` (19 MiB of models) or httpx (issue trackers only)."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime

import kubernetes
import pytest
from kubernetes.client import ApiException

from longshot.runtime import kube

pytestmark = pytest.mark.integration


def pod(namespace: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                            "labels": {"app": "core-test"}},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "agent", "image": "busybox:does-not-run-here", "securityContext": {
                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}


def test_pods_events_configmaps_and_secrets_through_the_core_calls(api_client, core_v1, namespace):
    k = kube.Kube(api_client)
    made = k.create_pod(pod(namespace, "p1"))
    assert made is not None and made["metadata"]["name"] == "p1" and made["metadata"]["uid"]
    assert isinstance(made, dict) and made["spec"]["containers"][0]["image"] == "busybox:does-not-run-here"
    assert k.create_pod(pod(namespace, "p1")) is None  # exists: idempotent by name
    got = k.get_pod(namespace, "p1")
    assert got is not None and got["metadata"]["uid"] == made["metadata"]["uid"]
    assert k.get_pod(namespace, "missing") is None

    k.event(made, "Warning", "FailedMount", "secret \"x\" not found")
    (seen,) = k.pod_events(namespace, "p1")
    assert {k_: seen[k_] for k_ in ("reason", "message", "type")} == {
        "reason": "FailedMount", "message": "secret \"x\" not found", "type": "Warning"}
    first = datetime.fromisoformat(seen["firstTimestamp"].replace("Z", "+00:00"))  # when the mount first failed
    assert abs((datetime.now(UTC) - first).total_seconds()) < 600
    assert k.pod_events(namespace, "p2") == []

    assert k.get_configmap(namespace, "cm") is None
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert k.get_configmap(namespace, "cm") == {"a": "1"}
    assert k.get_secret(namespace, "s") is None
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "data": {
        "token": base64.b64encode(b"s3cret").decode()}})
    assert k.get_secret(namespace, "s") == {"token": "s3cret"}

    k.delete_pod(namespace, "p1", grace_seconds=0)
    assert k.get_pod(namespace, "p1") is None
    k.delete_pod(namespace, "p1")  # gone: nothing to do
    with pytest.raises(ApiException) as refused:  # an answer that is not a success is the client's error
        k.create_pod({**pod(namespace, "Bad_Name"), "metadata": {"name": "Bad_Name", "namespace": namespace}})
    assert refused.value.status == 422


def test_the_operator_loads_neither_the_core_models_nor_httpx():
    code = """
import sys, kubernetes
import longshot.operator_main, longshot.controllers.manager
from longshot.runtime import kube, netpol
kube.Kube(kubernetes.client.ApiClient())
heavy = [m for m in sys.modules if m == "httpx" or m.startswith("kubernetes.client.api.core_v1_api")]
print(len([m for m in sys.modules if m.startswith("kubernetes.client.models")]), heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["[]"], out
    assert int(out[0]) < 50, out  # the lease and custom-object APIs' few models, not the core tree (250)
    assert kubernetes.client.CoreV1Api  # the tests themselves may use it
