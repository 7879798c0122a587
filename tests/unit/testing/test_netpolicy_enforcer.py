from __future__ import annotations

import pytest

from longshot.config import Settings
from longshot.runtime import netpol
from longshot_testing import netpolicy

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


def evaluate(lines, src, dst, port, proto="tcp", local=()):
    """What the rendered chains do with a new connection ``src -> dst:port``: "accept" (the chain returns to
    its hook) or "reject". A small interpreter of the rules render() writes, so the semantics can be asserted
    without iptables."""
    import ipaddress

    chains: dict[str, list[list[str]]] = {}
    for line in lines:
        if line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            words = line.split()
            chains[words[1]].append(words[2:])
    mark = 0

    def matches(words):
        i = 0
        while i < len(words) and words[i] != "-j":
            w = words[i]
            if w in ("-s", "-d"):
                addr = src if w == "-s" else dst
                if ipaddress.ip_address(addr) not in ipaddress.ip_network(words[i + 1]):
                    return False
                i += 2
            elif w == "-p":
                if words[i + 1] != proto:
                    return False
                i += 2
            elif w == "--dport":
                lo, _, hi = words[i + 1].partition(":")
                if not int(lo) <= port <= int(hi or lo):
                    return False
                i += 2
            elif w == "-m" and words[i + 1] == "conntrack":
                return False  # a new connection: never ESTABLISHED
            elif w == "-m" and words[i + 1] == "addrtype":
                if src not in local:
                    return False
                i += 4
            elif w == "-m" and words[i + 1] == "mark":
                value, mask = (int(x, 16) for x in words[i + 3].split("/"))
                if mark & mask != value:
                    return False
                i += 4
            else:
                raise AssertionError(f"unknown match {w} in {words}")
        return True

    def run(chain):
        nonlocal mark
        for words in chains[chain]:
            if not matches(words):
                continue
            target = words[words.index("-j") + 1]
            if target == "RETURN":
                return None
            if target in ("REJECT", "ACCEPT"):
                return target.lower()
            if target == "MARK":
                value, mask = (int(x, 16) for x in words[words.index("--set-xmark") + 1].split("/"))
                mark = (mark & ~mask) ^ value
                continue
            verdict = run(target)
            if verdict:
                return verdict
        return None

    return run(netpolicy.CHAIN) or "accept"


def system_policy(**extra):
    """The chart's gateway egress policy, in short: DNS, the API server's ports anywhere, an allowedCIDR, and
    everything outside the denied ranges (``ipBlock.except``), IPv6 included."""
    return {"metadata": {"namespace": "longshot-system", "name": "gw"}, "spec": {
        "podSelector": {"matchLabels": GATEWAY}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}], "ports": [{"protocol": "UDP", "port": 53},
                                                                      {"protocol": "TCP", "port": 53}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 6443}]},
            {"to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
                "169.254.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}}]},
            *extra.get("egress", [])]}}


