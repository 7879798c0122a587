"""Admission of model calls through the gateway: budget reservations and a per-attempt rate limit (pure:
no I/O, the clock is passed in).

**Reservations.** Before a metered call is forwarded, the gateway reserves what it may cost::

    input  = ceil(request body bytes / BYTES_PER_TOKEN)          (an upper estimate of the prompt)
    output = the request's max_tokens / max_completion_tokens / max_output_tokens,
             or the gateway's ``default_reserve_output_tokens`` when it names none
    cost   = input x input price + output x output price           (0 for a model without a price)

and admits the call only if the build's ``spent`` (what its AgentTasks record) plus every reservation
still outstanding in this process plus this one fits ``spec.budget`` (:func:`admit`). After the call the
reservation is settled: the real usage is written and the reservation dropped (:meth:`Ledger.release`).

One exception keeps small budgets usable: an attempt with no reservation outstanding may make one call
while the budget is not yet reached by ``spent`` plus the outstanding reservations, even if its
reservation does not fit. So the build's overshoot is at most **one reservation per attempt** (per gateway
replica: each replica holds its own reservations; see docs/security.md for N replicas).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

from longshot.core import usage

BYTES_PER_TOKEN = 4
"""Request bytes per reserved input token: JSON of English text and code is 3.5-4.5 bytes a token."""

BuildKey = tuple[str, str]
"""(namespace, build)"""
AttemptKey = tuple[str, str, int]
"""(namespace, task, attempt)"""


@dataclass(frozen=True)
class Claim:
    """What one call may cost: its reservation."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def totals(self) -> usage.Totals:
        return usage.Totals(self.tokens, self.cost)


def estimate(body_bytes: int, max_output_tokens: int | None, *, default_output_tokens: int,
             input_price: float = 0.0, output_price: float = 0.0, per_tokens: int = 1_000_000) -> Claim:
    """The reservation of a call with a ``body_bytes`` request asking for at most ``max_output_tokens``
    (None: it names no limit, ``default_output_tokens`` is reserved). Prices are per ``per_tokens``."""
    input_tokens = math.ceil(max(body_bytes, 0) / BYTES_PER_TOKEN)
    output_tokens = max_output_tokens if max_output_tokens is not None and max_output_tokens >= 0 \
        else default_output_tokens
    cost = round((input_tokens * input_price + output_tokens * output_price) / per_tokens, 9)
    return Claim(input_tokens, output_tokens, cost)


def fits(budget: Mapping[str, Any] | None, total: usage.Totals) -> bool:
    """Whether ``total`` stays within ``spec.budget`` (``maxTokens``, ``maxCost``; unset means no limit)."""
    budget = budget or {}
    max_tokens, max_cost = budget.get("maxTokens"), budget.get("maxCost")
    if max_tokens is not None and total.tokens > int(max_tokens):
        return False
    return not (max_cost is not None and total.cost > float(max_cost))


@dataclass(frozen=True)
class Admitted:
    ticket: int
    claim: Claim
    beyond_budget: bool
    """Admitted by the one-call-per-attempt exception: its reservation did not fit."""


@dataclass(frozen=True)
class Refused:
    status: Literal[402, 429]
    """402: the budget is spent; 429: retry later (the rest of the budget is reserved by calls in flight)."""
    kind: Literal["budget_exceeded", "budget_reserved"]
    message: str
    retry_after: int | None = None


Decision = Admitted | Refused


@dataclass
class _Entry:
    build: BuildKey
    attempt: AttemptKey
    claim: Claim


@dataclass
class Ledger:
    """The reservations outstanding in this process, per build and per attempt."""

    _entries: dict[int, _Entry] = field(default_factory=dict)
    _builds: dict[BuildKey, set[int]] = field(default_factory=dict)
    _attempts: dict[AttemptKey, set[int]] = field(default_factory=dict)
    _ids: count[int] = field(default_factory=lambda: count(1))

    def outstanding(self, build: BuildKey) -> usage.Totals:
        total = usage.Totals()
        for ticket in self._builds.get(build, ()):
            total += self._entries[ticket].claim.totals
        return total

    def in_flight(self, attempt: AttemptKey) -> int:
        return len(self._attempts.get(attempt, ()))

    def admit(self, build: BuildKey, attempt: AttemptKey, claim: Claim, *, budget: Mapping[str, Any] | None,
              spent: usage.Totals) -> Decision:
        """Admit a call (recording its reservation) or say why not; see the module's docstring."""
        why = usage.budget_spent(budget, spent)
        if why:
            return Refused(402, "budget_exceeded", f"{why}; no more model calls for this build until spec.budget "
                                                   "is raised")
        outstanding = self.outstanding(build)
        beyond = False
        if not fits(budget, spent + outstanding + claim.totals):
            if self.in_flight(attempt) or usage.budget_spent(budget, spent + outstanding):
                calls = len(self._builds.get(build, ()))
                return Refused(429, "budget_reserved", f"the rest of spec.budget is reserved by {calls} model "
                                                       f"call(s) in flight ({outstanding.tokens} tokens); retry "
                                                       "when they end", 1)
            beyond = True
        ticket = next(self._ids)
        self._entries[ticket] = _Entry(build, attempt, claim)
        self._builds.setdefault(build, set()).add(ticket)
        self._attempts.setdefault(attempt, set()).add(ticket)
        return Admitted(ticket, claim, beyond)

    def release(self, ticket: int) -> None:
        """Drop a reservation (after its real usage was recorded, or when the call never reached the model)."""
        entry = self._entries.pop(ticket, None)
        if entry is None:
            return
        _discard(self._builds, entry.build, ticket)
        _discard(self._attempts, entry.attempt, ticket)


def _discard(index: dict[Any, set[int]], key: Any, ticket: int) -> None:
    tickets = index.get(key)
    if tickets is not None:
        tickets.discard(ticket)
        if not tickets:
            del index[key]


@dataclass
class TokenBucket:
    """A token bucket per key: ``rate`` calls a second on average, bursts of up to ``burst``."""

    rate: float
    burst: int
    _state: dict[Any, tuple[float, float]] = field(default_factory=dict)
    max_keys: int = 10_000

    def take(self, key: Any, now: float) -> float:
        """Take one token for ``key`` at ``now``; 0.0 when taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(now - last, 0.0) * self.rate)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            if len(self._state) > self.max_keys:
                self._state.pop(next(iter(self._state)))
            return 0.0
        self._state[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
