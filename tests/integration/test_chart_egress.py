"""The chart's egress settings: the policy's values reach the operator and the gateway, and their NetworkPolicies
(egress: DNS, the API server, the allowed ranges and everything outside the denied ones; gateway ingress: agent
Pods and Prometheus) are what the values say and what the real API server accepts."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import of_kinds, render

from longshot.config import Settings
from longshot.core import egress
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration
CHART = Path(__file__).resolve().parents[2] / "charts" / "longshot"


def _env(deploy: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


ALLOW = ('egress.allow=[{"cidr": "10.1.2.0/24", "purposes": ["git", "forge"], "ports": [3000]}, '
         '{"cidr": "fd00:1::/64", "purposes": ["model"], "ports": [8000]}, '
         '{"host": "models.corp.example", "purposes": ["model"], "ports": [443]}, '
         '{"cidr": "10.9.0.0/16", "purposes": ["mcp"], "ports": [8765]}]')
"""A git server's range (git and forge on its port), an in-cluster model range, a named model host and a team's MCP
servers' range."""


def _deployments(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deploys = of_kinds(docs, "Deployment")
    (gateway,) = [d for d in deploys if d["metadata"]["name"].endswith("-gateway")]
    (operator,) = [d for d in deploys if not d["metadata"]["name"].endswith("-gateway")]
    return operator, gateway


def test_the_egress_values_become_the_same_policy_in_the_operator_and_the_gateway(control_plane: Any,
                                                                                  namespace: str) -> None:
    docs = render(control_plane, namespace, "egress.allowedHosts={github.com,*.corp.example}",
                  "egress.clusterCIDRs={10.244.0.0/16,10.96.0.0/12}", "egress.deniedCIDRs={192.168.0.0/16}",
                  json_sets=[ALLOW])
    operator, gateway = _deployments(docs)
    op = Settings.from_env(_env(operator)).egress_policy()
    gw = GatewaySettings.from_env(_env(gateway)).egress_policy()
    assert op.allowed_hosts == gw.allowed_hosts == ("github.com", "*.corp.example")
    assert op.allowed_cidrs == gw.allowed_cidrs == ()
    assert op.allow == gw.allow == (
        egress.Entry(frozenset({"git", "forge"}), frozenset({3000}), cidr=ipaddress.ip_network("10.1.2.0/24")),
        egress.Entry(frozenset({"model"}), frozenset({8000}), cidr=ipaddress.ip_network("fd00:1::/64")),
        egress.Entry(frozenset({"model"}), frozenset({443}), host="models.corp.example"),
        egress.Entry(frozenset({"mcp"}), frozenset({8765}), cidr=ipaddress.ip_network("10.9.0.0/16")))
    assert [str(n) for n in gw.cluster_cidrs] == ["10.244.0.0/16", "10.96.0.0/12"] == [str(n) for n in
                                                                                      op.cluster_cidrs]
    assert [str(n) for n in gw.denied_cidrs] == ["192.168.0.0/16"] == [str(n) for n in op.denied_cidrs]
    assert not op.allow_file and not gw.allow_file
    assert not gw.check("http://10.96.0.10/", purpose="git").allowed
    assert gw.check("http://10.1.2.3:3000/", purpose="git").allowed
    assert gw.check("http://10.1.2.3:3000/", purpose="model").rule == "purpose-not-allowed"


def test_the_default_values_are_the_built_in_policy(control_plane: Any, namespace: str) -> None:
    operator, gateway = _deployments(render(control_plane, namespace))
    for policy in (Settings.from_env(_env(operator)).egress_policy(),
                   GatewaySettings.from_env(_env(gateway)).egress_policy()):
        assert policy.allowed_hosts == ("*",) and policy.allowed_cidrs == () and policy.cluster_cidrs == ()
        assert [str(n) for n in policy.denied_cidrs] == list(egress.DEFAULT_DENIED_CIDRS)
    # an empty list is an empty list, not the default
    operator, gateway = _deployments(render(control_plane, namespace, "egress.deniedCIDRs=null"))
    assert GatewaySettings.from_env(_env(gateway)).egress_policy().denied_cidrs == ()


def test_operator_and_gateway_network_policies(control_plane: Any, kubectl: Any, namespace: str) -> None:
    docs = render(control_plane, namespace, "egress.clusterCIDRs={10.244.0.0/16}",
                  "networkPolicy.dns.peers[0].ipBlock.cidr=10.96.0.10/32", "gateway.port=8443",
                  "webhook.allowedFrom[0].namespaceSelector.matchLabels.name=ingress", json_sets=[ALLOW])
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kinds(docs, "NetworkPolicy")
                if p["metadata"]["namespace"] == namespace and not p["metadata"]["name"].endswith("-agents")}
    assert sorted(policies) == ["ls-longshot-gateway", "ls-longshot-operator"]
    op, gw = policies["ls-longshot-operator"], policies["ls-longshot-gateway"]
    assert op["policyTypes"] == gw["policyTypes"] == ["Ingress", "Egress"]
    # the operator: its metrics port from anywhere in the cluster, its webhook port from webhook.allowedFrom, nothing
    # else
    assert op["ingress"] == [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]},
                             {"from": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
                              "ports": [{"protocol": "TCP", "port": 8081}]}]
    assert op["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert gw["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    agents, prometheus = gw["ingress"]
    assert agents == {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "agent", "app.kubernetes.io/managed-by": "longshot-operator"}}}],
        "ports": [{"protocol": "TCP", "port": 8443}]}
    assert prometheus["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    # each component reaches the allow entries' ranges of its purposes, on their ports: the operator the git
    # server (git, forge), the gateway the git server, the model range and the MCP servers' range
    git = {"to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}], "ports": [{"protocol": "TCP", "port": 3000}]}
    model = {"to": [{"ipBlock": {"cidr": "fd00:1::/64"}}], "ports": [{"protocol": "TCP", "port": 8000}]}
    mcp = {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8765}]}
    for spec, allowed in ((op, [git]), (gw, [git, model, mcp])):
        dns, api, *ranges, anywhere = spec["egress"]
        assert dns["to"] == [{"ipBlock": {"cidr": "10.96.0.10/32"}}] and dns["ports"][0]["port"] == 53
        assert [p["port"] for p in api["ports"]] == [443, 6443]
        assert ranges == allowed
        v4, v6 = anywhere["to"]
        assert v4["ipBlock"]["cidr"] == "0.0.0.0/0" and v6["ipBlock"]["cidr"] == "::/0"
        for cidr in ("169.254.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "10.244.0.0/16"):
            assert cidr in v4["ipBlock"]["except"]
        assert "fc00::/7" in v6["ipBlock"]["except"] and "fe80::/10" in v6["ipBlock"]["except"]
        assert {cidr for cidr, _ in egress.ALWAYS_DENIED} <= set(v4["ipBlock"]["except"] + v6["ipBlock"]["except"])
        assert all(":" not in c for c in v4["ipBlock"]["except"]) and all(":" in c for c in v6["ipBlock"]["except"])
    # the real API server accepts them (an except outside its block, or of the other family, is refused)
    applied = kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", check=False,
                      input=yaml.safe_dump_all([p for p in of_kinds(docs, "NetworkPolicy")
                                                if p["metadata"]["namespace"] == namespace]))
    assert applied.returncode == 0, applied.stderr
    off = render(control_plane, namespace, "egress.networkPolicy.enabled=false")
    assert [p["metadata"]["name"] for p in of_kinds(off, "NetworkPolicy")] == ["ls-longshot-agents"]


