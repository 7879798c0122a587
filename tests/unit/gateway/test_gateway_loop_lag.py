"""``longshot_gateway_event_loop_lag_seconds``: how late the gateway's event loop runs what is due (every request
waits that long for each of its turns)."""

from __future__ import annotations

import asyncio
import time

import pytest

from longshot.gateway import metrics, server

pytestmark = pytest.mark.unit


def samples() -> tuple[float, float]:
    """(samples, samples of 50 ms or less)."""
    count = metrics.REGISTRY.get_sample_value("longshot_gateway_event_loop_lag_seconds_count") or 0.0
    quick = metrics.REGISTRY.get_sample_value("longshot_gateway_event_loop_lag_seconds_bucket", {"le": "0.05"}) or 0.0
    return count, quick


async def until_samples(n: float) -> None:
    while samples()[0] < n:
        await asyncio.sleep(0.005)


async def test_a_blocked_loop_shows_as_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "LAG_SAMPLE_SECONDS", 0.01)
    before = samples()
    task = asyncio.create_task(server.loop_lag())
    try:
        await until_samples(before[0] + 1)
        time.sleep(0.2)  # the loop is blocked: the sample due meanwhile ends at least 0.19 s late
        after_block = samples()[0]
        await until_samples(after_block + 1)
    finally:
        task.cancel()
    count, quick = samples()
    assert count - before[0] >= 2
    assert (count - before[0]) - (quick - before[1]) >= 1, "the blocked sample was not counted as lag over 50 ms"
