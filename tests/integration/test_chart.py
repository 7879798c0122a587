"""The Helm chart: lint, render with the cached helm, and let the real API server judge the manifests.

Every rendered object is applied with ``kubectl apply --dry-run=server`` (CRDs first), so schemas,
admission (Pod Security ``restricted`` on the test namespace) and RBAC validation all run for real.
The RBAC objects are also applied for real, and ``kubectl auth can-i`` checks what the operator's
ServiceAccount may and may not do.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "longshot"
KUBE_VERSION = "1.34.4"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def helm(control_plane) -> Callable[..., subprocess.CompletedProcess[str]]:  # type: ignore[no-untyped-def]
    binary = Path(control_plane.bin_dir) / "helm"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check,
                              env={"HOME": str(control_plane.workdir), "PATH": "/usr/bin:/bin",
                                   "HELM_CACHE_HOME": str(control_plane.workdir / "helm-cache"),
                                   "HELM_CONFIG_HOME": str(control_plane.workdir / "helm-config"),
                                   "HELM_DATA_HOME": str(control_plane.workdir / "helm-data")})

    return run


def render(helm, namespace: str, *sets: str, release: str = "ls") -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    args = ["template", release, str(CHART), "--namespace", namespace, f"--kube-version={KUBE_VERSION}"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def service_monitor_crd(control_plane) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Stand-ins for prometheus-operator's ServiceMonitor and PrometheusRule CRDs, so a dry run can judge them."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                 "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    rule = json.loads(json.dumps(crd).replace("servicemonitor", "prometheusrule").replace("ServiceMonitor",
                                                                                          "PrometheusRule"))
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": [crd, rule]}))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
    yield
    control_plane.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com",
                          "prometheusrules.monitoring.coreos.com", "--wait=false", check=False)


def test_helm_lint_passes(helm) -> None:  # type: ignore[no-untyped-def]
    result = helm("lint", "--strict", str(CHART), f"--kube-version={KUBE_VERSION}", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_equal_the_generated_crds() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "crds", generated, shallow=False)
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == generated, "run `make crds`"
    assert not mismatch and not errors, f"charts/longshot/crds differs from crds/ ({mismatch + errors}): " \
                                        "run `make crds`"


def test_chart_prompts_equal_the_packaged_prompts() -> None:
    packaged = ROOT / "operator" / "longshot" / "agent" / "prompts"
    names = sorted(p.name for p in packaged.glob("*.j2"))
    assert sorted(p.name for p in (CHART / "files" / "prompts").glob("*.j2")) == names, "run `make crds`"
    _, mismatch, errors = filecmp.cmpfiles(packaged, CHART / "files" / "prompts", names, shallow=False)
    assert not mismatch and not errors, f"charts/longshot/files/prompts is stale ({mismatch}): run `make crds`"


def test_unknown_values_are_rejected_by_the_schema(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    for key, where in (("replicaCount=3", "additional properties 'replicaCount' not allowed"),
                       ("operator.image.registry=x", "additional properties 'registry' not allowed"),
                       ("networkPolicy.dns.protocol=udp", "additional properties 'protocol' not allowed"),
                       ("gateway.replicaCount=3", "additional properties 'replicaCount' not allowed"),
                       ("gateway.prices.models.m.price=1", "additional properties 'price' not allowed")):
        result = helm("template", "x", str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}",
                      "--set", key, check=False)
        assert result.returncode != 0, f"{key} was accepted"
        assert where in result.stderr, result.stderr
    bad_policy = helm("template", "x", str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}",
                      "--set", "agent.image.pullPolicy=Sometimes", check=False)
    assert bad_policy.returncode != 0 and "pullPolicy" in bad_policy.stderr


@pytest.mark.parametrize("sets", [
    (),
    ("dashboard.enabled=true", "metrics.serviceMonitor.enabled=true", "operator.watchNamespaces={default,kube-public}",
     "prometheusRule.enabled=true", "prometheusRule.labels.release=kube-prometheus-stack",
     "admissionPolicy.imageAllowlist.enabled=true", "admissionPolicy.imageAllowlist.prefixes={registry.example.com/}",
     "leaderElection.leaseNames={longshot-shard-0123456789abcdef,longshot-member-0123456789abcdef}",
     "prompts.overrides.worker\\.j2=Do it.",
     "networkPolicy.extraEgress[0].to[0].ipBlock.cidr=10.0.0.0/8", "networkPolicy.extraEgress[0].ports[0].port=8443",
     "gateway.prices.models.gpt-4o.input=2", "gateway.prices.models.gpt-4o.output=8",
     "operator.podAntiAffinity=hard", "operator.extraEnv[0].name=LONGSHOT_HEARTBEAT_SECONDS",
     "operator.extraEnv[0].value=10", "console.enabled=true"),
    ("podDisruptionBudget.enabled=false", "networkPolicy.enabled=false", "metrics.service.enabled=false",
     "prompts.enabled=false", "serviceAccount.create=false", "rbac.create=false", "admissionPolicy.enabled=false",
     "gateway.enabled=false", "helmTest.enabled=false"),
], ids=["defaults", "everything-on", "everything-off"])
def test_rendered_manifests_pass_server_side_dry_run(helm, kubectl, namespace: str, service_monitor_crd: None,
                                                      sets: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    kubectl("apply", "--server-side", "-f", str(CHART / "crds"))  # CRDs first (already there: a no-op)
    for ns in ("a", "b"):  # operator.watchNamespaces: namespaced Roles go there
        kubectl("create", "namespace", ns, check=False)
    docs = render(helm, namespace, *sets)
    assert docs
    # `helm test` creates the test Pod's ServiceAccount first (hook weight -1): a Pod's dry run needs it to exist
    hook_accounts = [d for d in docs if d["kind"] == "ServiceAccount"
                     and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if hook_accounts:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(hook_accounts))
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert result.returncode == 0, result.stderr
    # the namespace enforces Pod Security "restricted": a violation would be a warning on the Deployment
    assert "PodSecurity" not in result.stderr, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(docs), result.stdout


def test_operator_deployment(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, namespace, "agent.image.tag=dev", "agent.image.pullPolicy=Never", "agent.maxWorkers=7",
                  "metrics.port=9090", "webhook.port=9443", "operator.watchNamespaces={team-a}")
    (deploy,) = [d for d in by_kind(docs, "Deployment")
                 if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    spec = deploy["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert deploy["spec"]["replicas"] == 2
    assert c["args"] == ["operator", "--namespace=team-a"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["LONGSHOT_AGENT_IMAGE"] == "ghcr.io/longshot-dev/longshot-agent:dev"
    assert env["LONGSHOT_IMAGE_PULL_POLICY"] == "Never"
    assert env["LONGSHOT_MAX_WORKERS"] == "7"
    assert env["LONGSHOT_METRICS_PORT"] == "9090"
    assert env["LONGSHOT_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["LONGSHOT_GATEWAY_URL"] == f"http://ls-longshot-gateway.{namespace}.svc:8080"
    assert env["LONGSHOT_WEBHOOK_PORT"] == "9443"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                          {"name": "webhook", "containerPort": 9443, "protocol": "TCP"}]
    # the webhook has its own Service, apart from the metrics Service and the probes
    services = {sv["metadata"]["name"]: sv["spec"] for sv in by_kind(docs, "Service")}
    assert services["ls-longshot-webhook"]["ports"] == [{"name": "webhook", "port": 8081, "targetPort": "webhook",
                                                         "protocol": "TCP"}]
    assert [p["targetPort"] for p in services["ls-longshot-metrics"]["ports"]] == ["metrics"]
    off = render(helm, namespace, "webhook.port=0")
    assert "ls-longshot-webhook" not in {sv["metadata"]["name"] for sv in by_kind(off, "Service")}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsUser"] == 65532
    assert c["resources"]["limits"]["memory"] == "512Mi"


def test_default_images_are_the_release_registry_at_the_charts_app_version(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """With no image values the chart names the release's registry (docs/install.md#install-from-a-registry) at its
    appVersion, so that ``helm install oci://.../longshot --version X`` pulls image X; with the local tiers' values
    it names the images imported into the cluster."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

    def images(*sets: str) -> tuple[str, str, str]:
        docs = by_kind(render(helm, namespace, *sets), "Deployment")
        (op,) = [d for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
        (gw,) = [d for d in docs if d["metadata"]["name"] == "ls-longshot-gateway"]
        (c,) = op["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        return c["image"], gw["spec"]["template"]["spec"]["containers"][0]["image"], env["LONGSHOT_AGENT_IMAGE"]

    assert images() == (f"ghcr.io/longshot-dev/longshot-operator:{app_version}",
                        f"ghcr.io/longshot-dev/longshot-operator:{app_version}",
                        f"ghcr.io/longshot-dev/longshot-agent:{app_version}")
    local = images("operator.image.repository=docker.io/library/longshot-operator", "operator.image.tag=dev",
                   "agent.image.repository=docker.io/library/longshot-agent", "agent.image.tag=dev")
    assert local == ("docker.io/library/longshot-operator:dev", "docker.io/library/longshot-operator:dev",
                     "docker.io/library/longshot-agent:dev")


def test_logging_values_reach_the_operator_and_the_gateway(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """``logging.level`` and ``logging.format`` become LONGSHOT_LOG_LEVEL and LONGSHOT_LOG_FORMAT of both
    Deployments, values the processes accept (``longshot.logs.LogSettings``); the schema refuses any other."""
    from longshot.logs import LogSettings

    def envs(*sets: str) -> dict[str, dict[str, str]]:
        return {d["metadata"]["labels"]["app.kubernetes.io/component"]:
                {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"].startswith("LONGSHOT_LOG_")}
                for d in by_kind(render(helm, namespace, *sets), "Deployment")}

    assert envs() == {c: {"LONGSHOT_LOG_LEVEL": "info", "LONGSHOT_LOG_FORMAT": "text"}
                      for c in ("operator", "gateway")}
    chosen = envs("logging.level=debug", "logging.format=json")
    assert chosen == {c: {"LONGSHOT_LOG_LEVEL": "debug", "LONGSHOT_LOG_FORMAT": "json"}
                      for c in ("operator", "gateway")}
    assert LogSettings.from_env(chosen["gateway"]) == LogSettings(level="debug", format="json")
    for key, value in (("level", "verbose"), ("format", "yaml")):
        refused = helm("template", "ls", str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}",
                       "--set", f"logging.{key}={value}", check=False)
        assert refused.returncode != 0 and f"/logging/{key}" in refused.stderr, refused.stderr


def test_toggles(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    kinds = {d["kind"] for d in render(helm, namespace)}
    assert {"ServiceMonitor"} & kinds == set()
    assert "PodDisruptionBudget" in kinds and "NetworkPolicy" in kinds and "Service" in kinds
    dashboards = [d for d in by_kind(render(helm, namespace), "ConfigMap")
                  if d["metadata"]["name"].endswith("dashboard")]
    assert not dashboards
    docs = render(helm, namespace, "dashboard.enabled=true", "metrics.serviceMonitor.enabled=true",
                  "podDisruptionBudget.enabled=false", "gateway.podDisruptionBudget.enabled=false")
    assert by_kind(docs, "ServiceMonitor")
    assert not by_kind(docs, "PodDisruptionBudget")
    (dash,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dash["data"]["longshot.json"])
    assert board["title"] and board["panels"]


def test_alerts_and_the_gateway_scrape(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    assert not by_kind(render(helm, namespace), "PrometheusRule")
    docs = render(helm, namespace, "metrics.serviceMonitor.enabled=true", "prometheusRule.enabled=true",
                  "prometheusRule.labels.release=prom", "prometheusRule.runbookBaseUrl=https://wiki.example.com/ls/")
    # one ServiceMonitor per Service: the operator's metrics port, and the gateway's /metrics on its http port
    monitors = {m["metadata"]["name"]: m for m in by_kind(docs, "ServiceMonitor")}
    assert sorted(monitors) == ["ls-longshot", "ls-longshot-gateway"]
    gateway_svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "ls-longshot-gateway")
    gw = monitors["ls-longshot-gateway"]["spec"]
    assert gw["selector"]["matchLabels"].items() <= gateway_svc["metadata"]["labels"].items()
    assert gw["endpoints"][0]["port"] in {p["name"] for p in gateway_svc["spec"]["ports"]}
    assert gw["endpoints"][0]["path"] == "/metrics"
    # the PrometheusRule is files/alerts.yaml, its runbook links moved to runbookBaseUrl
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    # and the Down alerts' jobs (spelled there for release longshot in longshot-system) this release's: the
    # Services the ServiceMonitors scrape, whose names prometheus-operator gives the jobs
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    jobs = {}
    for name, monitor in monitors.items():
        (job,) = [n for n, s in services.items()
                  if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
                  and monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in s["spec"]["ports"]}]
        jobs[name] = job
    assert jobs == {"ls-longshot": "ls-longshot-metrics", "ls-longshot-gateway": "ls-longshot-gateway"}
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text()
                             .replace("https://github.com/longshot-dev/longshot/blob/main/docs/runbooks.md",
                                      "https://wiki.example.com/ls")
                             .replace('job="longshot-metrics"', 'job="ls-longshot-metrics"')
                             .replace('job="longshot-gateway"', 'job="ls-longshot-gateway"')
                             .replace('namespace="longshot-system"', f'namespace="{namespace}"'))
    assert rule["spec"] == shipped
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts["LongshotBuildStalled"]["annotations"]["runbook_url"] == \
        "https://wiki.example.com/ls#longshotbuildstalled"
    assert "{{ $labels.reason }}" in alerts["LongshotBuildStalled"]["annotations"]["summary"]
    assert f'up{{job="ls-longshot-metrics", namespace="{namespace}"}}' in alerts["LongshotOperatorDown"]["expr"]
    assert f'up{{job="ls-longshot-gateway", namespace="{namespace}"}}' in alerts["LongshotGatewayDown"]["expr"]
    without_gateway = render(helm, namespace, "metrics.serviceMonitor.enabled=true", "gateway.enabled=false",
                             "prometheusRule.enabled=true")
    assert [m["metadata"]["name"] for m in by_kind(without_gateway, "ServiceMonitor")] == ["ls-longshot"]
    # no gateway, no gateway alerts (LongshotGatewayDown would fire for ever on a job nothing scrapes)
    (rule,) = by_kind(without_gateway, "PrometheusRule")
    kept = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert sorted(set(alerts) - set(kept)) == ["LongshotGatewayDown", "LongshotGatewayErrorRate"]
    # no ServiceMonitor of the chart's, no Down alerts (their jobs would be whatever else scrapes Longshot)
    (rule,) = by_kind(render(helm, namespace, "prometheusRule.enabled=true"), "PrometheusRule")
    kept = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert sorted(set(alerts) - set(kept)) == ["LongshotGatewayDown", "LongshotOperatorDown"]


def test_agent_network_policy_allows_only_the_gateway_and_dns(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, namespace, "networkPolicy.dns.peers[0].ipBlock.cidr=10.244.0.1/32", "gateway.port=8443",
                  "networkPolicy.extraEgress[0].to[0].ipBlock.cidr=10.9.0.0/16",
                  "networkPolicy.extraEgress[0].ports[0].port=3128", f"networkPolicy.namespaces={{{namespace},builds}}")
    # (the operator's and the gateway's own policies: test_chart_egress)
    policies = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-agents")]
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted([namespace, "builds"])
    spec = policies[0]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "agent",
                                                   "app.kubernetes.io/managed-by": "longshot-operator"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    assert spec["egress"] == [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway",
                                                 "app.kubernetes.io/part-of": "longshot"}}}],
         "ports": [{"protocol": "TCP", "port": 8443}]},
        {"to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 3128}]},
    ]
    # the gateway's Pods carry the labels the policy selects, and the operator keeps the same policy
    (gateway,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "gateway" and labels["app.kubernetes.io/part-of"] == "longshot"
    (operator,) = [d for d in by_kind(docs, "Deployment") if not d["metadata"]["name"].endswith("-gateway")]
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["LONGSHOT_AGENT_DNS_PEERS"]) == [{"ipBlock": {"cidr": "10.244.0.1/32"}}]
    assert json.loads(env["LONGSHOT_AGENT_EXTRA_EGRESS"]) == spec["egress"][2:]


