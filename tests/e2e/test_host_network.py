"""The local cluster on a host that other clusters' networking has passed through (``longshot_testing.cluster``):

* FORWARD's policy at DROP, what a Docker engine that turned IP forwarding on itself leaves behind, even once it
  stopped: Pod-to-Pod traffic is forwarded by the host's bridge, so without the cluster's own accept chain
  (``FORWARD_CHAIN``) an agent Pod would not reach the gateway;
* a route of the Pod subnet through another device, what the kind tier leaves when a session ends while kind is up
  (it routes each kind node's podCIDR, ``10.244.0.0/24`` among them, through the node): the host's traffic to the
  Pods (the kubelet's probes, the API server's answers) would go there, and no Pod would ever be Ready
  (``LocalCluster.pod_route``)."""

from __future__ import annotations

import subprocess

import pytest

from longshot_testing import cluster as lc

from .conftest import LISTENER_PORT, apply, host_connects, is_kind, kget, listener_pod, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

IMAGE = "docker.io/library/longshot-operator:dev"
CONNECT = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()\n"
           "    print('open')\nexcept OSError as e:\n    print(type(e).__name__)\n")


def running_listeners(kubectl, namespace: str, *names: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Listener Pods ``names`` started and running: their addresses."""
    apply(kubectl, namespace, *(listener_pod(IMAGE, n) for n in names))
    ips = {}
    for name in names:
        pod = wait_for(lambda n=name: ((p := kget(kubectl, "-n", namespace, "pod", n)) or {}).get("status", {})
                       .get("phase") == "Running" and p, 120, f"Pod {name} running")
        ips[name] = pod["status"]["podIP"]
    return ips


def local_root_cluster(cluster: object) -> None:
    if is_kind(cluster):
        pytest.skip("kind's nodes are containers with their own FORWARD chain and routes")
    if subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True).returncode != 0:
        pytest.skip("iptables cannot be read here (not root)")


def forward_policy() -> str:
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    return rules.splitlines()[0].split()[-1]  # "-P FORWARD ACCEPT"


def test_pods_reach_each_other_when_the_hosts_forward_policy_drops(cluster, kubectl, namespace):  # type: ignore[no-untyped-def]
    local_root_cluster(cluster)
    ips = running_listeners(kubectl, namespace, "one", "two")

    def connect() -> str:
        r = kubectl("-n", namespace, "exec", "one", "--", "python", "-c", CONNECT, ips["two"], str(LISTENER_PORT),
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


def test_a_route_of_the_pod_subnet_through_another_device_is_taken_out(cluster, kubectl, namespace):  # type: ignore[no-untyped-def]
    local_root_cluster(cluster)
    ip = running_listeners(kubectl, namespace, "one")["one"]
    wait_for(lambda: host_connects(ip, LISTENER_PORT), 60, "the host reaching the listener")
    # what a kind node's route looks like once the local cluster's bridge came up after it: the stale route first
    other = "lsstale0"  # a bridge: the dummy module is not in every kernel (not here)
    subprocess.run(["ip", "link", "del", other], capture_output=True)
    try:
        for argv in (["ip", "link", "add", other, "type", "bridge"],
                     ["ip", "addr", "add", "198.18.255.1/30", "dev", other], ["ip", "link", "set", other, "up"],
                     ["ip", "route", "del", lc.POD_SUBNET, "dev", lc.BRIDGE],
                     ["ip", "route", "add", lc.POD_SUBNET, "via", "198.18.255.2", "dev", other],
                     ["ip", "route", "append", lc.POD_SUBNET, "dev", lc.BRIDGE, "proto", "kernel", "scope", "link",
                      "src", lc.BRIDGE_IP]):
            subprocess.run(argv, check=True, capture_output=True)
        assert not host_connects(ip, LISTENER_PORT), "the stale route did not take the Pod's traffic (the test set-up)"
        removed = lc.LocalCluster.pod_route()
        assert removed and "via 198.18.255.2" in removed[0], removed
        routes = subprocess.run(["ip", "-4", "route", "show", "exact", lc.POD_SUBNET], capture_output=True,
                                text=True).stdout
        assert routes.count("\n") == 1 and f"dev {lc.BRIDGE}" in routes, routes
        assert host_connects(ip, LISTENER_PORT)
    finally:
        subprocess.run(["ip", "link", "del", other], capture_output=True)
        lc.LocalCluster.pod_route()
