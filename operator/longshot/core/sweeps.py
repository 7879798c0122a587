"""When a build runs its next periodic build/test sweep on the target branch (``spec.reconciler``).

A sweep is a tester AgentTask (``<build>-sweep-<n>``) that runs ``spec.reconciler.command`` at the tip of the
target branch and reports whether it passes. While the build works:

1. nothing runs before the first merge (the target is what the build started from), with sweeps disabled, or
   while a sweep is running;
2. a sweep runs again only when something merged since the last one began (the target moved), and not while
   the target tip is a commit the build's quality gate tested and passed with a command that covers the
   reconciler's (:func:`gate_covers`; the merge queue lands exactly the commit its gate tested, so a sweep would
   run the same command on the same commit): the shell reads the tip when a sweep would start and says so
   (``tip_tested_at``, the branches merged then); a target moved by anything else (a person's push, another
   build with another gate) is swept as before;
3. after a sweep, the next waits ``intervalSeconds``; after a failed one a quarter of it (at least 30 s): a
   broken target is checked again sooner;
4. a failed sweep gets a fixer (``<sweep>-fix``) when the next sweep starts, if the build may still create one
   (``reconciler.maxFixersPerSweep`` at least 1, ``merge.maxFixers`` not used up) and it does not exist yet.

When the final sweep of finalization runs is not decided here (``core.finalization``); whether it gets a fixer
is (:func:`may_fix`), whether a quality-gate run can stand for it is (:func:`gate_covers`), and so is whether an
*early* final sweep is kept (:func:`early_sweep_kept`): when an iteration ends and the next iteration's planner
starts, the final sweep starts beside it (``<build>-final-i<k>``); if the planner answers done, finalization adopts
that sweep instead of starting one after it (the build ends a sweep's run sooner); if the planner plans more, or
anything merges meanwhile, the early sweep no longer tests what the build ends with and is cancelled.

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


def next_sweep(sweeps: Sequence[SweepView], merged: int, settings: Settings, now: datetime, *,
               tip_tested_at: int | None = None) -> Decision:
    """What to do about the build's periodic sweeps, given the sweeps so far (oldest first), the number of its
    branches merged, and ``tip_tested_at``: the number merged when the target tip was last found to be a commit a
    passing quality-gate run covering the reconciler command tested (None: not found, or not looked at)."""
    if not settings.enabled or merged == 0:
        return None
    if any(not s.finished for s in sweeps):
        return None
    last = sweeps[-1] if sweeps else None
    if last is not None and merged <= last.merged_at_start:
        return None  # the target has not moved since the last sweep began
    if tip_tested_at is not None and merged <= tip_tested_at:
        return None  # the target has not moved since the gate tested the commit it is now
    interval = settings.interval_seconds
    if last is not None and not last.passed:
        interval = max(FAILED_INTERVAL_FLOOR, interval // 4)
    if last is not None and last.ended is not None and now < last.ended + timedelta(seconds=interval):
        return WaitUntil(last.ended + timedelta(seconds=interval))
    fix = last.name if last is not None and not last.passed and may_fix(settings, last.fixer_exists) else None
    return Start(len(sweeps) + 1, merged, fix)


def gate_covers(gate_parts: Sequence[str], command: str) -> bool:
    """Whether a passing quality gate made of ``gate_parts`` (run as ``part && part ...``) means ``command`` passes on
    the same commit: ``command`` is the whole gate or one of its parts (each part ran, and exited 0)."""
    command = command.strip()
    parts = [p.strip() for p in gate_parts if p and p.strip()]
    return bool(command) and (command in parts or command == " && ".join(parts))


def may_fix(settings: Settings, fixer_exists: bool) -> bool:
    """Whether a failed sweep (periodic or final) gets a fixer: the build may still create one and it does not
    exist yet."""
    return settings.max_fixers_per_sweep >= 1 and settings.fixers_left > 0 and not fixer_exists


@dataclass(frozen=True, slots=True)
class EarlySweep:
    """A final sweep begun beside iteration ``iteration``'s planner (``core.builds.StartEarlySweep``)."""

    name: str
    iteration: int
    merged_at_start: int
    adopted: bool = False
    """Finalization took it as an attempt's final sweep (its ``longshot.dev/final-attempt`` annotation)."""


def early_sweep_kept(sweep: EarlySweep, *, iteration: int, planning: bool, request_met: bool, attempt: int,
                     merged: int) -> bool:
    """Whether an early final sweep still tests what the build will end with: adopted, or begun beside the current
    iteration's planner that has not answered yet (``planning``) or answered that the request is met
    (``request_met``; a planner that planned more work means more merges), before finalization began (``attempt``
    0), with nothing merged since it began. Not kept: the shell cancels it."""
    if sweep.adopted:
        return True
    return (sweep.iteration == iteration and (planning or request_met) and attempt == 0
            and sweep.merged_at_start == merged)
