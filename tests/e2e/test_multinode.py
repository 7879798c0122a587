"""Longshot on three nodes (issue 33): ``LONGSHOT_E2E_CLUSTER=kind LONGSHOT_KIND_NODES=3``, the kind cluster of
``hack/kind/cluster-3.yaml`` (one control plane, two workers; Pod network and NetworkPolicy enforcement as
``tests/e2e/kind.py`` sets them up). Skipped on any cluster with fewer than three nodes.

The operator and longshot-gateway are placed on the control-plane node (a nodeSelector and a toleration of its
taint in the Helm values); agent Pods tolerate nothing, so every one of them runs on a worker and every call
it makes to the gateway crosses nodes.

- one build of four parallel tasks has agent Pods on both workers, and its merged result on main is complete;
- an agent Pod (a hostile script) reaches the gateway on another node and DNS, and nothing else: not a Pod on
  the other worker (which a Pod without the agent labels does reach, so the network is there and the policy
  is what refuses), not the API server, not the metadata address, not its own node.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    SYSTEM_NS,
    apply,
    build_request,
    install_chart,
    install_operator,
    is_kind,
    kget,
    script_configmap,
    wait_for,
)
from .test_build import condition
from .test_hostile import verdicts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

AGENT = "app.kubernetes.io/component=agent"
TASKS = ("alpha", "beta", "gamma", "delta")


def _nodes(kubectl) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return list((kget(kubectl, "nodes") or {}).get("items", []))


def _is_control_plane(node: dict[str, Any]) -> bool:
    return "node-role.kubernetes.io/control-plane" in node["metadata"].get("labels", {})


@pytest.fixture(scope="module")
def topology(cluster, kubectl) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The control-plane node's name and the workers' names (and InternalIPs); skips below three nodes."""
    nodes = _nodes(kubectl)
    if not is_kind(cluster) or len(nodes) < 3:
        pytest.skip(f"needs the three-node kind cluster (LONGSHOT_E2E_CLUSTER=kind LONGSHOT_KIND_NODES=3); "
                    f"this one has {len(nodes)} node(s)")
    control = [n["metadata"]["name"] for n in nodes if _is_control_plane(n)]
    workers = sorted(n["metadata"]["name"] for n in nodes if not _is_control_plane(n))
    assert len(control) == 1 and len(workers) == 2, (control, workers)
    ips = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
           for n in nodes}
    return {"control_plane": control[0], "workers": workers, "ips": ips}


@pytest.fixture(scope="module")
def placed_operator(cluster, kubectl, topology, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """The chart with the operator and the gateway pinned to the control-plane node; both Ready there."""
    on_control_plane = {
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                         "effect": "NoSchedule"}],
    }
    values: Path = tmp_path_factory.mktemp("multinode") / "placement.yaml"
    values.write_text(json.dumps({"operator": on_control_plane, "gateway": on_control_plane}))
    ns = install_operator(cluster, kubectl, extra=["-f", str(values)])
    for component in ("operator", "gateway"):
        pods = [p for p in (kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", f"app.kubernetes.io/component={component}")
                            or {}).get("items", []) if not p["metadata"].get("deletionTimestamp")]
        assert pods, f"no {component} Pod"
        assert {p["spec"].get("nodeName") for p in pods} == {topology["control_plane"]}, (
            component, [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods])
    return str(ns)


SPREAD_SCRIPT = {
    "roles": {
        "planner": [{"finish": {"summary": "four independent tasks", "tasks": [
            {"name": t, "description": f"add {t}.txt", "scope": [f"{t}.txt"]} for t in TASKS]}}],
        "reviewer": [{"finish": {"summary": "fine", "verdict": "approved"}}],
    },
    "tasks": {t: [{"write": {"path": f"{t}.txt", "content": f"{t} was written on some node\n"}},
                  {"finish": {"summary": f"Add {t}"}}] for t in TASKS},
    "steps": [{"finish": {"summary": "nothing to do"}}],
}


