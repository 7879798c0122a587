from __future__ import annotations

import json

import pytest

from longshot.config import Settings
from longshot.runtime import netpol

pytestmark = pytest.mark.unit

SETTINGS = Settings(identity="t", namespace="longshot-system",
                    gateway_url="http://longshot-gateway.longshot-system.svc:8443")


def test_agents_get_no_ingress_and_egress_only_to_the_gateway_and_dns():
    p = netpol.build_agent_policy("builds", SETTINGS)
    assert p["metadata"]["namespace"] == "builds" and p["metadata"]["name"] == "longshot-agent-egress"
    spec = p["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "agent",
                                                   "app.kubernetes.io/managed-by": "longshot-operator"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    gateway, dns = spec["egress"]
    assert gateway == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "longshot-system"}},
                               "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway",
                                                               "app.kubernetes.io/part-of": "longshot"}}}],
                       "ports": [{"protocol": "TCP", "port": 8443}]}
    assert dns["to"] == netpol.DEFAULT_DNS_PEERS
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert "ipBlock" not in json.dumps(p)  # nothing else: no git server, no model API, no internet


def test_dns_and_extra_egress_are_configurable():
    s = Settings(identity="t", agent_dns_peers='[{"ipBlock": {"cidr": "10.244.0.1/32"}}]',
                 agent_extra_egress='[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 3128}]}]')
    egress = netpol.build_agent_policy("ns", s)["spec"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.244.0.1/32"}}]
    assert egress[2] == {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 3128}]}


@pytest.mark.parametrize("field, value, message", [
    ("agent_dns_peers", "{", "LONGSHOT_AGENT_DNS_PEERS is not JSON"),
    ("agent_extra_egress", '{"to": []}', "LONGSHOT_AGENT_EXTRA_EGRESS must be a JSON list"),
])
def test_a_bad_setting_is_named(field, value, message):
    with pytest.raises(netpol.PolicyError, match=message):
        netpol.build_agent_policy("ns", Settings(identity="t", **{field: value}))
