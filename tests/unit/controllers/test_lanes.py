"""controllers.lanes: tracker and forge calls run one per tenant at a time, a few at once, tenants taking turns."""

from __future__ import annotations

import asyncio

import pytest

from longshot.controllers import lanes

pytestmark = pytest.mark.unit


async def _run(lanes_: lanes.Lanes, calls: list[str], log: list[tuple[str, str]],
               peak: dict[str, int]) -> None:
    """Start ``calls`` (tenant names) in this order; each records when it starts and ends, and yields in between."""
    async def call(i: int, tenant: str) -> None:
        async with lanes_.lane(tenant):
            log.append(("start", f"{tenant}{i}"))
            peak["all"] = max(peak["all"], lanes_.running)
            for _ in range(3):
                await asyncio.sleep(0)  # a turn of the loop, as a thread's result would take
            log.append(("end", f"{tenant}{i}"))

    await asyncio.gather(*(call(i, t) for i, t in enumerate(calls)))


async def test_one_call_per_tenant_and_a_global_width() -> None:
    log: list[tuple[str, str]] = []
    peak = {"all": 0}
    lanes_ = lanes.Lanes(width=2)
    await _run(lanes_, ["a", "a", "a", "b", "c", "d"], log, peak)
    running: set[str] = set()
    for what, who in log:
        if what == "start":
            assert not any(r[0] == who[0] for r in running), f"two calls of tenant {who[0]} at once"
            running.add(who)
        else:
            running.discard(who)
    assert peak["all"] == 2
    assert lanes_.waiting("a") == 0 and not lanes_._lanes  # nothing kept for a tenant without calls


async def test_tenants_take_turns() -> None:
    log: list[tuple[str, str]] = []
    await _run(lanes.Lanes(width=1), ["a", "a", "a", "b"], log, {"all": 0})
    starts = [who for what, who in log if what == "start"]
    assert starts.index("b3") < starts.index("a1"), starts  # b's one call does not wait for all of a's
