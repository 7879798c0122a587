"""Effects: what a decider asks the shell to do, as plain frozen data.

Effects shared by the AgentTask and BuildRequest deciders live here; each decider module re-exports the
ones it emits. The shell carries them out in order and writes the new state's status once at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

S = TypeVar("S")
E = TypeVar("E")
F = TypeVar("F")


class InvalidTransition(RuntimeError):
    """The event cannot happen in this phase; the shell's view of the world is wrong (a bug). One class for every
    decider (``core.tasks``, ``core.builds``, ``core.mergejobs`` re-export it)."""


def fold(decide: Callable[[S, E], tuple[S, list[F]]], state: S,
         events: Iterable[E]) -> tuple[S, list[F], list[InvalidTransition]]:
    """Every event through ``decide`` in turn: the last state, every effect in order, and the events that were
    impossible (skipped, not retried: they would be impossible again; the shell logs them). The one loop every
    reconciler folds its events with."""
    effects: list[F] = []
    invalid: list[InvalidTransition] = []
    for event in events:
        try:
            state, more = decide(state, event)
        except InvalidTransition as e:
            invalid.append(e)
            continue
        effects.extend(more)
    return state, effects, invalid


@dataclass(frozen=True)
class SetCondition:
    """Set condition ``type`` with ``conditions.set_condition`` (reasons are from ``api.conditions.REASONS``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True)
class EmitEvent:
    """Record a Kubernetes Event on the resource. ``type`` is ``Normal`` or ``Warning``.

    ``routine``: the Event says that one task or MergeJob of a build took its usual next step (an attempt started
    or succeeded, a job merged), which its status and conditions say too. The shell spends a budget per build on
    those (``controllers.executor.ROUTINE_EVENT_BURST``), so that a thousand agents do not write an Event for every
    step; Warnings and the other Events are never routine."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    routine: bool = False
