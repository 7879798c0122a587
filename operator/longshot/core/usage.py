"""A build's model usage from its AgentTasks, and whether its budget is spent (pure).

One function for both sides, so the gateway (which refuses model calls once the budget is spent) and the
operator (which writes ``BuildRequest.status.usage`` and stops starting Pods) can never disagree:

    build total = every attempt's usage, over every AgentTask of the build

where an attempt's usage is, field by field, the larger of what the operator recorded when the attempt
ended (``status.attempts[n].tokens/cost``) and what the gateway metered while it ran
(``status.progress`` when ``progress.attempt == n``). The gateway's figures only grow during an attempt
and the recorded ones are copied from them (or from the handoff, which the agent wrote and could
understate), so taking the larger never counts an attempt twice and never less than was metered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Totals:
    tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.tokens + other.tokens, round(self.cost + other.cost, 9))

    def larger(self, other: Totals) -> Totals:
        return Totals(max(self.tokens, other.tokens), max(self.cost, other.cost))


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        result = kind(value or 0)
    except (TypeError, ValueError):
        return kind(0)
    return result if result > 0 else kind(0)


def attempt_usage(task: Mapping[str, Any]) -> dict[int, Totals]:
    """Usage per attempt number of one AgentTask (recorded attempts and the live progress)."""
    status = task.get("status") or {}
    per: dict[int, Totals] = {}
    for attempt in status.get("attempts") or []:
        number = _number(attempt.get("number"), int)
        if number:
            per[number] = per.get(number, Totals()).larger(
                Totals(_number(attempt.get("tokens"), int), _number(attempt.get("cost"), float)))
    progress = status.get("progress") or {}
    number = _number(progress.get("attempt"), int)
    if number:
        per[number] = per.get(number, Totals()).larger(
            Totals(_number(progress.get("tokens"), int), _number(progress.get("cost"), float)))
    return per


def task_usage(task: Mapping[str, Any]) -> Totals:
    total = Totals()
    for usage in attempt_usage(task).values():
        total += usage
    return total


def build_usage(tasks: Iterable[Mapping[str, Any]]) -> Totals:
    """The build's total over ``tasks`` (its AgentTasks, as the API returns them)."""
    total = Totals()
    for task in tasks:
        total += task_usage(task)
    return total


def budget_spent(budget: Mapping[str, Any] | None, used: Totals) -> str | None:
    """Why ``spec.budget`` (``maxTokens``, ``maxCost``) is spent by ``used``, or None while it is not."""
    budget = budget or {}
    max_tokens, max_cost = budget.get("maxTokens"), budget.get("maxCost")
    if max_tokens is not None and used.tokens >= int(max_tokens):
        return f"the build used {used.tokens} tokens of its budget of {int(max_tokens)} (spec.budget.maxTokens)"
    if max_cost is not None and used.cost >= float(max_cost):
        return (f"the build used {used.cost:.6g} of its cost budget of {float(max_cost):.6g} "
                "(spec.budget.maxCost)")
    return None
