"""Services for the local cluster, which has neither kube-proxy nor CoreDNS: ClusterIP routing and DNS names.

Every second it lists the Services and EndpointSlices and, when they changed,

* rewrites the iptables nat chain ``LONGSHOT-SVCPROXY`` (jumped to from PREROUTING and OUTPUT): for each
  ClusterIP and port, a DNAT to one of the ready endpoints, chosen at random as kube-proxy's iptables mode
  does;
* rewrites a hosts file, ``<clusterIP> <name>.<namespace>.svc.cluster.local``, and sends dnsmasq (the
  cluster DNS, started with ``--addn-hosts`` on that file) a SIGHUP to read it again.

So ``http://longshot-gateway.longshot-system.svc:8080`` works from Pods as on any cluster, and a
NetworkPolicy sees the gateway Pod as the destination (the DNAT happens before filtering).

::

    python -m longshot_testing.serviceproxy --kubeconfig FILE --hosts FILE --dnsmasq-pid PID

Nothing here imports the rest of Longshot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from longshot_testing import daemon

CHAIN = "LONGSHOT-SVCPROXY"
DOMAIN = "cluster.local"
SKIP = {("default", "kubernetes")}
"""Routed by the cluster itself (to the API server on the bridge)."""


def render(services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """``(iptables rules of the chain, hosts lines)`` for the Services and their EndpointSlices (API dicts)."""
    ready: dict[tuple[str, str], list[tuple[str, dict[str, int]]]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not svc or s.get("addressType") != "IPv4":
            continue
        ports = {p.get("name") or "": int(p["port"]) for p in s.get("ports") or [] if p.get("port")}
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for address in ep.get("addresses") or []:
                ready.setdefault((meta.get("namespace", ""), svc), []).append((address, ports))
    rules: list[str] = []
    hosts: list[str] = []
    for svc in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        ip = (svc.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None" or (ns, name) in SKIP:
            continue
        hosts.append(f"{ip} {name}.{ns}.svc.{DOMAIN}")
        endpoints = sorted(ready.get((ns, name), []))
        for port in (svc.get("spec") or {}).get("ports") or []:
            proto = str(port.get("protocol", "TCP")).lower()
            targets = [(addr, ports.get(port.get("name") or "")) for addr, ports in endpoints]
            targets = [(a, p) for a, p in targets if p]
            for i, (addr, target) in enumerate(targets):
                left = len(targets) - i
                pick = f"-m statistic --mode random --probability {1 / left:.5f} " if left > 1 else ""
                rules.append(f"-A {CHAIN} -d {ip}/32 -p {proto} --dport {port['port']} {pick}"
                             f"-j DNAT --to-destination {addr}:{target}")
    return rules, hosts


def apply_rules(rules: list[str]) -> None:
    script = "\n".join(["*nat", f":{CHAIN} - [0:0]", f"-F {CHAIN}", *rules, "COMMIT", ""])
    subprocess.run(["iptables-restore", "-w", "--noflush"], input=script, text=True, check=True, capture_output=True)
    for hook in ("PREROUTING", "OUTPUT"):
        if subprocess.run(["iptables", "-w", "-t", "nat", "-C", hook, "-j", CHAIN], capture_output=True).returncode:
            subprocess.run(["iptables", "-w", "-t", "nat", "-I", hook, "-j", CHAIN], check=True, capture_output=True)


def remove_rules() -> None:
    for hook in ("PREROUTING", "OUTPUT"):
        while subprocess.run(["iptables", "-w", "-t", "nat", "-D", hook, "-j", CHAIN],
                             capture_output=True).returncode == 0:
            pass
    subprocess.run(["iptables", "-w", "-t", "nat", "-F", CHAIN], capture_output=True)
    subprocess.run(["iptables", "-w", "-t", "nat", "-X", CHAIN], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    import kubernetes

    parser = argparse.ArgumentParser(prog="python -m longshot_testing.serviceproxy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--hosts", type=Path, required=True, help="the hosts file dnsmasq reads (--addn-hosts)")
    parser.add_argument("--dnsmasq-pid", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    client = daemon.api_client(args.kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    discovery = kubernetes.client.DiscoveryV1Api(client)
    stopped = daemon.stop_on_term()
    last: tuple[list[str], list[str]] | None = None
    while not stopped():
        try:
            services = client.sanitize_for_serialization(core.list_service_for_all_namespaces()).get("items", [])
            slices = client.sanitize_for_serialization(
                discovery.list_endpoint_slice_for_all_namespaces()).get("items", [])
            state = render(services, slices)
            if state != last:
                apply_rules(state[0])
                tmp = args.hosts.with_suffix(".tmp")
                tmp.write_text("\n".join(state[1]) + "\n")
                os.replace(tmp, args.hosts)
                if args.dnsmasq_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(args.dnsmasq_pid, signal.SIGHUP)
                print(f"[service-proxy] {len(state[1])} services, {len(state[0])} endpoint rules", flush=True)
                last = state
        except Exception as e:  # the API server restarting, a transient iptables lock: try again
            print(f"[service-proxy] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        time.sleep(args.interval)
    remove_rules()
    return 0


if __name__ == "__main__":
    sys.exit(main())