def test_an_except_range_is_refused_unless_another_peer_allows_it():
    pods = [pod("longshot-system", "gw", "10.244.0.20", **GATEWAY), pod("builds", "web", "10.244.0.30")]
    lines, warnings = netpolicy.render(pods, [ns("builds"), ns("longshot-system")], [system_policy()],
                                       pod_cidrs=["10.244.0.0/24"])
    assert not warnings
    sub = "LONGSHOT-NETPOL-X0"
    assert len(sub) <= 28
    assert f":{sub} - [0:0]" in lines and f"-F {sub}" in lines
    assert [x for x in lines if x.startswith(f"-A {sub} ")] == [
        f"-A {sub} -j MARK --set-xmark 0x0/0x100000",
        f"-A {sub} -d 10.0.0.0/8 -j RETURN", f"-A {sub} -d 127.0.0.0/8 -j RETURN",
        f"-A {sub} -d 169.254.0.0/16 -j RETURN", f"-A {sub} -d 172.16.0.0/12 -j RETURN",
        f"-A {sub} -d 192.168.0.0/16 -j RETURN", f"-A {sub} -j MARK --set-xmark 0x100000/0x100000"]
    egress = [x for x in lines if x.startswith("-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.20/32")]
    assert f"-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.20/32 -d 0.0.0.0/0 -j {sub}" in egress
    assert ("-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.20/32 -d 0.0.0.0/0 -m mark --mark 0x100000/0x100000 -j RETURN"
            in egress)
    assert "-A LONGSHOT-NETPOL-EGRESS -s 10.244.0.20/32 -d 0.0.0.0/0 -j RETURN" not in egress
    assert not [x for x in lines if "::" in x or "fc00" in x]  # IPv6 blocks: not for iptables

    gw = "10.244.0.20"
    assert evaluate(lines, gw, "169.254.169.254", 80) == "reject"  # the metadata address
    assert evaluate(lines, gw, "192.168.1.10", 22) == "reject"  # the node network
    assert evaluate(lines, gw, "10.244.0.30", 8000) == "reject"  # another Pod
    assert evaluate(lines, gw, "8.8.8.8", 443) == "accept"
    assert evaluate(lines, gw, "10.244.0.1", 3000) == "accept"  # the allowedCIDR inside 10/8: its own peer
    assert evaluate(lines, gw, "10.244.0.1", 53, proto="udp") == "accept"
    assert evaluate(lines, gw, "172.18.0.2", 6443) == "accept"  # the API server's port, by another rule
    assert evaluate(lines, gw, "172.18.0.2", 6444) == "reject"
    # a Pod no policy selects is not restricted, and the except's allow does not leak into its decision
    assert evaluate(lines, "10.244.0.30", "169.254.169.254", 80) == "accept"


def test_an_except_in_an_ingress_peer_and_an_allow_by_another_policy():
    ingress = {"metadata": {"namespace": "builds", "name": "in"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/24"]}}]}]}}
    other = {"metadata": {"namespace": "longshot-system", "name": "z"}, "spec": {
        "podSelector": {"matchLabels": GATEWAY}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 8000}]}]}}
    pods = [pod("longshot-system", "gw", "10.244.0.20", **GATEWAY), pod("builds", "web", "10.244.0.30")]
    namespaces = [ns("builds"), ns("longshot-system")]
    lines, _ = netpolicy.render(pods, namespaces, [system_policy(), ingress])
    # two sub-chains: the egress excepts (-d) and the ingress ones (-s)
    assert sorted(x for x in lines if x.startswith(":LONGSHOT-NETPOL-X")) == [
        ":LONGSHOT-NETPOL-X0 - [0:0]", ":LONGSHOT-NETPOL-X1 - [0:0]"]
    assert "-A LONGSHOT-NETPOL-X1 -s 10.244.0.0/24 -j RETURN" in lines
    # the web Pod accepts from 10/8 except the Pod range: not from the gateway, from a node address
    assert evaluate(lines, "10.1.2.3", "10.244.0.30", 8000) == "accept"
    assert evaluate(lines, "10.244.0.21", "10.244.0.30", 8000) == "reject"
    # the gateway's egress to the web Pod: allowed by the second policy, then refused by the web Pod's ingress;
    # the egress decision's mark does not make the ingress one allow
    lines, _ = netpolicy.render(pods, namespaces, [system_policy(), other, ingress])
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8000) == "reject"
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8001) == "reject"
    lines, _ = netpolicy.render(pods, namespaces, [system_policy(), other])
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8000) == "accept"  # the union of the policies
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8001) == "reject"
    # an egress allowed through an except sub-chain (marked), to a Pod whose ingress excepts the source
    pods_egress = {"metadata": {"namespace": "longshot-system", "name": "p"}, "spec": {
        "podSelector": {"matchLabels": GATEWAY}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/24", "except": ["10.244.0.1/32"]}}]}]}}
    lines, _ = netpolicy.render(pods, namespaces, [pods_egress])
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8000) == "accept"
    assert evaluate(lines, "10.244.0.20", "10.244.0.1", 8000) == "reject"
    lines, _ = netpolicy.render(pods, namespaces, [pods_egress, ingress])
    assert evaluate(lines, "10.244.0.20", "10.244.0.30", 8000) == "reject"