def _template(control_plane: Any, *args: str) -> subprocess.CompletedProcess[str]:
    helm = Path(control_plane.bin_dir) / "helm"
    workdir = Path(control_plane.workdir)
    return subprocess.run([str(helm), "template", "x", str(CHART), *args],
                          capture_output=True, text=True, check=False,
                          env={"HOME": str(workdir), "PATH": "/usr/bin:/bin",
                               "HELM_CACHE_HOME": str(workdir / "helm-cache"),
                               "HELM_CONFIG_HOME": str(workdir / "helm-config"),
                               "HELM_DATA_HOME": str(workdir / "helm-data")})


def test_a_malformed_cidr_is_refused_by_the_values_schema(control_plane: Any, namespace: str) -> None:
    result = _template(control_plane, "--set-json", 'egress.allow=[{"cidr": "10.0.0.0", "purposes": ["git"], '
                                                    '"ports": [443]}]')
    assert result.returncode != 0 and "/egress/allow/0/cidr" in result.stderr, result.stderr
    for entry in ('{"cidr": "10.0.0.0/8", "ports": [443]}', '{"cidr": "10.0.0.0/8", "purposes": ["llm"], '
                  '"ports": [443]}', '{"cidr": "10.0.0.0/8", "purposes": ["git"]}',
                  '{"host": "a.io", "cidr": "10.0.0.0/8", "purposes": ["git"], "ports": [443]}'):
        result = _template(control_plane, "--set-json", f"egress.allow=[{entry}]")
        assert result.returncode != 0 and "/egress/allow/0" in result.stderr, (entry, result.stderr)


