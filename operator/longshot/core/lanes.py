"""Tenants in their own lanes: which tenant's reference a work queue hands out next.

A work queue serves many namespaces (tenants). Handing out references in the order they were added lets one
tenant with many slow reconciles hold every worker of a kind while another tenant's new object waits behind them.
The queue instead takes turns, after the kube-apiserver's API Priority and Fairness and Kueue's fair sharing:

* **Round-robin.** Tenants are served in turn, in the order of their names: the next reference goes to the first
  tenant after the one served last (wrapping around) that has a reference ready.
* **A per-tenant in-flight cap.** A tenant already holding ``cap`` of the kind's workers gets no more until one of
  its reconciles ends; the other workers stay free for the other tenants.

* **Borrowing, with a reserve.** A tenant at its cap may still take a worker while more than one is free, so a lone
  tenant is not held to its share (the work queue keeps the last free worker for a tenant under its cap: a new
  tenant's first reference finds it).

So a tenant's ready reference is handed out as soon as it is ready while a worker is kept in reserve for it, and
otherwise it is the next one handed out once a worker comes free, ahead of tenants over their cap (every reconcile
is bounded by its deadlines).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

SHARE = 0.5
"""The default share of a kind's workers one tenant may hold: with half of them, a second tenant always finds a free
worker, and a lone tenant still gets half the kind's concurrency."""


def cap(workers: int, share: float) -> int:
    """The most references of one tenant in flight at once for a kind with ``workers`` workers: ``share`` of them,
    rounded down, at least one."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], not {share}")
    return max(1, math.floor(workers * share + 1e-9))


def next_tenant(ready: Iterable[str], after: str | None, in_flight: Mapping[str, int],
                limit: int | None, *, spare: bool = False) -> str | None:
    """The tenant whose reference goes next: among the tenants with a reference ``ready``, the first in name order
    after ``after`` (the tenant served last; wrapping around) that holds fewer than ``limit`` references in flight
    (``in_flight``; no limit when None). When every tenant with a ready reference is at its limit, ``spare`` (more
    workers are free than the reserve kept for a tenant that has none in flight) lets them borrow, in the same
    turns: the cap holds only while it keeps a worker from someone. None when no tenant may take one."""
    tenants = set(ready)
    allowed = sorted(t for t in tenants if limit is None or in_flight.get(t, 0) < limit)
    if not allowed and spare:
        allowed = sorted(tenants)
    if not allowed:
        return None
    if after is not None:
        for t in allowed:
            if t > after:
                return t
    return allowed[0]
