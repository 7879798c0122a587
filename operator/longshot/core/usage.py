"""A build's model usage from its AgentTasks, and whether its budget is spent (pure).

One function for both sides, so the gateway (which refuses model calls once the budget is spent) and the
operator (which writes ``BuildRequest.status.usage`` and stops starting Pods) can never disagree:

    build total = every attempt's usage, over every AgentTask of the build

where an attempt's usage is, field by field, the larger of what the operator recorded when the attempt
ended (``status.attempts[n].tokens/cost``) and what the gateway metered while it ran
(``status.progress`` when ``progress.attempt == n``). The gateway's figures only grow during an attempt
and the recorded ones are copied from them (or from the handoff, which the agent wrote and could
understate), so taking the larger never counts an attempt twice and never less than was metered.

A call charged after the progress moved on to the task's next attempt (its answer reached the gateway late) is
kept in ``status.progress.earlier``: per earlier attempt, what the gateway metered for it in all (:func:`charge_late`,
:func:`carry`). It counts like the progress, the larger of it and the record, until the operator raises the
attempt's record to it (``core.tasks.late_usage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    for number, late in earlier(progress).items():
        per[number] = per.get(number, Totals()).larger(late)
    number = _number(progress.get("attempt"), int)
    if number:
        per[number] = per.get(number, Totals()).larger(
            Totals(_number(progress.get("tokens"), int), _number(progress.get("cost"), float)))
    return per


EARLIER_MAX = 8
"""Most earlier attempts ``status.progress.earlier`` keeps (those of the highest numbers)."""


def earlier(progress: Mapping[str, Any]) -> dict[int, Totals]:
    """What the gateway metered in all for attempts before the progress's own (``progress.earlier``), by number."""
    out: dict[int, Totals] = {}
    entries = progress.get("earlier")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and (number := _number(entry.get("attempt"), int)):
            out[number] = out.get(number, Totals()).larger(
                Totals(_number(entry.get("tokens"), int), _number(entry.get("cost"), float)))
    return out


def _recorded(attempts: Sequence[Mapping[str, Any]], number: int) -> Totals:
    total = Totals()
    for a in attempts:
        if _number(a.get("number"), int) == number:
            total = total.larger(Totals(_number(a.get("tokens"), int), _number(a.get("cost"), float)))
    return total


def _wire(per: Mapping[int, Totals]) -> list[dict[str, Any]]:
    kept = sorted(per)[-EARLIER_MAX:]
    return [{"attempt": n, "tokens": per[n].tokens, "cost": per[n].cost} for n in kept]


def charge_late(progress: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]], number: int,
                charged: Totals) -> list[dict[str, Any]]:
    """``progress.earlier`` with ``charged`` added to attempt ``number``, which the progress is past (a call whose
    answer reached the gateway after the task's next attempt started metering). The attempt's total starts from
    the larger of its record (``status.attempts``: the operator's copy of what was metered, or the handoff's
    figures) and what ``earlier`` held for it already, so a record that said more keeps its surplus and the
    charge is counted on top of it."""
    per = earlier(progress)
    per[number] = per.get(number, Totals()).larger(_recorded(attempts, number)) + charged
    return _wire(per)


def carry(progress: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """``progress.earlier`` for a write that starts a new attempt's progress: the old attempt's metered figures are
    kept there when they are more than its record says (a late charge the operator has not copied yet), else
    None (nothing to keep; the list stays as it is)."""
    number = _number(progress.get("attempt"), int)
    if not number:
        return None
    metered = Totals(_number(progress.get("tokens"), int), _number(progress.get("cost"), float))
    recorded = _recorded(attempts, number)
    if metered.tokens <= recorded.tokens and metered.cost <= recorded.cost:
        return None
    per = earlier(progress)
    per[number] = per.get(number, Totals()).larger(metered).larger(recorded)
    return _wire(per)


def metered(progress: Mapping[str, Any], number: int) -> Totals | None:
    """What the gateway metered for attempt ``number``: the larger of the progress's figures (when they are that
    attempt's) and ``earlier``'s; None when it metered nothing for it."""
    found = earlier(progress).get(number)
    if _number(progress.get("attempt"), int) == number:
        live = Totals(_number(progress.get("tokens"), int), _number(progress.get("cost"), float))
        found = live if found is None else found.larger(live)
    return found


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
