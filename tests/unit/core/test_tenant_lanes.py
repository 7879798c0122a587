"""``core.lanes``: which tenant's reference a work queue hands out next (round-robin, a per-tenant cap)."""

from __future__ import annotations

import pytest

from longshot.core import lanes

pytestmark = pytest.mark.unit


def test_tenants_take_turns_in_name_order_after_the_last_served():
    assert lanes.next_tenant({"a", "b", "c"}, None, {}, None) == "a"
    assert lanes.next_tenant({"a", "b", "c"}, "a", {}, None) == "b"
    assert lanes.next_tenant({"a", "b", "c"}, "b", {}, None) == "c"
    assert lanes.next_tenant({"a", "b", "c"}, "c", {}, None) == "a"  # wraps around
    assert lanes.next_tenant({"a", "c"}, "b", {}, None) == "c"  # the last served need not be waiting


def test_a_tenant_at_its_cap_is_passed_over_until_one_of_its_reconciles_ends():
    assert lanes.next_tenant({"a", "b"}, "b", {"a": 4}, 4) == "b"
    assert lanes.next_tenant({"a"}, None, {"a": 4}, 4) is None
    assert lanes.next_tenant({"a"}, None, {"a": 3}, 4) == "a"
    assert lanes.next_tenant({"a"}, None, {"a": 40}, None) == "a"  # no cap


def test_nobody_waiting_is_nobody_served():
    assert lanes.next_tenant((), "a", {}, None) is None


def test_a_lone_noisy_tenant_leaves_the_other_tenants_a_worker():
    """Eight workers, tenant a with sixteen references: it gets four at once; b's one goes next."""
    served: list[str] = []
    in_flight: dict[str, int] = {}
    waiting = {"a": 16, "b": 0}
    last = None
    for _ in range(4 + 1):
        if len(served) == 4:
            waiting["b"] = 1  # b's build arrives while a holds its share
        t = lanes.next_tenant([k for k, n in waiting.items() if n], last, in_flight, lanes.cap(8, 0.5))
        assert t is not None
        served.append(t)
        waiting[t] -= 1
        in_flight[t] = in_flight.get(t, 0) + 1
        last = t
    assert served == ["a", "a", "a", "a", "b"]


@pytest.mark.parametrize(("workers", "share", "cap"), [(8, 0.5, 4), (16, 0.5, 8), (4, 0.5, 2), (8, 1.0, 8),
                                                      (8, 0.3, 2), (1, 0.5, 1), (3, 0.01, 1), (10, 0.7, 7)])
def test_the_cap_is_the_share_of_the_workers_rounded_down_and_at_least_one(workers, share, cap):
    assert lanes.cap(workers, share) == cap


@pytest.mark.parametrize(("workers", "share"), [(0, 0.5), (8, 0.0), (8, 1.5), (8, -1.0)])
def test_a_cap_of_nonsense_is_refused(workers, share):
    with pytest.raises(ValueError, match="must be"):
        lanes.cap(workers, share)


def test_a_tenant_at_its_cap_borrows_only_while_a_worker_is_spare():
    """The cap holds only while it keeps a worker from someone: with workers to spare a capped tenant takes one,
    in turn; without, it waits (and a tenant under its cap is served first either way)."""
    assert lanes.next_tenant({"a"}, None, {"a": 4}, 4, spare=True) == "a"
    assert lanes.next_tenant({"a"}, None, {"a": 4}, 4, spare=False) is None
    assert lanes.next_tenant({"a", "b"}, None, {"a": 4, "b": 1}, 4, spare=True) == "b"  # under its cap: first
    assert lanes.next_tenant({"a", "b"}, "a", {"a": 4, "b": 4}, 4, spare=True) == "b"  # both capped: turns