def test_gateway_deployment_service_and_prices(helm, namespace: str) -> None:  # type: ignore[no-untyped-def]
    docs = render(helm, namespace, "gateway.prices.models.gpt-4o.input=2", "gateway.prices.models.gpt-4o.output=8",
                  "operator.image.tag=dev")
    (deploy,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "ls-longshot-gateway"]
    assert deploy["spec"]["replicas"] == 2
    spec = deploy["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"] == "ghcr.io/longshot-dev/longshot-operator:dev" and c["args"] == ["gateway"]
    # probes and metrics on their own port, apart from the agents' port
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "metrics": 9090}
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["serviceAccountName"] == "ls-longshot-gateway"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["LONGSHOT_GATEWAY_PRICES_CONFIGMAP"] == "longshot-prices"
    assert env["LONGSHOT_GATEWAY_ALLOW_FILE_URLS"] == "false"
    (svc,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "ls-longshot-gateway"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8080), ("metrics", 9090)]
    netpol = next(d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "ls-longshot-gateway")
    agents = next(r for r in netpol["spec"]["ingress"]
                  if r["from"][0].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                  == "agent")
    assert agents["ports"] == [{"protocol": "TCP", "port": 8080}]  # agents never reach the metrics port
    assert [d for d in by_kind(docs, "PodDisruptionBudget") if d["metadata"]["name"] == "ls-longshot-gateway"]
    (prices,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "longshot-prices"]
    from longshot.gateway import pricing

    table = pricing.PriceTable.parse(prices["data"]["prices.yaml"])
    assert table.lookup("gpt-4o") is not None and table.lookup("gpt-4o").output == 8


