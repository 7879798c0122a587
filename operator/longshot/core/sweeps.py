"""When a build runs its next periodic build/test sweep on the target branch (``spec.reconciler``).

A sweep is a tester AgentTask (``<build>-sweep-<n>``) that runs ``spec.reconciler.command`` at the tip of the
target branch and reports whether it passes. While the build works:

1. nothing runs before the first merge (the target is what the build started from), with sweeps disabled, or
   while a sweep is running;
2. a sweep runs again only when something merged since the last one began (the target moved);
3. after a sweep, the next waits ``intervalSeconds``; after a failed one a quarter of it (at least 30 s): a
   broken target is checked again sooner;
4. a failed sweep gets a fixer (``<sweep>-fix``) when the next sweep starts, if the build may still create one
   (``reconciler.maxFixersPerSweep`` at least 1, ``merge.maxFixers`` not used up) and it does not exist yet.

When the final sweep of finalization runs is not decided here (``core.finalization``); whether it gets a fixer
is (:func:`may_fix`).

Pure: the shell (``controllers/builds.py``) gathers the facts and creates what this returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

FAILED_INTERVAL_FLOOR: Final = 30
"""Seconds: the shortest wait after a failed sweep."""


@dataclass(frozen=True, slots=True)
class SweepView:
    """A periodic sweep of the build, oldest first."""

    name: str
    finished: bool
    passed: bool = False
    merged_at_start: int = 0
    """Branches merged when it was created (its ``longshot.dev/merged-count`` annotation)."""
    ended: datetime | None = None
    fixer_exists: bool = False
    """Its fixer task exists already."""


@dataclass(frozen=True, slots=True)
class Settings:
    enabled: bool = True
    interval_seconds: int = 300
    max_fixers_per_sweep: int = 1
    fixers_left: int = 5
    """Fixer tasks the build may still create (``merge.maxFixers`` minus those created)."""


@dataclass(frozen=True, slots=True)
class Start:
    """Create sweep number ``number`` (recording ``merged``), and a fixer for ``fix`` (the failed last sweep)."""

    number: int
    merged: int
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing now: decide again at ``at``."""

    at: datetime


Decision = Start | WaitUntil | None


def next_sweep(sweeps: Sequence[SweepView], merged: int, settings: Settings, now: datetime) -> Decision:
    """What to do about the build's periodic sweeps, given the sweeps so far (oldest first) and the number of
    its branches merged."""
    if not settings.enabled or merged == 0:
        return None
    if any(not s.finished for s in sweeps):
        return None
    last = sweeps[-1] if sweeps else None
    if last is not None and merged <= last.merged_at_start:
        return None  # the target has not moved since the last sweep began
    interval = settings.interval_seconds
    if last is not None and not last.passed:
        interval = max(FAILED_INTERVAL_FLOOR, interval // 4)
    if last is not None and last.ended is not None and now < last.ended + timedelta(seconds=interval):
        return WaitUntil(last.ended + timedelta(seconds=interval))
    fix = last.name if last is not None and not last.passed and may_fix(settings, last.fixer_exists) else None
    return Start(len(sweeps) + 1, merged, fix)


def may_fix(settings: Settings, fixer_exists: bool) -> bool:
    """Whether a failed sweep (periodic or final) gets a fixer: the build may still create one and it does not
    exist yet."""
    return settings.max_fixers_per_sweep >= 1 and settings.fixers_left > 0 and not fixer_exists
