"""Admission of model calls through the gateway: budget reservations and a per-attempt rate limit (pure:
no I/O, the clock is passed in).

**Reservations.** Before a metered call is forwarded, the gateway reserves what it may cost::

    input   = ceil(request body bytes / BYTES_PER_TOKEN)         (an upper estimate of the prompt)
    choices = the request's larger of ``n`` and ``best_of`` (1 when it names neither)
    maximum = the request's max_tokens / max_completion_tokens / max_output_tokens,
              or the gateway's ``default_reserve_output_tokens`` when it names none
    output  = choices x maximum
    cost    = input x input price + output x output price          (0 for a model without a price)

and admits the call only if the build's ``spent`` (what its AgentTasks record) plus every reservation
still outstanding in this process plus this one fits ``spec.budget`` (:func:`Ledger.admit`). After the
call the reservation is settled: the real usage is written and the reservation dropped
(:meth:`Ledger.release`).

**No reservation exceeds what is left.** When the reservation does not fit and no other call of the build
is in flight on this replica, the maximum is lowered to what the rest of the budget pays for (per choice,
after the input), and the gateway writes that maximum into the forwarded body, so the upstream enforces
it. When not even one output token per choice is left the call is refused (402). While other calls are in
flight it is 429: their reservations may come back unused. A call that names no maximum always gets one
written (:attr:`Admitted.write_max`). So the build's overshoot is bounded by what one replica's calls use
beyond their reservations (a prompt that is more tokens than its bytes / 4; an upstream that ignores the
maximum), never by a reservation admitted beyond the budget.
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


@dataclass(frozen=True)
class Request:
    """What a metered call asks for, as far as its reservation goes."""

    input_tokens: int = 0
    """The prompt's estimate: ceil(body bytes / BYTES_PER_TOKEN)."""
    choices: int = 1
    """Completions the upstream generates: the larger of ``n`` and ``best_of``."""
    maximum: int | None = None
    """The output maximum per choice that the request names (None: it names none)."""
    default_maximum: int = 4096
    """What is reserved, and written into the body, per choice when it names none."""
    input_price: float = 0.0
    output_price: float = 0.0
    per_tokens: int = 1_000_000

    def claim(self, maximum: int) -> Claim:
        """The reservation when each choice may produce at most ``maximum`` tokens."""
        output_tokens = self.choices * max(maximum, 0)
        cost = round((self.input_tokens * self.input_price + output_tokens * self.output_price) / self.per_tokens, 9)
        return Claim(self.input_tokens, output_tokens, cost)


def request(body_bytes: int, max_output_tokens: int | None, *, choices: int = 1, default_output_tokens: int,
            input_price: float = 0.0, output_price: float = 0.0, per_tokens: int = 1_000_000) -> Request:
    """The :class:`Request` of a call with a ``body_bytes`` body asking for ``choices`` completions of at most
    ``max_output_tokens`` each (None: it names no maximum). Prices are per ``per_tokens``."""
    return Request(math.ceil(max(body_bytes, 0) / BYTES_PER_TOKEN), max(choices, 1),
                   max_output_tokens if max_output_tokens is not None and max_output_tokens >= 0 else None,
                   max(default_output_tokens, 0), input_price, output_price, per_tokens)


def estimate(body_bytes: int, max_output_tokens: int | None, *, choices: int = 1, default_output_tokens: int,
             input_price: float = 0.0, output_price: float = 0.0, per_tokens: int = 1_000_000) -> Claim:
    """The reservation of a call as it asks (before any clamp to the budget's remainder)."""
    asked = request(body_bytes, max_output_tokens, choices=choices, default_output_tokens=default_output_tokens,
                    input_price=input_price, output_price=output_price, per_tokens=per_tokens)
    return asked.claim(asked.maximum if asked.maximum is not None else asked.default_maximum)


