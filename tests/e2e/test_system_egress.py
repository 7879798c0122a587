"""The chart's egress NetworkPolicies of the operator and longshot-gateway on a real cluster: from inside
their Pods the metadata address and the cluster's own Pods (private ranges, the policy's ``ipBlock.except``)
are refused, while DNS, the API server (through its Service) and the git server listed in
``egress.allow`` answer."""

from __future__ import annotations

import json
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest

from longshot_testing import cluster as lc

from .conftest import (
    LISTENER_PORT,
    SYSTEM_NS,
    apply,
    host_connects,
    host_reaches_pods,
    is_kind,
    kget,
    listener_pod,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROBE = """\
import json, socket
out = {}
try:
    out["dns"] = socket.getaddrinfo(%(api)r, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
except OSError as e:
    out["dns"] = type(e).__name__
for name, host, port in %(targets)r:
    try:
        socket.create_connection((host, port), 3).close()
        out[name] = "open"
    except OSError as e:
        out[name] = type(e).__name__
print(json.dumps(out))
"""


def component_pod(kubectl, component: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    pods = kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", f"app.kubernetes.io/component={component}") or {}
    running = [p for p in pods.get("items", [])
               if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert running, f"no running {component} Pod in {SYSTEM_NS}: {pods}"
    return running[0]  # type: ignore[no-any-return]


def iptables_rules() -> str | None:
    """``iptables -S`` of this host (the local cluster's node), None where it cannot be read (not root)."""
    result = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


@pytest.mark.parametrize("component", ["gateway", "operator"])
def test_the_system_pods_reach_dns_the_api_server_and_the_git_server_and_no_private_address(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, component: str) -> None:
    host_reaches_pods(cluster, "probes a Pod's address from the host")
    enforcer = cluster.start_network_policies()
    policies = (kget(kubectl, "-n", SYSTEM_NS, "networkpolicies") or {}).get("items", [])
    excepts = [peer["ipBlock"]["except"] for p in policies
               if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == component
               for rule in p["spec"].get("egress") or [] for peer in rule.get("to") or []
               if peer.get("ipBlock", {}).get("except")]
    assert excepts, f"no {component} egress policy with ipBlock.except (egress.networkPolicy.enabled): {policies}"

    system_pod = component_pod(kubectl, component)
    image = system_pod["spec"]["containers"][0]["image"]
    apply(kubectl, namespace, listener_pod(image))
    pod = wait_for(lambda: ((p := kget(kubectl, "-n", namespace, "pod", "listener")) or {}).get("status", {})
                   .get("podIP") and p, 120, "the listener Pod's address")
    ip = pod["status"]["podIP"]
    # reachable without the Pod's policy: the neighbour listens (so a refusal below is the policy's)
    wait_for(lambda: host_connects(ip, LISTENER_PORT), 120, f"the listener on {ip}:{LISTENER_PORT}")

    api = f"kubernetes.default.svc.{lc.CLUSTER_DOMAIN}"
    git = urlsplit(cluster.git_url)  # the local cluster's forge on its bridge, or kind's git daemon
    targets = [
        # the cloud metadata address: link-local, always denied (nothing listens here; the REJECT answers)
        ("metadata", "169.254.169.254", 80),
        # a neighbour Pod in the Pod range (inside 10.0.0.0/8, a denied private range), which listens: only
        # the policy's except refuses it. (The node's own services all listen on the bridge address, which the
        # e2e values list in egress.allow as the git server; the API server's ports are allowed to any
        # address by egress.networkPolicy.apiServer; so a neighbour Pod is the reachable denied address.)
        ("neighbour", ip, LISTENER_PORT),
        # the API server through its Service (DNAT to its endpoint, allowed by the apiServer rule)
        ("apiserver", api, 443),
        ("forge", git.hostname, git.port),  # in egress.allow (git, forge): allowed though in a private range
    ]
    script = PROBE % {"api": api, "targets": targets}

    def probe() -> dict[str, str]:
        result = kubectl("-n", SYSTEM_NS, "exec", system_pod["metadata"]["name"], "-c", component, "--",
                         "python", "-c", script, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        seen: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
        return seen

    if not enforcer.get("enforcer"):
        pytest.skip(f"NetworkPolicy is not enforced on this cluster: {enforcer}; the {component} saw {probe()}")
    if enforcer["enforcer"] == "longshot_testing.netpolicy" and not is_kind(cluster) and iptables_rules() is not None:
        # the chart's except ranges become sub-chains; an enforcer started from code older than that (a kept
        # cluster) allows the whole 0.0.0.0/0: restart it (stop the cluster's netpolicy process)
        wait_for(lambda: "-N LONGSHOT-NETPOL-X" in (iptables_rules() or ""), 30,
                 "the enforcer's ipBlock.except sub-chains (an enforcer running older code must be restarted)")

    # the enforcer programs the listener's and the Pod's addresses within moments of their reports
    seen = wait_for(lambda: (s := probe())["neighbour"] != "open" and s, 60,
                    f"the {component}'s policy refusing the neighbour Pod")
    netpolicy_log = cluster.logs / "netpolicy.log"
    tail = netpolicy_log.read_text(errors="replace")[-2000:] if netpolicy_log.exists() else "(no netpolicy.log)"
    why = f"the {component} saw {seen}; enforcer {enforcer}; netpolicy.log:\n{tail}"
    assert seen["metadata"] == "ConnectionRefusedError", why  # the REJECT's ICMP answer
    assert seen["neighbour"] == "ConnectionRefusedError", why
    assert seen["dns"] == lc.KUBERNETES_SERVICE_IP, why
    assert seen["apiserver"] == "open", why
    assert seen["forge"] == "open", why