@pytest.mark.parametrize("watch", [(), ("team-a",)], ids=["cluster-wide", "watch-namespaces"])
def test_gateway_service_account_is_least_privilege(helm, kubectl, namespace: str, watch) -> None:  # type: ignore[no-untyped-def]
    release = f"gw-{namespace[-6:]}-{len(watch)}"
    sets = [f"operator.watchNamespaces={{{','.join(watch)}}}"] if watch else []
    docs = [d for d in render(helm, namespace, *sets, release=release)
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
            and ("gateway" in d["metadata"]["name"] or d["metadata"]["name"].endswith("-secret-reader"))]
    for ns in watch:
        kubectl("create", "namespace", ns, check=False)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    sa = f"system:serviceaccount:{namespace}:{release}-longshot-gateway"
    try:
        def can(verb: str, resource: str, ns: str | None, subresource: str = "") -> bool:
            args = ["auth", "can-i", verb, resource, f"--as={sa}"]
            args += [f"--subresource={subresource}"] if subresource else []
            args += [f"--namespace={ns}"] if ns else ["--all-namespaces"]
            return kubectl(*args, check=False).stdout.strip() == "yes"

        builds = watch[0] if watch else "team-b"
        allowed = [("create", "tokenreviews.authentication.k8s.io", None), ("get", "pods", builds),
                   ("get", "agenttasks.longshot.dev", builds), ("list", "agenttasks.longshot.dev", builds),
                   ("get", "buildrequests.longshot.dev", builds),
                   ("patch", "agenttasks.longshot.dev", builds, "status"),
                   ("get", "secrets/git-token", builds if watch else namespace), ("create", "events", builds),
                   ("get", "configmaps/longshot-prices", namespace),
                   # the attempt ledger: transcripts into <pod>-ledger (docs/ledger.md)
                   ("create", "configmaps", builds), ("patch", "configmaps/t-a1-ledger", builds),
                   ("get", "configmaps/t-a1-ledger", builds)]
        denied = [("list", "secrets", builds), ("patch", "agenttasks.longshot.dev", builds),
                  ("patch", "buildrequests.longshot.dev", builds, "status"), ("create", "pods", builds),
                  ("delete", "pods", builds), ("list", "configmaps", builds), ("watch", "configmaps", builds),
                  ("delete", "configmaps/t-a1-ledger", builds), ("update", "configmaps/t-a1-ledger", builds),
                  ("create", "serviceaccounts/token", builds, ""), ("create", "agenttasks.longshot.dev", builds)]
        if watch:
            denied += [("get", "secrets/git-token", "elsewhere"), ("get", "pods", "elsewhere"),
                       ("get", "configmaps/other", namespace), ("create", "configmaps", "elsewhere")]
        else:  # like the operator: Secrets only where rbac.secrets.namespaces grants them (the release's)
            denied += [("get", "secrets/git-token", builds)]
        assert [a for a in allowed if not can(*a)] == []
        assert [d for d in denied if can(*d)] == []
    finally:
        kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(docs), check=False)