def fits(budget: Mapping[str, Any] | None, total: usage.Totals) -> bool:
    """Whether ``total`` stays within ``spec.budget`` (``maxTokens``, ``maxCost``; unset means no limit)."""
    budget = budget or {}
    max_tokens, max_cost = budget.get("maxTokens"), budget.get("maxCost")
    if max_tokens is not None and total.tokens > int(max_tokens):
        return False
    return not (max_cost is not None and total.cost > float(max_cost))


def affordable(budget: Mapping[str, Any] | None, used: usage.Totals, asked: Request) -> int | None:
    """The largest output maximum per choice whose reservation, on top of ``used``, fits ``spec.budget``;
    None when the budget puts no limit on it (negative values mean not even the prompt fits)."""
    budget = budget or {}
    caps: list[int] = []
    if budget.get("maxTokens") is not None:
        caps.append((int(budget["maxTokens"]) - used.tokens - asked.input_tokens) // asked.choices)
    if budget.get("maxCost") is not None:
        money = float(budget["maxCost"]) - used.cost - asked.input_tokens * asked.input_price / asked.per_tokens
        if asked.output_price > 0:
            caps.append(math.floor(max(money, -1.0) * asked.per_tokens / asked.output_price) // asked.choices)
        elif money < 0:
            caps.append(-1)
    if not caps:
        return None
    cap = min(caps)
    for _ in range(3):  # float rounding of the cost: step down until the claim fits
        if cap < 1 or fits(budget, used + asked.claim(cap).totals):
            break
        cap -= 1
    return cap if cap < 1 or fits(budget, used + asked.claim(cap).totals) else 0


@dataclass(frozen=True)
class Admitted:
    ticket: int
    claim: Claim
    write_max: int | None = None
    """The output maximum per choice the gateway writes into the forwarded body (the default where the request
    names none, or the budget's remainder where it names more); None: the request's own maximum stands."""


@dataclass(frozen=True)
class Refused:
    status: Literal[402, 429]
    """402: the budget is spent (or what is left does not pay for the call's prompt and one output token per
    choice); 429: retry later (the rest of the budget is reserved by calls in flight)."""
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

    def admit(self, build: BuildKey, attempt: AttemptKey, asked: Request, *, budget: Mapping[str, Any] | None,
              spent: usage.Totals) -> Decision:
        """Admit a call (recording its reservation, clamped to what is left) or say why not; see the module's
        docstring."""
        why = usage.budget_spent(budget, spent)
        if why:
            return Refused(402, "budget_exceeded", f"{why}; no more model calls for this build until spec.budget "
                                                   "is raised")
        outstanding = self.outstanding(build)
        wanted = asked.maximum if asked.maximum is not None else asked.default_maximum
        claim = asked.claim(wanted)
        write = None if asked.maximum is not None else wanted
        if not fits(budget, spent + outstanding + claim.totals):
            if self._builds.get(build):
                calls = len(self._builds[build])
                return Refused(429, "budget_reserved", f"the rest of spec.budget is reserved by {calls} model "
                                                       f"call(s) in flight ({outstanding.tokens} tokens); retry "
                                                       "when they end", 1)
            cap = affordable(budget, spent, asked)
            if cap is not None and cap < 1:
                per = f" for each of its {asked.choices} completions (n, best_of)" if asked.choices > 1 else ""
                return Refused(402, "budget_exceeded", f"what is left of spec.budget (the build used {spent.tokens} "
                                                       f"tokens, cost {spent.cost:.6g}) does not pay for this call's "
                                                       f"prompt of about {asked.input_tokens} tokens and one output "
                                                       f"token{per}; no more model calls for this build until "
                                                       "spec.budget is raised")
            if cap is not None and cap < wanted:
                claim, write = asked.claim(cap), cap
        ticket = next(self._ids)
        self._entries[ticket] = _Entry(build, attempt, claim)
        self._builds.setdefault(build, set()).add(ticket)
        self._attempts.setdefault(attempt, set()).add(ticket)
        return Admitted(ticket, claim, write)

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
