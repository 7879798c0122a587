"""The chart's egress settings: the policy's values reach the operator and the gateway, and their NetworkPolicies
(egress: DNS, the API server, the allowed ranges and everything outside the denied ones; gateway ingress: agent
Pods and Prometheus) are what the values say and what the real API server accepts."""

from __future__ import annotations

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


def _deployments(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deploys = of_kinds(docs, "Deployment")
    (gateway,) = [d for d in deploys if d["metadata"]["name"].endswith("-gateway")]
    (operator,) = [d for d in deploys if not d["metadata"]["name"].endswith("-gateway")]
    return operator, gateway


def test_the_egress_values_become_the_same_policy_in_the_operator_and_the_gateway(control_plane: Any,
                                                                                  namespace: str) -> None:
    docs = render(control_plane, namespace, "egress.allowedHosts={github.com,*.corp.example}",
                  "egress.allowedCIDRs={10.1.2.0/24}", "egress.clusterCIDRs={10.244.0.0/16,10.96.0.0/12}",
                  "egress.deniedCIDRs={192.168.0.0/16}")
    operator, gateway = _deployments(docs)
    op = Settings.from_env(_env(operator)).egress_policy()
    gw = GatewaySettings.from_env(_env(gateway)).egress_policy()
    assert op.allowed_hosts == gw.allowed_hosts == ("github.com", "*.corp.example")
    assert op.allowed_cidrs == gw.allowed_cidrs and [str(n) for n in op.allowed_cidrs] == ["10.1.2.0/24"]
    assert [str(n) for n in gw.cluster_cidrs] == ["10.244.0.0/16", "10.96.0.0/12"] == [str(n) for n in
                                                                                      op.cluster_cidrs]
    assert [str(n) for n in gw.denied_cidrs] == ["192.168.0.0/16"] == [str(n) for n in op.denied_cidrs]
    assert not op.allow_file and not gw.allow_file
    assert not gw.check("http://10.96.0.10/").allowed and gw.check("http://10.1.2.3/").allowed


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
    docs = render(control_plane, namespace, "egress.allowedCIDRs={10.1.2.0/24,fd00:1::/64}",
                  "egress.clusterCIDRs={10.244.0.0/16}", "networkPolicy.dns.peers[0].ipBlock.cidr=10.96.0.10/32",
                  "gateway.port=8443", "webhook.allowedFrom[0].namespaceSelector.matchLabels.name=ingress")
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
    for spec in (op, gw):
        dns, api, allowed, anywhere = spec["egress"]
        assert dns["to"] == [{"ipBlock": {"cidr": "10.96.0.10/32"}}] and dns["ports"][0]["port"] == 53
        assert [p["port"] for p in api["ports"]] == [443, 6443]
        assert allowed == {"to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}, {"ipBlock": {"cidr": "fd00:1::/64"}}]}
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


def test_a_malformed_cidr_is_refused_by_the_values_schema(control_plane: Any, namespace: str) -> None:
    helm = Path(control_plane.bin_dir) / "helm"
    workdir = Path(control_plane.workdir)
    result = subprocess.run([str(helm), "template", "x", str(CHART), "--set", "egress.allowedCIDRs={10.0.0.0}"],
                            capture_output=True, text=True, check=False,
                            env={"HOME": str(workdir), "PATH": "/usr/bin:/bin",
                                 "HELM_CACHE_HOME": str(workdir / "helm-cache"),
                                 "HELM_CONFIG_HOME": str(workdir / "helm-config"),
                                 "HELM_DATA_HOME": str(workdir / "helm-data")})
    assert result.returncode != 0 and "allowedCIDRs" in result.stderr, result.stderr


def test_the_admission_policy_lists_the_values(control_plane: Any, namespace: str) -> None:
    docs = render(control_plane, namespace, "egress.allowedHosts={github.com}", "egress.clusterCIDRs={10.96.0.0/12}")
    (vap,) = [d for d in of_kinds(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-egress")]
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    assert json.loads(variables["hosts"]) == ["github.com"]
    always = {cidr for cidr, _ in egress.ALWAYS_DENIED}
    assert set(json.loads(variables["hardDenied"])) == always | {"10.96.0.0/12"}
    assert [v["messageExpression"].split(":")[0].strip("'") for v in vap["spec"]["validations"]] == [
        "spec.repository.url", "spec.agent.baseUrl", "spec.planner.issues.url", "spec.intake.tracker.url",
        "spec.merge.pullRequest.apiUrl"]
    off = render(control_plane, namespace, "egress.admission=false")
    assert not [d for d in of_kinds(off, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-egress")]
