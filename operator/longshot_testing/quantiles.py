"""PromQL's ``histogram_quantile`` for the benchmarks that read the operator's histograms (bench-e2e, bench-fleet)."""

from __future__ import annotations

from collections.abc import Mapping


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """PromQL's ``histogram_quantile`` over cumulative buckets ``{le: count}`` (``+Inf`` included); NaN when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return float("nan")
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower
