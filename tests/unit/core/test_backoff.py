from __future__ import annotations

import pytest

from longshot.api.buildrequest import RetryPolicy
from longshot.core import backoff

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(max_attempts=10, backoff_seconds=10, max_backoff_seconds=300)


def one() -> float:
    return 1.0


def zero() -> float:
    return 0.0


def test_grows_exponentially_then_caps():
    delays = [backoff.delay(n, "AgentError", POLICY, one) for n in range(1, 8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_jitter_stays_within_half_to_full():
    for n in range(1, 9):
        hi = backoff.delay(n, "Timeout", POLICY, one)
        lo = backoff.delay(n, "Timeout", POLICY, zero)
        mid = backoff.delay(n, "Timeout", POLICY, lambda: 0.5)
        assert hi is not None and lo is not None and mid is not None
        assert lo == hi / 2 and lo <= mid <= hi


def test_auth_never_retries():
    assert backoff.delay(1, "Auth", POLICY, one) is None


def test_invalid_handoff_retries_once():
    assert backoff.delay(1, "InvalidHandoff", POLICY, one) is not None
    assert backoff.delay(2, "InvalidHandoff", POLICY, one) is None


def test_max_attempts_stops_retries():
    policy = RetryPolicy(max_attempts=3)
    assert backoff.delay(2, "AgentError", policy, one) is not None
    assert backoff.delay(3, "AgentError", policy, one) is None
    assert backoff.delay(3, "OOMKilled", policy, one) is None


def test_rate_limit_and_infrastructure_wait_longer_and_retry_more():
    policy = RetryPolicy(max_attempts=3, backoff_seconds=10, max_backoff_seconds=600)
    assert backoff.delay(1, "RateLimited", policy, one) == 60
    assert backoff.delay(1, "Infrastructure", policy, one) == 30
    assert backoff.delay(5, "RateLimited", policy, one) is not None
    assert backoff.delay(6, "RateLimited", policy, one) is None
    assert backoff.delay(4, "Infrastructure", policy, one) is not None
    assert backoff.delay(5, "Infrastructure", policy, one) is None


def test_base_above_cap_is_still_honoured():
    policy = RetryPolicy(max_attempts=5, backoff_seconds=10, max_backoff_seconds=20)
    assert backoff.delay(3, "RateLimited", policy, one) == 60


def test_attempts_never_exceed_status_capacity():
    policy = RetryPolicy(max_attempts=10)
    assert backoff.attempts_allowed("RateLimited", policy) == 13
    assert backoff.delay(backoff.MAX_ATTEMPTS, "RateLimited", RetryPolicy(max_attempts=10), one) is None
