"""The operator's agent NetworkPolicy on the real API server: created once, left alone, corrected on drift."""

from __future__ import annotations

import kubernetes
import pytest

from longshot.config import Settings
from longshot.runtime import netpol

pytestmark = pytest.mark.integration


def test_ensure_creates_then_leaves_alone_then_repairs(api_client, namespace):
    settings = Settings(identity="t", namespace="longshot-system", gateway_url="http://gw.longshot-system.svc:8080")
    api = kubernetes.client.NetworkingV1Api(api_client)

    assert netpol.ensure(api_client, namespace, settings) == "created"
    assert netpol.ensure(api_client, namespace, settings) == "unchanged"
    policy = api.read_namespaced_network_policy("longshot-agent-egress", namespace)
    assert policy.spec.policy_types == ["Ingress", "Egress"] and policy.spec.ingress in (None, [])
    assert [r.ports[0].port for r in policy.spec.egress] == [8080, 53]

    # someone opens it up; the next call puts it back
    api.patch_namespaced_network_policy("longshot-agent-egress", namespace, {"spec": {"egress": [
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}})
    assert netpol.ensure(api_client, namespace, settings) == "updated"
    policy = api.read_namespaced_network_policy("longshot-agent-egress", namespace)
    assert [r.ports[0].port for r in policy.spec.egress] == [8080, 53]
