"""Hostile-input benchmark: what the worst input a tenant can send costs Longshot.

Four figures, each from the real code:

* ``worst_parse_s``: the slowest of every parser of untrusted text (the merge-side secret scan, the roadmap,
  the handoff, scope patterns, tracker bodies) over maximum-size adversarial inputs (``hack/hostile_parsers.py``).
  Target: under 1 s.
* ``gateway_peak_rss_mib``: the peak resident memory (``VmHWM``) of a real ``longshot-gateway`` process while
  20 agents send maximum-size model request bodies at once, then hold 800 slow-drip connections across
  ``/ledger``, ``/delegation/spawn``, ``/traces`` and the model route (``hack/hostile_gateway.py``). Target: under
  half the chart's memory limit for the gateway (512 MiB, so under 256).
* ``operator_peak_rss_mib``: the peak resident memory of a real process of the operator's HTTP servers (default
  limits, the webhook on its own port) under 600 held slow-drip webhook connections from 150 addresses
  (``hack/hostile_ingress.py``; three amplifying tracker answers polled at once in the same process).
  Target: under half the chart's memory limit for the operator (512 MiB, so under 256).
* ``budget_overshoot_tokens``: tokens metered beyond ``spec.budget.maxTokens``, the largest of three cases
  (``hack/hostile_gateway.py``): 20 calls sent in parallel against 100, one call with ``n=128`` and
  ``max_tokens=4000`` against 10,000, and one call naming no maximum against 10,000 (an upstream that generates
  every token it is allowed). Target: at most one reservation; with the reservation clamped to what is left, 0.

Last line: ``worst_parse_s=<s> worst_parse_cpu_s=<s> gateway_peak_rss_mib=<MiB> operator_peak_rss_mib=<MiB>
budget_overshoot_tokens=<n>``.
Usage: ``python hack/bench_hostile.py`` (``make bench-hostile``; the gateway part starts a real etcd and
kube-apiserver from ``hack/k8s-binaries.sh``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_gateway
import hostile_ingress
import hostile_parsers


def main() -> int:
    parses = hostile_parsers.worst_parse_s()
    for name, seconds in sorted(parses.items(), key=lambda kv: -kv[1]):
        print(f"parse {name:<32} {seconds:8.3f} s")
    worst = max(parses.values())
    rss = hostile_gateway.gateway_peak_rss_mib(verbose=True)
    print(f"gateway peak RSS under 20 concurrent maximum-size bodies and 800 held slow drips: {rss:.1f} MiB")
    operator_rss = hostile_ingress.operator_peak_rss_mib(verbose=True)
    print(f"operator HTTP server peak RSS under 600 held webhook connections and three amplifying tracker answers: "
          f"{operator_rss:.1f} MiB")
    overshoot = hostile_gateway.budget_overshoot_tokens(verbose=True)  # prints each of its three cases
    print(f"tokens metered past the budget, the largest of the three cases: {overshoot}")
    cpu = max(hostile_parsers.CPU_S)
    print(f"worst_parse_s={worst:.3f} worst_parse_cpu_s={cpu:.3f} gateway_peak_rss_mib={rss:.0f} "
          f"operator_peak_rss_mib={operator_rss:.0f} budget_overshoot_tokens={overshoot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