def test_operator_service_account_is_least_privilege(helm, kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    release = f"rbac-{namespace[-6:]}"
    names = "leaderElection.leaseNames={longshot-shard-0123456789abcdef,longshot-member-0123456789abcdef}"
    rendered = render(helm, namespace, names, release=release)
    # the `helm test` Pod's account is bound to nothing (it only asks API discovery, open to every account)
    bound = {s["name"] for d in rendered if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             for s in d.get("subjects", [])}
    assert f"{release}-longshot-test" not in bound
    docs = [d for d in rendered
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
            and not d["metadata"]["name"].endswith(("-gateway", "-gateway-tokenreview", "-agent-netpol", "-test"))]
    assert len(docs) == 7  # + the secret-reader ClusterRole and its RoleBinding in the release namespace
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    sa = f"system:serviceaccount:{namespace}:{release}-longshot"
    try:
        def can(verb: str, resource: str, ns: str | None = namespace, subresource: str = "") -> bool:
            args = ["auth", "can-i", verb, resource, f"--as={sa}"]
            args += [f"--subresource={subresource}"] if subresource else []
            args += [f"--namespace={ns}"] if ns else ["--all-namespaces"]
            return kubectl(*args, check=False).stdout.strip() == "yes"

        allowed = [("create", "agenttasks.longshot.dev", None), ("patch", "buildrequests.longshot.dev", None, "status"),
                   ("delete", "mergejobs.longshot.dev", None), ("watch", "pods", None), ("create", "pods", "team-a"),
                   ("delete", "pods", "team-a"), ("create", "events", "team-a"), ("list", "events", "team-a"),
                   ("patch", "pods", "team-a"),  # a warm sandbox's claim (docs/warm-pools.md, "Rights")
                   ("get", "configmaps/script", "team-a"),  # the preflight checks spec.agent.script exists
                   # the attempt ledger: an entry's result, and spec.retention.ledger (docs/ledger.md)
                   ("create", "configmaps", "team-a"), ("patch", "configmaps/t-a1-ledger", "team-a"),
                   ("list", "configmaps", "team-a"), ("delete", "configmaps/t-a1-ledger", "team-a"),
                   ("get", "secrets/git-token", namespace), ("get", "configmaps/longshot-killswitch", namespace),
                   ("create", "leases.coordination.k8s.io", namespace),
                   ("list", "leases.coordination.k8s.io", namespace),
                   ("update", "leases.coordination.k8s.io/longshot-shard-0123456789abcdef", namespace),
                   ("update", "leases.coordination.k8s.io/longshot-member-0123456789abcdef", namespace)]
        denied = [("list", "secrets", "team-a"), ("watch", "secrets", None), ("update", "pods", "team-a"),
                  ("get", "secrets/git-token", "team-a"),  # no cluster-wide Secret read (see test_rbac.py)
                  ("create", "pods", "team-a", "exec"),
                  ("get", "pods", "team-a", "log"), ("watch", "configmaps", None),
                  ("update", "configmaps/script", "team-a"), ("watch", "events", None),
                  ("update", "leases.coordination.k8s.io/kube-scheduler", namespace),
                  ("create", "leases.coordination.k8s.io", "team-a"), ("create", "deployments.apps", namespace),
                  ("create", "customresourcedefinitions.apiextensions.k8s.io", None)]
        assert [a for a in allowed if not can(*a)] == []
        assert [d for d in denied if can(*d)] == []
    finally:
        kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(docs), check=False)


