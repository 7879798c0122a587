"""The local cluster's iptables NetworkPolicy enforcer (``longshot_testing.netpolicy``) with the chart's own
gateway egress policy, in the kernel: network namespaces of its own (a router and three "Pods"), never the
host's tables. A connection from the gateway's address to the metadata address is refused, one to a public
address passes, one to the git server listed as an ``egress.allow`` cidr (inside a denied range) passes.

Needs root (``ip netns``, iptables); skipped otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_render import of_kinds, render

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_IP, GIT_IP, METADATA_IP, PUBLIC_IP = "10.244.0.20", "10.244.0.1", "169.254.169.254", "8.8.8.8"
LISTEN = ("import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',80))\ns.listen()\n"
          "print('ready',flush=True)\ntime.sleep(600)")
PROBE = ("import socket,sys\n"
         "try:\n    socket.create_connection((sys.argv[1],80),3).close(); print('open')\n"
         "except OSError as e: print(type(e).__name__)\n")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables-restore"):
        pytest.skip("needs root, ip and iptables-restore (network namespaces of its own)")
    tag = uuid.uuid4().hex[:6]
    names = {k: f"lsnp-{tag}-{k}" for k in ("router", "gateway", "metadata", "public")}
    listeners: list[subprocess.Popen[str]] = []
    try:
        for n in names.values():
            _ip("netns", "add", n)
            _ip("-n", n, "link", "set", "lo", "up")
        router = names["router"]
        for i, (pod, router_addr, addr) in enumerate([("gateway", f"{GIT_IP}/24", f"{GATEWAY_IP}/24"),
                                                      ("metadata", "169.254.0.1/16", f"{METADATA_IP}/16"),
                                                      ("public", "8.8.8.1/24", f"{PUBLIC_IP}/24")]):
            _ip("link", "add", f"lsnp{tag}{i}", "netns", router, "type", "veth", "peer", "name", "eth0", "netns",
                names[pod])
            _ip("-n", router, "addr", "add", router_addr, "dev", f"lsnp{tag}{i}")
            _ip("-n", router, "link", "set", f"lsnp{tag}{i}", "up")
            _ip("-n", names[pod], "addr", "add", addr, "dev", "eth0")
            _ip("-n", names[pod], "link", "set", "eth0", "up")
            _ip("-n", names[pod], "route", "add", "default", "via", router_addr.split("/")[0])
        subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        # a listener on port 80 of the metadata and the public address, and of the git server (the router)
        for where in ("metadata", "public", "router"):
            p = subprocess.Popen(["ip", "netns", "exec", names[where], sys.executable, "-c", LISTEN],
                                 stdout=subprocess.PIPE, text=True)
            listeners.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield names
    finally:
        for p in listeners:
            p.kill()
            p.communicate()
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def _probe(names: dict[str, str], address: str) -> str:
    return subprocess.run(["ip", "netns", "exec", names["gateway"], sys.executable, "-c", PROBE, address],
                          capture_output=True, text=True, check=True).stdout.strip()


def _enforce(names: dict[str, str], policy: dict[str, Any]) -> None:
    gateway = {"metadata": {"namespace": "longshot-system", "name": "gw", "labels": policy["spec"]["podSelector"][
        "matchLabels"]}, "spec": {}, "status": {"phase": "Running", "podIP": GATEWAY_IP}}
    script = ("import json,sys\nfrom longshot_testing import netpolicy\n"
              "pods,nss,pols=json.load(sys.stdin)\n"
              "lines,_=netpolicy.render(pods,nss,pols,['10.244.0.0/24'])\nnetpolicy.apply(lines)\n")
    ns = {"metadata": {"name": "longshot-system", "labels": {}}}
    subprocess.run(["ip", "netns", "exec", names["router"], sys.executable, "-c", script],
                   input=json.dumps([[gateway], [ns], [policy]]), text=True, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})


def test_the_enforcer_applies_the_charts_gateway_egress_except_ranges_in_the_kernel(control_plane: Any,
                                                                                    netns: dict[str, str]) -> None:
    docs = render(control_plane, "longshot-system", json_sets=[
        f'egress.allow=[{{"cidr": "{GIT_IP}/32", "purposes": ["git"], "ports": [80]}}]'])
    [policy] = [d for d in of_kinds(docs, "NetworkPolicy")
                if d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "gateway"]
    before = {a: _probe(netns, a) for a in (METADATA_IP, PUBLIC_IP, GIT_IP)}
    assert before == {METADATA_IP: "open", PUBLIC_IP: "open", GIT_IP: "open"}  # reachable without the policy
    _enforce(netns, policy)
    after = {a: _probe(netns, a) for a in (METADATA_IP, PUBLIC_IP, GIT_IP)}
    assert after == {METADATA_IP: "ConnectionRefusedError", PUBLIC_IP: "open", GIT_IP: "open"}, after