def test_a_range_without_a_purpose_is_refused_with_the_way_to_say_it(control_plane: Any, namespace: str) -> None:
    result = _template(control_plane, "--set", "egress.allowedCIDRs={10.244.0.1/32}")
    assert result.returncode != 0, result.stdout[:200]
    assert ("egress.allowedCIDRs [10.244.0.1/32]: a range must say what it is for and on which ports; move each one "
            "to egress.allow as {cidr: <range>, purposes: [git], ports: [<port>]}") in result.stderr, result.stderr


def test_the_admission_policy_lists_the_values(control_plane: Any, namespace: str) -> None:
    docs = render(control_plane, namespace, "egress.allowedHosts={github.com}", "egress.clusterCIDRs={10.96.0.0/12}",
                  json_sets=[ALLOW])
    (vap,) = [d for d in of_kinds(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-egress")]
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    assert json.loads(variables["hostRules"]) == [
        "model|443|models.corp.example",
        *(f"{purpose}|{port}|github.com" for purpose in egress.PURPOSES for port in (80, 443, 22, 9418))]
    assert json.loads(variables["cidrRules"]) == ["git|3000|10.1.2.0/24", "forge|3000|10.1.2.0/24",
                                                  "model|8000|fd00:1::/64", "mcp|8765|10.9.0.0/16"]
    always = {cidr for cidr, _ in egress.ALWAYS_DENIED}
    assert set(json.loads(variables["hardDenied"])) == always | {"10.96.0.0/12"}
    assert [v["messageExpression"].split(":")[0].strip("'") for v in vap["spec"]["validations"]] == [
        "spec.repository.url", "spec.agent.baseUrl", "spec.planner.issues.url", "spec.intake.tracker.url",
        "spec.merge.pullRequest.apiUrl"]
    off = render(control_plane, namespace, "egress.admission=false")
    assert not [d for d in of_kinds(off, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-egress")]


PROXY_ALLOW = 'egress.allow=[{"cidr": "10.20.0.9/32", "purposes": ["proxy"], "ports": [3128]}]'


def test_the_proxy_values_become_settings_and_network_policy_peers(control_plane: Any, kubectl: Any,
                                                                   namespace: str) -> None:
    peers = 'egress.proxy.peers=[{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "squid"}}}]'
    docs = render(control_plane, namespace, "egress.proxy.url=http://10.20.0.9:3128",
                  json_sets=[PROXY_ALLOW, 'egress.proxy.noProxy=["git.corp", ".internal", "10.0.0.0/8"]', peers])
    operator, gateway = _deployments(docs)
    op, gw = Settings.from_env(_env(operator)).proxies(), GatewaySettings.from_env(_env(gateway)).proxies()
    assert op == gw and op.urls == ("http://10.20.0.9:3128",) and op.no_proxy == ("git.corp", "internal", "10.0.0.0/8")
    assert not {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} & (set(_env(operator)) | set(_env(gateway)))
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kinds(docs, "NetworkPolicy")
                if p["metadata"]["namespace"] == namespace and not p["metadata"]["name"].endswith("-agents")}
    port = [{"protocol": "TCP", "port": 3128}]
    for spec in policies.values():
        # the proxy's allow entry is an explicit peer on its port, and so are egress.proxy.peers
        assert {"to": [{"ipBlock": {"cidr": "10.20.0.9/32"}}], "ports": port} in spec["egress"]
        assert {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "squid"}}}],
                "ports": port} in spec["egress"]
    applied = kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", check=False,
                      input=yaml.safe_dump_all([p for p in of_kinds(docs, "NetworkPolicy")
                                                if p["metadata"]["namespace"] == namespace]))
    assert applied.returncode == 0, applied.stderr
    operator, gateway = _deployments(render(control_plane, namespace))
    assert Settings.from_env(_env(operator)).proxies().urls == GatewaySettings.from_env(_env(gateway)).proxies().urls \
        == ()


def test_a_proxy_off_the_allowlist_or_with_credentials_is_refused(control_plane: Any, namespace: str) -> None:
    result = _template(control_plane, "--set", "egress.proxy.url=http://10.20.0.9:3128")
    assert result.returncode != 0 and "the proxy must be in the allowlist explicitly" in result.stderr, result.stderr
    for url in ("http://user:hunter2@10.20.0.9:3128", "http://10.20.0.9", "socks5://10.20.0.9:1080"):
        result = _template(control_plane, "--set", f"egress.proxy.url={url}", "--set-json", PROXY_ALLOW)
        assert result.returncode != 0 and "/egress/proxy/url" in result.stderr, (url, result.stderr)