def test_dashboard_uses_only_metrics_the_operator_exports() -> None:
    import re

    from longshot import metrics

    exported = set()
    for family in metrics.REGISTRY.collect():
        exported |= {s.name for s in family.samples} | {family.name}
    board = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(longshot_[a-z_]+)", e)}
    assert used, "the dashboard queries no longshot metric"
    assert sorted(used - exported) == [], "dashboard metrics missing from longshot.metrics"
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("tasks by state", "active workers", "queue depth", "merges per minute", "merge duration",
                  "conflicts", "sweeps", "finalization outcomes", "tokens", "cost"):
        assert topic in titles, topic


def test_the_charts_priority_classes_are_what_the_api_server_gives_agent_pods(  # type: ignore[no-untyped-def]
        helm, kubectl, core_v1, namespace: str) -> None:
    """``agent.priorityClasses.create``: the chart's PriorityClasses applied for real, and the operator's settings
    as the chart's Deployment sets them; a worker's and a gate's Pod, built by the operator's own code, get their
    ``spec.priority`` from the API server's Priority admission (a server-side dry run: nothing is scheduled)."""
    from longshot.config import Settings
    from longshot.runtime import pods

    suffix = namespace[-6:]
    worker_class, delivery_class = f"ls-workers-{suffix}", f"ls-delivery-{suffix}"
    docs = render(helm, namespace, "agent.priorityClasses.create=true", f"agent.priorityClassName={worker_class}",
                  f"agent.deliveryPriorityClassName={delivery_class}",
                  "agent.priorityClasses.deliveryPreempts=true")
    classes = by_kind(docs, "PriorityClass")
    assert {c["metadata"]["name"]: (c["value"], c["preemptionPolicy"]) for c in classes} == {
        worker_class: (1000, "Never"), delivery_class: (2000, "PreemptLowerPriority")}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(classes))
    try:
        (deploy,) = [d for d in by_kind(docs, "Deployment")
                     if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
        env = {e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
               if "value" in e}
        settings = Settings(identity="test", namespace=namespace, gateway_url="http://gw:8080",
                            agent_priority_class=env["LONGSHOT_AGENT_PRIORITY_CLASS"],
                            delivery_priority_class=env["LONGSHOT_DELIVERY_PRIORITY_CLASS"])
        b = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
             "metadata": {"name": "b1", "namespace": namespace, "uid": "b-uid"},
             "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"},
                      "agent": {"backend": "scripted"}}}
        got = {}
        for name, labels in (("b1-w", {}), ("b1-gate", {"longshot.dev/purpose": "gate"})):
            t = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                 "metadata": {"name": name, "namespace": namespace, "uid": f"{name}-uid",
                              "labels": {"longshot.dev/build": "b1", **labels}},
                 "spec": {"buildRef": {"name": "b1"}, "description": "d"}}
            pod = pods.build_agent_pod(t, b, settings, 1)
            made = core_v1.create_namespaced_pod(namespace, pod, dry_run="All")
            got[name] = (made.spec.priority_class_name, made.spec.priority, made.spec.preemption_policy)
        assert got == {"b1-w": (worker_class, 1000, "Never"),
                       "b1-gate": (delivery_class, 2000, "PreemptLowerPriority")}
    finally:
        kubectl("delete", "priorityclass", worker_class, delivery_class, "--wait=false", check=False)


