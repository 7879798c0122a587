"""NetworkPolicy enforcement for the local cluster with iptables, for kernels kube-network-policies cannot use.

The local cluster first tries SIG Network's kube-network-policies (``LocalCluster.start_network_policies``).
It needs the nftables ``queue`` expression, which kernels built without ``CONFIG_NFT_QUEUE`` lack (the
development machines: ``nft add rule ... queue num 100`` fails with "Could not process rule: No such file
or directory"). Then this small enforcer runs instead, so the e2e tier can still prove the egress rules.

It implements the part of ``networking.k8s.io/v1`` NetworkPolicy the cluster's workloads use: pod
selectors (``matchLabels`` and ``matchExpressions``), namespace selectors, IPv4 ``ipBlock`` CIDRs with their
``except`` ranges (IPv6 blocks are skipped: iptables filters IPv4 only), numeric ports and port ranges,
both policy types, default deny for the selected Pods and the union of the allowed rules. On every Pod
event (a watch), and at least every second, it renders the Pods, Namespaces and NetworkPolicies into the
iptables filter chains ``LONGSHOT-NETPOL``
(kept first in FORWARD, for Pod-to-Pod traffic, and INPUT, for Pod-to-node traffic such as the API server,
DNS and the git forge; applied when the rendering changes and again every 10 seconds, the jumps checked
every round): established connections pass; a Pod selected for egress may only open the
connections its policies allow, a Pod selected for ingress may only accept those; the rest is rejected.

A rule whose ``ipBlock`` has ``except`` ranges jumps to a sub-chain ``LONGSHOT-NETPOL-X<n>`` (one per set
of except ranges and direction) that returns at once for an address in an except range and otherwise sets
the bit ``MARK`` (0x100000) on the packet; the next rule returns (allows) a marked packet. Each sub-chain
clears the bit first, and the main chain clears it before the ingress decision and at its end, so an
allow never leaks from one decision to the next or out of the chain. An excepted address is then
allowed only if another peer or rule allows it (policies are unions).

It fails closed, as Calico and Cilium do for endpoints they have not programmed yet: a Pod's containers
can run before the kubelet reports its address, and until the enforcer has seen that address, new
connections from it (any source in the Pod CIDR it does not know) are rejected. Without this an agent
Pod could reach anything in the moments after it starts, before its policy applies. Workloads retry
their first connections (the agent runner retries its clone).

::

    python -m longshot_testing.netpolicy --kubeconfig FILE --pod-cidr 10.244.0.0/24

Nothing here imports the rest of Longshot.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from longshot_testing import daemon

CHAIN = "LONGSHOT-NETPOL"
EGRESS = "LONGSHOT-NETPOL-EGRESS"
INGRESS = "LONGSHOT-NETPOL-INGRESS"
HOOKS = ("FORWARD", "INPUT")
REAPPLY_SECONDS = 10.0
EXCEPT_PREFIX = f"{CHAIN}-X"  # + a number: the except sub-chains (names <= 28 characters)
MARK = "0x100000"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches ``labels`` (an empty selector matches everything)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _pod_ips(pods: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, dict[str, str]]]:
    """``(namespace, ip, labels)`` of the Pods that have their own address."""
    out = []
    for p in pods:
        status, spec = p.get("status") or {}, p.get("spec") or {}
        ip = status.get("podIP")
        if ip and not spec.get("hostNetwork") and status.get("phase") in ("Pending", "Running"):
            out.append((p["metadata"]["namespace"], ip, _labels(p)))
    return out


Peer = tuple[str, tuple[str, ...]]
"""An address range (``ip/32`` or a CIDR) and the ranges inside it it excludes (an ``ipBlock``'s ``except``)."""


def _peers(peers: list[Mapping[str, Any]] | None, policy_ns: str, pods: list[tuple[str, str, dict[str, str]]],
           namespaces: Mapping[str, dict[str, str]]) -> list[Peer] | None:
    """The address ranges of ``peers`` with their except ranges; None means anywhere (no peers listed).
    IPv6 blocks are left out (iptables filters IPv4; the IPv6 traffic of a Pod is not filtered here)."""
    if not peers:
        return None
    out: list[Peer] = []
    for peer in peers:
        if peer.get("ipBlock"):
            block = peer["ipBlock"]
            cidr = ipaddress.ip_network(block["cidr"], strict=False)
            if not isinstance(cidr, ipaddress.IPv4Network):
                continue
            excepts = {ipaddress.ip_network(e, strict=False) for e in block.get("except") or []}
            inside = [e for e in excepts if isinstance(e, ipaddress.IPv4Network) and e.subnet_of(cidr)]
            out.append((str(cidr), tuple(str(e) for e in sorted(inside))))
            continue
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        for ns, ip, labels in pods:
            in_ns = selects(ns_sel, namespaces.get(ns, {})) if ns_sel is not None else ns == policy_ns
            if in_ns and (pod_sel is None or selects(pod_sel, labels)):
                out.append((f"{ip}/32", ()))
    return out


def _ports(ports: list[Mapping[str, Any]] | None, warnings: list[str]) -> list[str] | None:
    """iptables match fragments of ``ports``; None means every port."""
    if not ports:
        return None
    out = []
    for p in ports:
        proto = str(p.get("protocol") or "TCP").lower()
        port = p.get("port")
        if port is None:
            out.append(f"-p {proto}")
        elif isinstance(port, int):
            end = p.get("endPort")
            out.append(f"-p {proto} --dport {port}:{end}" if end else f"-p {proto} --dport {port}")
        else:
            warnings.append(f"named port {port!r} is not enforced (denied)")
    return out


def render(pods: list[Mapping[str, Any]], namespaces: list[Mapping[str, Any]],
           policies: list[Mapping[str, Any]], pod_cidrs: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``(iptables-restore lines of the filter table's chains, warnings)``. New connections from an address
    in ``pod_cidrs`` that is no known Pod's are rejected (fail closed until the Pod is seen)."""
    ips = _pod_ips(pods)
    ns_labels = {n["metadata"]["name"]: _labels(n) for n in namespaces}
    warnings: list[str] = []
    # per Pod address: (the rule's match, the except ranges of its peer: -d for egress, -s for ingress)
    egress: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    ingress: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for pol in sorted(policies, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        ns, spec = pol["metadata"]["namespace"], pol.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        selected = [ip for pns, ip, labels in ips if pns == ns and selects(spec.get("podSelector"), labels)]
        for ip in selected:
            if "Egress" in types:
                rules = egress.setdefault(ip, [])
                for rule in spec.get("egress") or []:
                    peers = _peers(rule.get("to"), ns, ips, ns_labels)
                    ports = _ports(rule.get("ports"), warnings)
                    for dst, excepts in peers if peers is not None else [("", ())]:
                        for port in ports if ports is not None else [None]:
                            rules.append((" ".join(x for x in (f"-s {ip}/32", f"-d {dst}" if dst else "", port or "")
                                                   if x), excepts))
            if "Ingress" in types:
                rules = ingress.setdefault(ip, [])
                for rule in spec.get("ingress") or []:
                    peers = _peers(rule.get("from"), ns, ips, ns_labels)
                    ports = _ports(rule.get("ports"), warnings)
                    for src, excepts in peers if peers is not None else [("", ())]:
                        for port in ports if ports is not None else [None]:
                            rules.append((" ".join(x for x in (f"-s {src}" if src else "", f"-d {ip}/32", port or "")
                                                   if x), excepts))
    # one sub-chain per direction and set of except ranges: returns for an excepted address, marks the rest
    subs = {key: f"{EXCEPT_PREFIX}{n}" for n, key in enumerate(sorted(
        {("-d", ex) for rs in egress.values() for _, ex in rs if ex}
        | {("-s", ex) for rs in ingress.values() for _, ex in rs if ex}))}
    clear = f"-j MARK --set-xmark 0x0/{MARK}"
    lines = [f":{CHAIN} - [0:0]", f":{EGRESS} - [0:0]", f":{INGRESS} - [0:0]",
             *[f":{sub} - [0:0]" for sub in subs.values()],
             f"-F {CHAIN}", f"-F {EGRESS}", f"-F {INGRESS}", *[f"-F {sub}" for sub in subs.values()],
             f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             f"-A {CHAIN} -j {EGRESS}", f"-A {CHAIN} {clear}", f"-A {CHAIN} -j {INGRESS}", f"-A {CHAIN} {clear}"]
    for (flag, excepts), sub in subs.items():
        lines += [f"-A {sub} {clear}", *[f"-A {sub} {flag} {e} -j RETURN" for e in excepts],
                  f"-A {sub} -j MARK --set-xmark {MARK}/{MARK}"]

    def allow(chain: str, flag: str, rules: list[tuple[str, tuple[str, ...]]]) -> list[str]:
        out = []
        for r, excepts in sorted(set(rules)):
            if excepts:
                out += [f"-A {chain} {r} -j {subs[(flag, excepts)]}",
                        f"-A {chain} {r} -m mark --mark {MARK}/{MARK} -j RETURN"]
            else:
                out.append(f"-A {chain} {r} -j RETURN")
        return out

    for ip in sorted(egress):
        lines += allow(EGRESS, "-d", egress[ip])
        lines.append(f"-A {EGRESS} -s {ip}/32 -j REJECT")
    cidrs = sorted({str(ipaddress.ip_network(c, strict=False)) for c in pod_cidrs})
    if cidrs:
        # known Pods no policy restricts go on; an address the enforcer has not seen yet does not
        lines += [f"-A {EGRESS} -s {ip}/32 -j RETURN"
                  for ip in sorted({ip for _, ip, _ in ips} - set(egress), key=ipaddress.ip_address)]
        # the node's own addresses in the range (the bridge's gateway address: kubectl, the kubelet) are no Pod
        lines.append(f"-A {EGRESS} -m addrtype --src-type LOCAL -j RETURN")
        lines += [f"-A {EGRESS} -s {c} -j REJECT" for c in cidrs]
    for ip in sorted(ingress):
        lines += allow(INGRESS, "-s", ingress[ip])
        lines.append(f"-A {INGRESS} -d {ip}/32 -j REJECT")
    return lines, sorted(set(warnings))


def apply(lines: list[str]) -> None:
    subprocess.run(["iptables-restore", "-w", "--noflush"], input="\n".join(["*filter", *lines, "COMMIT", ""]),
                   text=True, check=True, capture_output=True)
    ensure_hooks()
    # except sub-chains an earlier rendering made and this one no longer jumps to
    _remove_chains(set(_except_chains()) - {x[1:].split()[0] for x in lines if x.startswith(":")})


def _except_chains() -> list[str]:
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout.splitlines()
    return [x.split()[1] for x in rules if x.startswith(f"-N {EXCEPT_PREFIX}")]


def _remove_chains(chains: Iterable[str]) -> None:
    chains = list(chains)
    for chain in chains:
        subprocess.run(["iptables", "-w", "-F", chain], capture_output=True)
    for chain in chains:
        subprocess.run(["iptables", "-w", "-X", chain], capture_output=True)


def ensure_hooks() -> None:
    """Our chain first in FORWARD and INPUT: a rule another component inserts at the top (a CNI plugin's
    ACCEPT) must not come before the policy."""
    for hook in HOOKS:
        rules = subprocess.run(["iptables", "-w", "-S", hook], capture_output=True, text=True).stdout.splitlines()
        if rules[1:2] != [f"-A {hook} -j {CHAIN}"]:
            while subprocess.run(["iptables", "-w", "-D", hook, "-j", CHAIN], capture_output=True).returncode == 0:
                pass
            subprocess.run(["iptables", "-w", "-I", hook, "1", "-j", CHAIN], check=True, capture_output=True)


def remove() -> None:
    for hook in HOOKS:
        while subprocess.run(["iptables", "-w", "-D", hook, "-j", CHAIN], capture_output=True).returncode == 0:
            pass
    _remove_chains([CHAIN, EGRESS, INGRESS, *_except_chains()])


def _watch_pods(core: Any, wake: threading.Event, stopped: Any) -> None:
    """Set ``wake`` on every Pod event, so a new Pod's address is enforced within moments of its report."""
    import kubernetes

    watcher: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    while not stopped():
        try:
            for _ in watcher.stream(core.list_pod_for_all_namespaces, timeout_seconds=60):
                wake.set()
                if stopped():
                    return
        except Exception as e:  # the API server restarting, an expired resourceVersion: watch again
            print(f"[netpolicy] pod watch: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            time.sleep(1)


def _items(call: Any) -> list[Mapping[str, Any]]:
    """The items of a list call as plain JSON (the client's typed objects cost more CPU than the rendering;
    with a Pod event every few milliseconds in a busy cluster that matters)."""
    items: list[Mapping[str, Any]] = json.loads(call(_preload_content=False).data).get("items") or []
    return items


def _pod_cidrs(core: Any, given: list[str]) -> list[str]:
    if given:
        return given
    return sorted({c for n in core.list_node().items for c in (n.spec.pod_cid_rs or [n.spec.pod_cidr])
                   if c})


def main(argv: list[str] | None = None) -> int:
    import kubernetes

    parser = argparse.ArgumentParser(prog="python -m longshot_testing.netpolicy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pod-cidr", action="append", default=[],
                        help="the Pods' address range (repeatable); default: the Nodes' spec.podCIDRs")
    args = parser.parse_args(argv)
    client = daemon.api_client(args.kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    net = kubernetes.client.NetworkingV1Api(client)
    stopped = daemon.stop_on_term()
    wake = threading.Event()
    threading.Thread(target=_watch_pods, args=(core, wake, stopped), daemon=True, name="pod-watch").start()
    last: list[str] | None = None
    cidrs: list[str] = []
    reapplied = 0.0
    while not stopped():
        wake.clear()
        try:
            cidrs = cidrs or _pod_cidrs(core, args.pod_cidr)
            lines, warnings = render(_items(core.list_pod_for_all_namespaces), _items(core.list_namespace),
                                     _items(net.list_network_policy_for_all_namespaces), cidrs)
            if lines != last or time.monotonic() - reapplied >= REAPPLY_SECONDS:
                apply(lines)  # chains something else changed are put back within REAPPLY_SECONDS
                reapplied = time.monotonic()
            else:
                ensure_hooks()  # every round: our jump first
            if lines != last:
                egress = [x.split()[3] for x in lines
                          if x.startswith(f"-A {EGRESS} -s ") and x.endswith("/32 -j REJECT")]
                print(f"[netpolicy] {time.strftime('%H:%M:%S')} enforcing: "
                      f"{sum(x.endswith('/32 -j REJECT') for x in lines)} restricted Pod directions "
                      f"(egress from {', '.join(egress) or 'none'}), {sum(' -j RETURN' in x for x in lines)} "
                      f"allow rules" + (f", unknown addresses in {', '.join(cidrs)} refused" if cidrs else "")
                      + (f"; {warnings}" if warnings else ""), flush=True)
                last = lines
        except Exception as e:  # the API server restarting, a transient iptables lock: try again
            print(f"[netpolicy] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        wake.wait(args.interval)
    remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
