from __future__ import annotations

import pytest

from longshot.config import Settings
from longshot.runtime import netpol
from longshot.testing import netpolicy

pytestmark = pytest.mark.unit


def pod(ns, name, ip, **labels):
    return {"metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": {},
            "status": {"phase": "Running", "podIP": ip}}


def ns(name):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


AGENT = {"app.kubernetes.io/component": "agent", "app.kubernetes.io/managed-by": "longshot-operator"}
GATEWAY = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/part-of": "longshot"}


def test_the_agent_policy_lets_agents_reach_the_gateway_and_dns_and_nothing_else():
    policy = netpol.build_agent_policy("builds", Settings(
        identity="t", namespace="longshot-system", gateway_url="http://gw:8080",
        agent_dns_peers='[{"ipBlock": {"cidr": "10.244.0.1/32"}}]'))
    pods = [pod("builds", "agent", "10.244.0.10", **AGENT), pod("builds", "other", "10.244.0.11"),
            pod("longshot-system", "gw", "10.244.0.20", **GATEWAY), pod("longshot-system", "op", "10.244.0.21")]
    lines, warnings = netpolicy.render(pods, [ns("builds"), ns("longshot-system")], [policy])

    egress = [x for x in lines if x.startswith("-A LONGSHOT-NETPOL-EGRESS")]
    assert egress == [
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -d 10.244.0.1/32 -p tcp --dport 53 -j RETURN",
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -d 10.244.0.1/32 -p udp --dport 53 -j RETURN",
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -d 10.244.0.20/32 -p tcp --dport 8080 -j RETURN",
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -j REJECT",
    ]
    assert [x for x in lines if x.startswith("-A LONGSHOT-NETPOL-INGRESS")] == [
        "-A LONGSHOT-NETPOL-INGRESS -d 10.244.0.10/32 -j REJECT"]
    assert "-A LONGSHOT-NETPOL -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT" in lines
    assert not warnings


def test_selectors_and_open_rules():
    assert netpolicy.selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "1"})
    assert not netpolicy.selects({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {})
    assert netpolicy.selects({}, {"x": "y"})
    policy = {"metadata": {"namespace": "n", "name": "p"}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    lines, _ = netpolicy.render([pod("n", "a", "10.0.0.5")], [ns("n")], [policy])
    assert "-A LONGSHOT-NETPOL-EGRESS -s 10.0.0.5/32 -j RETURN" in lines


def test_an_address_in_the_pod_cidr_the_enforcer_has_not_seen_is_refused_until_it_has():
    """Fail closed: a Pod's containers can run before its address is reported; until the enforcer knows the
    Pod (and so its policies), nothing new leaves that address. Known Pods no policy selects go on."""
    policy = {"metadata": {"namespace": "builds", "name": "p"}, "spec": {
        "podSelector": {"matchLabels": AGENT}, "policyTypes": ["Egress"], "egress": []}}
    pods = [pod("builds", "agent", "10.244.0.10", **AGENT), pod("other", "free", "10.244.0.9"),
            pod("other", "pending-no-ip", "", app="x")]
    lines, _ = netpolicy.render(pods, [ns("builds"), ns("other")], [policy], pod_cidrs=["10.244.0.0/24"])
    egress = [x for x in lines if x.startswith("-A LONGSHOT-NETPOL-EGRESS")]
    assert egress == [
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -j REJECT",
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.9/32 -j RETURN",
        "-A LONGSHOT-NETPOL-EGRESS -m addrtype --src-type LOCAL -j RETURN",  # the node's bridge address
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.0/24 -j REJECT",
    ]
    # without a Pod CIDR nothing is refused beyond the policies (the old behaviour, for clusters it cannot read)
    lines, _ = netpolicy.render(pods, [ns("builds"), ns("other")], [policy])
    assert [x for x in lines if x.startswith("-A LONGSHOT-NETPOL-EGRESS")] == [
        "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.10/32 -j REJECT"]
