"""Reading the effects a decider returns, shared by the decider tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from longshot.api import conditions
from longshot.core.effects import SetCondition


def checked(effects: list[Any]) -> list[Any]:
    """``effects``, after checking every condition reason is one the setter accepts."""
    for e in effects:
        if isinstance(e, SetCondition):
            assert e.reason in conditions.REASONS, e
    return effects


def of(effects: Iterable[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def cond(effects: Iterable[Any], type_: str) -> SetCondition:
    (c,) = [e for e in effects if isinstance(e, SetCondition) and e.type == type_]
    return c
