"""A hostile agent on a real cluster: it holds no credential, can push nothing outside its own refs, and —
where NetworkPolicy is enforced — can reach only longshot-gateway and DNS.

The attacker is the scripted backend playing a planner; what it saw is read back from its Pod's log (each
step prints one short verdict line)."""

from __future__ import annotations

import json
import subprocess
from typing import Any
from urllib.parse import urlsplit

import kubernetes
import pytest
import yaml

from longshot.config import Settings
from longshot.runtime import netpol
from longshot_testing import cluster as lc

from .conftest import SYSTEM_NS, apply, build_request, git_credentials, is_kind, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CONNECT = ("import socket,sys\n"
           "for name,host,port in [('gateway','longshot-gateway.longshot-system.svc',8080),"
           "('forge','{git_host}',{git_port}),('apiserver','10.96.0.1',443),('dns','{dns}',53)]:\n"
           "    try:\n        socket.create_connection((host,port),3).close(); r='open'\n"
           "    except OSError as e: r=type(e).__name__\n"
           "    print(f'CONNECT {{name}}={{r}}')\n")


def verdicts(kubectl, namespace: str, pod: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = kubectl("-n", namespace, "logs", pod).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [v for e in lines if e.get("type") == "tool_call" for v in str(e.get("result", "")).splitlines()
            if v.startswith(("SECRETS", "PUSH", "DIRECT", "CONNECT"))]


def test_a_hostile_agent_gets_nothing_and_goes_nowhere(operator, cluster, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    enforcer = cluster.start_network_policies()
    if is_kind(cluster) and not enforcer.get("enforcer"):
        pytest.skip("kind's git daemon takes pushes without a credential: only an enforced NetworkPolicy keeps the "
                    f"agent from it, and this cluster enforces none ({enforcer}; the three-node cluster does)")
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    # the policy the operator keeps in build namespaces (runtime.netpol.ensure), as the chart configures it: DNS
    # is dnsmasq on the local cluster's bridge, CoreDNS (the default peers, kube-dns in kube-system) on kind
    dns = (kget(kubectl, "-n", "kube-system", "service", "kube-dns") or {})["spec"]["clusterIP"] if is_kind(
        cluster) else lc.BRIDGE_IP
    netpol.ensure(client, namespace, Settings(
        identity="e2e", namespace=SYSTEM_NS, gateway_url="http://longshot-gateway.longshot-system.svc:8080",
        agent_dns_peers="" if is_kind(cluster) else json.dumps([{"ipBlock": {"cidr": f"{lc.BRIDGE_IP}/32"}}])))
    password = git_credentials(cluster, namespace)[1]
    git = urlsplit(cluster.git_url)  # the local cluster's forge, or kind's git daemon
    forge_url = git_repo
    gateway_repo = f"$LONGSHOT_GATEWAY_URL/git/{namespace}/hostile.git"
    token = 'Authorization: Bearer $(cat "$LONGSHOT_GATEWAY_TOKEN_FILE")'
    steps: list[dict[str, Any]] = [
        # first, the moment the model gets control: the Pod has just started (an enforcer that programs a Pod's
        # policy only after it sees the Pod's address must not leave that moment open)
        {"run": {"command": "python3 -c \"$CONNECT\"", "timeout": 60}},
        {"run": {"command": f"grep -rlF -- '{password[4:16]}' /etc /var/run/secrets /workspace /tmp "
                            "/proc/self/environ 2>/dev/null | head -3; echo SECRETS_FOUND=$?"}},
        {"run": {"command": "git -c user.name=x -c user.email=x@x commit -q --allow-empty -m evil; "
                            f'git -c "http.extraHeader={token}" push "{gateway_repo}" HEAD:refs/heads/main 2>&1 '
                            "| grep -o 'remote rejected.*' | head -1 | sed 's/^/PUSH_MAIN /'"}},
        {"run": {"command": f"git push {forge_url} HEAD:refs/heads/main >/dev/null 2>&1; echo DIRECT_PUSH_EXIT=$?"}},
        {"finish": {"summary": "done", "done": True}},
    ]
    env = [{"name": "CONNECT", "value": CONNECT.format(git_host=git.hostname, git_port=git.port, dns=dns)}]
    apply(kubectl, namespace, script_configmap("script", yaml.safe_dump({"roles": {"planner": steps}})),
          build_request("hostile", git_repo, script="script", finalization=False, planner={"maxReplans": 0},
                        agent={"backend": "scripted", "script": {"name": "script"}, "timeoutSeconds": 300, "env": env}))
    pod = "hostile-planner-a1"

    def finished() -> dict[str, Any] | None:
        p = kget(kubectl, "-n", namespace, "pod", pod)
        return p if p and (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    wait_for(finished, 300, f"the attacker's Pod {pod} to finish")
    seen = verdicts(kubectl, namespace, pod)

    # nothing to read: the forge's password is nowhere the agent can look
    assert "SECRETS_FOUND=1" in seen or "SECRETS_FOUND=0" in seen, seen
    assert not [v for v in seen if v.startswith("/")], seen
    # no push outside its own refs: the gateway refuses main, the forge refuses a push without its credential
    assert any(v.startswith("PUSH_MAIN remote rejected") and "agents may only update" in v for v in seen), seen
    assert "DIRECT_PUSH_EXIT=128" in seen, seen  # 401 from the forge, or no route where policy is enforced
    bare = cluster.git_root / f"{namespace}.git"
    log = subprocess.run(["git", "--git-dir", str(bare), "log", "--format=%s", "main"], capture_output=True,
                         text=True, check=True).stdout
    assert "evil" not in log
    # the network: the gateway always; nothing else where policy is enforced
    assert "CONNECT gateway=open" in seen, (seen, enforcer)
    if not enforcer.get("enforcer"):
        pytest.skip(f"NetworkPolicy is not enforced on this cluster: {enforcer}; the agent saw {seen}")
    netpolicy_log = cluster.logs / "netpolicy.log"
    tail = netpolicy_log.read_text(errors="replace")[-2000:] if netpolicy_log.exists() else "(no netpolicy.log)"
    assert {"CONNECT forge=ConnectionRefusedError", "CONNECT apiserver=ConnectionRefusedError"} <= set(seen), (
        "the agent saw:\n" + "\n".join(seen) + f"\nenforcer: {enforcer.get('enforcer')}\nnetpolicy.log:\n{tail}")
    assert "CONNECT dns=ConnectionRefusedError" not in seen  # DNS (TCP 53) is allowed
