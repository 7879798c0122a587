"""Retry delays per failure class: exponential backoff with jitter and a cap.

``delay(attempt, failure_class, policy, rand)`` is the wait before the next attempt after ``attempt``
(counted from 1 since the last manual retry) failed with ``failure_class``; ``None`` means do not retry.

With ``b = policy.backoffSeconds`` and ``cap = policy.maxBackoffSeconds``:

================  =====================  ======================================  ==============================
class             base                   attempts allowed                        why
================  =====================  ======================================  ==============================
AgentError        b                      maxAttempts                             the agent may do better
Timeout           b                      maxAttempts                             may be a slow model or node
OOMKilled         b                      maxAttempts                             memory use varies per run
RateLimited       max(6*b, 60 s)         maxAttempts + 3                         waiting is the cure
Infrastructure    max(3*b, 30 s)         maxAttempts + 2                         not the agent's fault
InvalidHandoff    b                      min(maxAttempts, 2): one retry at most  a bug rarely fixes itself
Auth              -                      never (``None``)                        needs a person: fix the Secret
Configuration     -                      never (``None``)                        needs a person: fix the spec
BudgetExceeded    -                      never (``None``)                        needs a person: raise the budget
================  =====================  ======================================  ==============================

The attempts allowed never exceed :data:`MAX_ATTEMPTS` (the length of ``status.attempts``).

The n-th delay is ``d = min(max(cap, base), base * 2**(n-1))`` with "equal jitter": the result is
``d/2 + rand() * d/2``, so it lies in ``[d/2, d]`` — it still grows, and a fleet of tasks that failed
together (a rate limit) does not come back together. ``rand`` returns a float in ``[0, 1)``, like
``random.random``; tests pass a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from longshot.api.agenttask import FailureClass
from longshot.api.buildrequest import RetryPolicy

MAX_ATTEMPTS: Final = 20
"""Hard limit of attempts of one task (``status.attempts`` holds at most 20)."""


@dataclass(frozen=True)
class ClassRule:
    """Retry behaviour of one failure class."""

    retry: bool = True
    base_factor: float = 1.0
    """Multiplier of ``policy.backoffSeconds``."""
    min_base: float = 0.0
    """Floor of the first delay, in seconds."""
    extra_attempts: int = 0
    """Attempts allowed on top of ``policy.maxAttempts``."""
    max_attempts: int | None = None
    """Ceiling of attempts for this class, whatever the policy says."""


RULES: Final[Mapping[FailureClass, ClassRule]] = {
    "AgentError": ClassRule(),
    "Timeout": ClassRule(),
    "OOMKilled": ClassRule(),
    "RateLimited": ClassRule(base_factor=6, min_base=60, extra_attempts=3),
    "Infrastructure": ClassRule(base_factor=3, min_base=30, extra_attempts=2),
    "InvalidHandoff": ClassRule(max_attempts=2),
    "Auth": ClassRule(retry=False),
    "Configuration": ClassRule(retry=False),
    "BudgetExceeded": ClassRule(retry=False),
}


def attempts_allowed(failure_class: FailureClass, policy: RetryPolicy) -> int:
    """How many attempts a task may make when its last one failed with ``failure_class``."""
    rule = RULES[failure_class]
    if not rule.retry:
        return 1
    allowed = policy.max_attempts + rule.extra_attempts
    if rule.max_attempts is not None:
        allowed = min(allowed, rule.max_attempts)
    return min(allowed, MAX_ATTEMPTS)


def delay(
    attempt: int,
    failure_class: FailureClass,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> float | None:
    """Seconds to wait before retrying after ``attempt`` (from 1) failed, or None: do not retry."""
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, not {attempt}")
    rule = RULES[failure_class]
    if not rule.retry or attempt >= attempts_allowed(failure_class, policy):
        return None
    base = max(policy.backoff_seconds * rule.base_factor, rule.min_base)
    cap = max(float(policy.max_backoff_seconds), base)
    exponent = min(attempt - 1, 32)  # 2**32 * base is far past any cap; avoids huge floats
    full = min(cap, base * 2.0**exponent)
    r = min(max(rand(), 0.0), 1.0)
    return full / 2 + r * full / 2