def test_one_builds_agent_pods_spread_over_both_workers_and_its_merged_result_is_complete(  # type: ignore[no-untyped-def]
        placed_operator, topology, cluster, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", yaml.safe_dump(SPREAD_SCRIPT)),
          build_request("spread", git_repo, script="script", workers={"max": len(TASKS)}))

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "spread"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 900, "BuildRequest spread to be finalized", interval=2)
    br = kget(kubectl, "-n", namespace, "br", "spread")
    assert final["status"] == "True", (final, (br or {}).get("status"))

    pods = (kget(kubectl, "-n", namespace, "pods", "-l", AGENT) or {}).get("items", [])
    placement = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
    workers = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods
               if any(f"-{t}-" in p["metadata"]["name"] for t in TASKS)}
    assert len(workers) >= len(TASKS), placement
    # agents never on the control plane (they tolerate nothing), the four task Pods on both workers
    assert set(placement.values()) <= set(topology["workers"]), placement
    assert set(workers.values()) == set(topology["workers"]), placement

    bare = cluster.git_root / f"{namespace}.git"
    files = subprocess.run(["git", "-C", str(bare), "ls-tree", "--name-only", "main"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert {f"{t}.txt" for t in TASKS} <= set(files), files
    for t in TASKS:
        shown = subprocess.run(["git", "-C", str(bare), "show", f"main:{t}.txt"], capture_output=True, text=True,
                               check=True).stdout
        assert shown == f"{t} was written on some node\n"
        assert condition(kget(kubectl, "-n", namespace, "mergejob", f"spread-{t}"), "Merged").get("status") == "True"
    log = subprocess.run(["git", "-C", str(bare), "log", "--format=%b", "main"], capture_output=True, text=True,
                         check=True).stdout
    assert {f"Longshot-Task: spread-{t}" for t in TASKS} <= {line.strip() for line in log.splitlines()}, log


# the first target is tried until it answers (60 s): until the enforcer has seen a new Pod's address it refuses
# everything from it (fail closed, docs/security.md), so a refusal before that would prove nothing; then every
# other target once
PROBE = ("import socket,sys,json,time\n"
         "def connect(host,port):\n"
         "    try:\n        socket.create_connection((host,port),3).close(); return 'open'\n"
         "    except OSError as e: return type(e).__name__\n"
         "targets=json.loads(sys.argv[1]); deadline=time.monotonic()+60\n"
         "name,host,port=targets[0]\n"
         "while (r:=connect(host,port))!='open' and time.monotonic()<deadline: time.sleep(0.5)\n"
         "print(f'CONNECT {name}={r}', flush=True)\n"
         "for name,host,port in targets[1:]:\n"
         "    print(f'CONNECT {name}={connect(host,port)}', flush=True)\n")


def _listener(name: str, node: str, image: str) -> dict[str, Any]:
    """A Pod (no agent labels) on ``node`` that accepts TCP on 8000; restricted Pod Security."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "listener"}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "listen", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,"
                            "socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8000))\ns.listen(16)\nwhile True:\n"
                            "    c,_=s.accept(); c.close()\n"],
                "ports": [{"containerPort": 8000}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m",
                                                                                        "memory": "64Mi"}},
            }],
        },
    }


def _running_ip(kubectl, namespace: str, pod: str) -> Callable[[], str | None]:  # type: ignore[no-untyped-def]
    def ip() -> str | None:
        p = kget(kubectl, "-n", namespace, "pod", pod) or {}
        status = p.get("status") or {}
        return status.get("podIP") if status.get("phase") == "Running" else None
    return ip


def test_the_agent_network_policy_holds_across_nodes(  # type: ignore[no-untyped-def]
        placed_operator, topology, cluster, kubectl, namespace, git_repo) -> None:
    enforcer = cluster.start_network_policies()
    assert enforcer.get("enforcer"), f"no NetworkPolicy enforcer on the three-node cluster: {enforcer}"
    w1, w2 = topology["workers"]
    image = cluster.agent_image
    apply(kubectl, namespace, _listener("listen-1", w1, image), _listener("listen-2", w2, image))
    ips = {pod: wait_for(_running_ip(kubectl, namespace, pod), 180, f"Pod {pod} to run") for pod in
           ("listen-1", "listen-2")}
    api = json.loads(kubectl("get", "endpoints", "kubernetes", "-n", "default", "-o", "json").stdout)
    api_ip = api["subsets"][0]["addresses"][0]["ip"]
    # a Pod of another namespace that listens: CoreDNS's metrics port (the agent's policy allows its port 53 only)
    dns_pods = kget(kubectl, "-n", "kube-system", "pods", "-l", "k8s-app=kube-dns") or {}
    dns_ip = next(p["status"]["podIP"] for p in dns_pods.get("items", []) if (p.get("status") or {}).get("podIP"))
    targets = [
        ("gateway", "longshot-gateway.longshot-system.svc", 8080),
        ("dns", "10.96.0.10", 53),
        ("pod-on-worker-1", ips["listen-1"], 8000),
        ("pod-on-worker-2", ips["listen-2"], 8000),
        ("apiserver-service", "10.96.0.1", 443),
        ("apiserver-node", api_ip, 6443),
        ("metadata", "169.254.169.254", 80),
        ("other-namespace-pod", dns_ip, 9153),
        ("node-worker-1-kubelet", topology["ips"][w1], 10250),
        ("node-worker-2-kubelet", topology["ips"][w2], 10250),
    ]

    # first, the network itself: a Pod without the agent labels on worker 1 reaches the listener on worker 2
    control = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "control-probe"},
        "spec": {**_listener("x", w1, image)["spec"], "containers": [{
            **_listener("x", w1, image)["spec"]["containers"][0], "name": "probe",
            "command": ["python3", "-c", PROBE, json.dumps([["pod-on-worker-2", ips["listen-2"], 8000],
                                                            ["other-namespace-pod", dns_ip, 9153]])],
            "ports": []}]},
    }
    apply(kubectl, namespace, control)

    def control_done() -> str | None:
        p = kget(kubectl, "-n", namespace, "pod", "control-probe") or {}
        phase = (p.get("status") or {}).get("phase")
        return kubectl("-n", namespace, "logs", "control-probe").stdout if phase in ("Succeeded", "Failed") else None

    control_seen = wait_for(control_done, 180, "the control probe to finish")
    assert "CONNECT pod-on-worker-2=open" in control_seen, control_seen
    assert "CONNECT other-namespace-pod=open" in control_seen, control_seen  # so the agent's refusal is the policy's

    # then the agent: a scripted planner whose first step probes everything
    steps: list[dict[str, Any]] = [
        {"run": {"command": 'python3 -c "$PROBE" "$TARGETS"', "timeout": 120}},
        {"run": {"command": 'python3 -c "$PROBE" "$TARGETS_2"', "timeout": 120}},
        {"finish": {"summary": "done", "done": True}},
    ]
    # two steps: a step's result in the agent's log is cut at 400 characters (agent/events.py), about nine
    # verdicts; the second starts with the gateway again (its first target is the one it waits for)
    env = [{"name": "PROBE", "value": PROBE}, {"name": "TARGETS", "value": json.dumps(targets[:6])},
           {"name": "TARGETS_2", "value": json.dumps(targets[:1] + targets[6:])}]
    apply(kubectl, namespace, script_configmap("script", yaml.safe_dump({"roles": {"planner": steps}})),
          build_request("probe", git_repo, script="script", finalization=False, planner={"maxReplans": 0},
                        agent={"backend": "scripted", "script": {"name": "script"}, "timeoutSeconds": 300,
                               "env": env}))
    pod = "probe-planner-a1"

    def finished() -> dict[str, Any] | None:
        p = kget(kubectl, "-n", namespace, "pod", pod)
        return p if p and (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    agent_pod = wait_for(finished, 300, f"the probing agent Pod {pod} to finish")
    node = agent_pod["spec"]["nodeName"]
    assert node in topology["workers"], (node, topology)
    seen = set(verdicts(kubectl, namespace, pod))
    logs = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(cluster.logs.glob("*.log"))
            if p.name.startswith(f"{enforcer['enforcer'].rsplit('.', 1)[-1]}-")}  # netpolicy-*, kube-router-*
    context = f"agent on {node}; saw {sorted(seen)}; enforcer logs: {logs}"
    # the gateway (on the control-plane node) and DNS answer
    assert "CONNECT gateway=open" in seen, context
    assert "CONNECT dns=open" in seen, context
    # nothing else: the listeners on both workers (one of them another node), the API server by its Service and
    # by its node address, the metadata address, a Pod of another namespace, the kubelets (one of them its own
    # node)
    for name in ("pod-on-worker-1", "pod-on-worker-2", "apiserver-service", "apiserver-node", "metadata",
                 "other-namespace-pod", "node-worker-1-kubelet", "node-worker-2-kubelet"):
        assert f"CONNECT {name}=ConnectionRefusedError" in seen, (name, context)


@pytest.fixture
def two_of_each(cluster, kubectl, topology) -> Iterator[dict[str, list[dict[str, Any]]]]:  # type: ignore[no-untyped-def]
    """The chart with two operator replicas and two gateway replicas and nothing pinned: the chart's own
    anti-affinity (``operator.podAntiAffinity: soft``, the gateway's preferred spread) places them. Afterwards the
    chart as the session's other tests have it (one of each)."""
    install_chart(cluster, replicas=2, extra=["--set", "gateway.replicas=2"])
    kubectl("-n", SYSTEM_NS, "rollout", "restart", "deployment/longshot", "deployment/longshot-gateway")
    try:
        placed: dict[str, list[dict[str, Any]]] = {}
        for component, deployment in (("operator", "longshot"), ("gateway", "longshot-gateway")):
            kubectl("-n", SYSTEM_NS, "rollout", "status", f"deployment/{deployment}", "--timeout=300s", timeout=320)
            placed[component] = wait_for(lambda c=component: _two_ready(kubectl, c), 120,
                                         f"two Ready {component} Pods and no old one")
        yield placed
    finally:
        install_operator(cluster, kubectl)


def _two_ready(kubectl, component: str) -> list[dict[str, Any]] | None:  # type: ignore[no-untyped-def]
    pods = (kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", f"app.kubernetes.io/component={component}") or {}).get(
        "items", [])
    ready = [p for p in pods if not p["metadata"].get("deletionTimestamp")
             and all(c["ready"] for c in (p.get("status") or {}).get("containerStatuses") or [{"ready": False}])]
    return ready if len(ready) == 2 and len(pods) == 2 else None


def test_operator_and_gateway_replicas_sit_on_different_nodes(two_of_each, topology) -> None:  # type: ignore[no-untyped-def]
    """Two replicas of each on two schedulable workers (the control plane is tainted): the chart's anti-affinity
    puts each replica of the operator on its own node, and each of the gateway, so that losing a node loses
    one of each."""
    for component, pods in two_of_each.items():
        nodes = sorted(p["spec"]["nodeName"] for p in pods)
        assert nodes == topology["workers"], (component, [(p["metadata"]["name"], p["spec"]["nodeName"])
                                                          for p in pods])
        affinity = pods[0]["spec"].get("affinity", {}).get("podAntiAffinity")
        assert affinity, f"the {component} Pods carry no podAntiAffinity: {pods[0]['spec'].get('affinity')}"