def test_console_is_off_by_default_and_least_privilege_when_on(helm, kubectl, namespace: str) -> None:  # type: ignore[no-untyped-def]
    assert not [d for d in render(helm, namespace) if "console" in d["metadata"]["name"]]
    release = f"con-{namespace[-6:]}"
    docs = render(helm, namespace, "console.enabled=true", "console.allowedFrom[0].namespaceSelector.matchLabels.x=y",
                  release=release)
    name = f"{release}-longshot-console"
    (deploy,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == name]
    spec = deploy["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["console"] and spec["serviceAccountName"] == name
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (svc,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == name]
    assert svc["spec"]["type"] == "ClusterIP"
    # people reach it from console.allowedFrom only; it reaches DNS and the API server only
    (policy,) = [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == name]
    assert policy["spec"]["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {"x": "y"}}}],
                                          "ports": [{"protocol": "TCP", "port": 8080}]}]
    assert all({p["port"] for p in rule["ports"]} <= {53, 443, 6443} for rule in policy["spec"]["egress"])
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                             "RoleBinding") and d["metadata"]["name"] == name]
    assert sorted(d["kind"] for d in rbac) == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = f"system:serviceaccount:{namespace}:{name}"
    try:
        def can(verb: str, resource: str, ns: str | None = "team-a") -> bool:
            args = ["auth", "can-i", verb, resource, f"--as={sa}"]
            args += [f"--namespace={ns}"] if ns else ["--all-namespaces"]
            return kubectl(*args, check=False).stdout.strip() == "yes"

        allowed = [("list", "buildrequests.longshot.dev", None), ("watch", "agenttasks.longshot.dev", None),
                   ("list", "mergejobs.longshot.dev", "team-a")]
        denied = [("get", "secrets", "team-a"), ("list", "secrets", None), ("get", "pods", "team-a"),
                  ("get", "pods", "team-a"), ("create", "pods/exec", "team-a"), ("get", "configmaps", "team-a"),
                  ("patch", "agenttasks.longshot.dev", "team-a"), ("patch", "buildrequests.longshot.dev", "team-a"),
                  ("create", "mergejobs.longshot.dev", "team-a"),
                  ("create", "tokenreviews.authentication.k8s.io", None),
                  ("create", "subjectaccessreviews.authorization.k8s.io", None),
                  ("impersonate", "users", None), ("impersonate", "serviceaccounts", "team-a")]
        assert [a for a in allowed if not can(*a)] == []
        assert [d for d in denied if can(*d)] == []
    finally:
        kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(rbac), check=False)
