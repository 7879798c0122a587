"""The local cluster on a host whose FORWARD policy is DROP: what a Docker engine leaves behind (the kind tier, or an
earlier session's), even once it stopped. Pod-to-Pod traffic is forwarded by the host's bridge, so without the
cluster's own accept chain (``longshot_testing.cluster.FORWARD_CHAIN``) an agent Pod would not reach the gateway."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from longshot_testing import cluster as lc

from .conftest import apply, is_kind, kget, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PORT = 8000
IMAGE = "docker.io/library/longshot-operator:dev"
CONNECT = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()\n"
           "    print('open')\nexcept OSError as e:\n    print(type(e).__name__)\n")


def listener(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "listener", "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["python", "-m", "http.server", "--bind", "0.0.0.0", str(PORT)],
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def forward_policy() -> str:
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    return rules.splitlines()[0].split()[-1]  # "-P FORWARD ACCEPT"


def test_pods_reach_each_other_when_the_hosts_forward_policy_drops(cluster, kubectl, namespace):  # type: ignore[no-untyped-def]
    if is_kind(cluster):
        pytest.skip("kind's nodes are containers with their own FORWARD chain")
    if subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True).returncode != 0:
        pytest.skip("iptables cannot be read here (not root)")
    apply(kubectl, namespace, listener("one"), listener("two"))
    ips = {}
    for name in ("one", "two"):
        pod = wait_for(lambda n=name: ((p := kget(kubectl, "-n", namespace, "pod", n)) or {}).get("status", {})
                       .get("phase") == "Running" and p, 120, f"Pod {name} running")
        ips[name] = pod["status"]["podIP"]

    def connect() -> str:
        r = kubectl("-n", namespace, "exec", "one", "--", "python", "-c", CONNECT, ips["two"], str(PORT),
                    check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        return str(r.stdout.strip().splitlines()[-1])

    wait_for(lambda: connect() == "open", 60, "Pod one reaching Pod two's listener")
    before = forward_policy()
    subprocess.run(["iptables", "-w", "-P", "FORWARD", "DROP"], check=True)
    try:
        seen = connect()
    finally:
        subprocess.run(["iptables", "-w", "-P", "FORWARD", before], check=True)
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True).stdout
    assert seen == "open", f"FORWARD DROP cut Pod-to-Pod traffic ({seen}); FORWARD:\n{rules}"
    assert f"-A FORWARD -j {lc.FORWARD_CHAIN}" in rules
