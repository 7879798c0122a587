"""Scheduled builds (a ``BuildSchedule``): the cron expression, its next run in a time zone, and the decider that
says which child BuildRequest to create, cancel or delete and when to look again. Pure: no I/O, ``now`` given.

**The expression** (:func:`parse`) is the standard five fields, ``minute hour day-of-month month day-of-week``,
each a list (``,``) of ``*``, ``N``, ``N-M``, with an optional step ``/S`` (``*/15``, ``1-30/2``, ``5/10`` meaning
``5-<max>/10``); months and days of the week by number or by their first three letters (``JAN``, ``MON``);
day-of-week 0 or 7 is Sunday. The macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(``@midnight``) and ``@hourly`` stand for their expressions. As in cron (and a Kubernetes CronJob), when both
day-of-month and day-of-week are restricted (neither starts with ``*``) a day matching either runs.

**The time zone** (``spec.timeZone``, an IANA name; UTC when unset) is where the expression is read. Wall-clock
time is not continuous there (:func:`next_after`):

* a wall-clock time that does not exist (the hour skipped when clocks go forward) runs at the first instant after
  the jump (a daily 02:30 job runs at 03:00 on that day, once however many of its times fell in the gap);
* a wall-clock time that happens twice (the hour repeated when clocks go back) runs once, at its first occurrence.

**The decider** (:func:`decide`) follows a Kubernetes CronJob. The *due* run is the latest scheduled time in
``(earliest, now]``, ``earliest`` being the last scheduled run (``status.lastScheduleTime``, or the newest child's
time) or else the schedule's creation, and at most ``startingDeadlineSeconds`` ago when that is set. Only the due
run is ever started, never the ones before it: a schedule that was down a day starts one build, not a storm.

    ==============================  ===============================  ===========================================
    schedule / children             condition                        decision
    ==============================  ===============================  ===========================================
    expression or zone unusable     -                                nothing runs; Ready=False, Stalled=True
                                                                     (InvalidSchedule, UnknownTimeZone), the
                                                                     field named; no requeue (an edit wakes it)
    ``suspend``                     -                                nothing starts (the runs it misses count as
                                                                     missed: resumed without a starting deadline,
                                                                     the latest of them starts at once, as a
                                                                     CronJob's); history still trimmed
    no due run                      -                                nothing; requeue at the next run
    due run, its child exists       -                                nothing (a restart, a second replica)
    due run                         older than startingDeadline      not started; MissedRuns=True
                                                                     (MissedStartingDeadline)
    due run                         Allow, or nothing active         create its child
    due run                         the API server refused its       not created; Ready=False, Stalled=True
                                    child (``refused``: an           (ChildRefused) with the server's message;
                                    admission policy, a bad label)   tried again at each reconcile (an edit, a
                                                                     child's change, the resync, the next run)
    due run                         Forbid, a child active           wait: it starts when the active child ends,
                                                                     if it is still the latest due run and within
                                                                     its starting deadline (a CronJob's Forbid)
    due run                         Replace, children active         cancel each active child (as a person does:
                                                                     spec.suspend on the build, spec.cancel on its
                                                                     unfinished tasks), create the new child
    more than 100 runs missed       -                                MissedRuns=True (TooManyMissedRuns: set
                                                                     startingDeadlineSeconds); still one child
    finished children               beyond successful/failed         delete the oldest (a cancelled child counts
                                    history limits                   as failed)
    ==============================  ===============================  ===========================================

A child is named from its run alone (:func:`child_name`: ``<schedule>-<minutes since the epoch>``, as a CronJob
names its Jobs), so deciding twice (a restart, a second replica, a race) names the same child and the API server's
AlreadyExists makes the second create a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from longshot.core import names

MAX_EXPRESSION: Final = 128
"""Longest expression read (the CRD says the same)."""
SEARCH_DAYS: Final = 366 * 5 + 2
"""How far ahead :func:`next_after` looks: an expression with no time in five years (``0 0 30 2 *``) never runs."""
MAX_MISSED: Final = 100
"""Missed runs counted before ``TooManyMissedRuns`` (a CronJob's limit)."""
SCHEDULE_LABEL: Final = "longshot.dev/schedule"
"""On a child build: the (fitted) name of the BuildSchedule that made it."""
SCHEDULED_ANNOTATION: Final = "longshot.dev/scheduled-time"
"""On a child build: the run it is for (RFC 3339, UTC)."""
REPLACED_ANNOTATION: Final = "longshot.dev/replaced"
"""On a child build: its schedule cancelled it (``concurrencyPolicy: Replace``)."""

MACROS: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_MONTHS: Final = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS: Final = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS))

Concurrency = Literal["Allow", "Forbid", "Replace"]
Outcome = Literal["Active", "Succeeded", "Failed"]


class CronError(ValueError):
    """An expression that cannot be read; the message says which field and why."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 (Sunday) to 6."""
    any_day: bool
    """Day-of-month starts with ``*``."""
    any_weekday: bool
    """Day-of-week starts with ``*``."""

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, d.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _number(text: str, what: str, names_: dict[str, int]) -> int:
    low = text.lower()
    if low in names_:
        return names_[low]
    if not text.isdigit() or len(text) > 2:
        raise CronError(f"{what}: {text!r} is not a number" + (" or a name" if names_ else ""))
    return int(text)


def _field(text: str, what: str, lo: int, hi: int, names_: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):  # at most 64 items: the expression is at most 128 characters
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or len(step_text) > 2 or int(step_text) == 0:
                raise CronError(f"{what}: the step of {item!r} must be a number from 1 to 99")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _number(a, what, names_), _number(b, what, names_)
        elif body:
            first = _number(body, what, names_)
            last = hi if slash else first
        else:
            raise CronError(f"{what}: empty item in {text!r}")
        if not lo <= first <= hi or not lo <= last <= hi:
            raise CronError(f"{what}: {item!r} is out of range {lo}-{hi}")
        if first > last:
            raise CronError(f"{what}: the range {item!r} ends before it starts")
        out.update(range(first, last + 1, step))
    return frozenset(out)


def parse(expression: str) -> Cron:
    """The expression, or :class:`CronError` naming the field and what is wrong."""
    if len(expression) > MAX_EXPRESSION:
        raise CronError(f"longer than {MAX_EXPRESSION} characters")
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"{len(parts)} fields; write five: minute hour day-of-month month day-of-week")
    sets = [_field(p, what, lo, hi, nm) for p, (what, lo, hi, nm) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(tuple(sorted(sets[0])), tuple(sorted(sets[1])), sets[2], sets[3], weekdays,
                parts[2].startswith("*"), parts[4].startswith("*"))


def zone(name: str | None) -> tzinfo | None:
    """The time zone of ``spec.timeZone`` (UTC when unset), or None when the zone database does not know it."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _gap_end(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant the clocks jumped, between ``before`` (its old offset) and ``after`` (the new one), in UTC, on
    the minute (the first whole minute with the new offset: zones jump on whole minutes)."""
    target = after.astimezone(tz).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())  # whole seconds: lo has the old offset, hi the new
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(-(-hi // 60) * 60, UTC)


def resolve(wall: datetime, tz: tzinfo) -> datetime:
    """The instant (UTC) a run at wall-clock time ``wall`` (naive) happens in ``tz``: its first occurrence when the
    time happens twice, the end of the jump when it does not exist."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    other = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # the wall time read with the offset before the jump
    return _gap_end(min(first, other), max(first, other), tz)


def next_after(cron: Cron, tz: tzinfo, after: datetime) -> datetime | None:
    """The first run strictly after ``after`` (aware), in UTC; None when there is none in :data:`SEARCH_DAYS`."""
    start = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    day = start.date()
    for _ in range(SEARCH_DAYS):
        if cron.day_matches(day):
            for h in cron.hours:
                for m in cron.minutes:
                    wall = datetime.combine(day, time(h, m))
                    if wall < start:
                        continue
                    at = resolve(wall, tz)
                    if at > after:
                        return at
        day += timedelta(days=1)
    return None


def child_name(schedule: str, run: datetime) -> str:
    """The child build of the run at ``run``: ``<schedule>-<minutes since the epoch>`` (shortened to fit a name)."""
    return names.child_name(schedule, str(int(run.timestamp()) // 60))


# --- the decider ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    schedule: str
    time_zone: str | None = None
    concurrency: Concurrency = "Allow"
    starting_deadline: int | None = None
    """``startingDeadlineSeconds``."""
    successful_limit: int = 3
    failed_limit: int = 1
    suspend: bool = False


@dataclass(frozen=True)
class Child:
    """A child build that exists."""

    name: str
    run: datetime
    """The run it is for (its annotation)."""
    outcome: Outcome = "Active"
    finished: datetime | None = None
    """When it finished (its ``status.completionTime``)."""
    replaced: bool = False
    """Its schedule cancelled it (Replace)."""

    @property
    def active(self) -> bool:
        return self.outcome == "Active" and not self.replaced


@dataclass(frozen=True)
class State:
    created: datetime
    """The schedule's creation."""
    last_schedule: datetime | None = None
    last_successful: datetime | None = None


@dataclass(frozen=True)
class Create:
    name: str
    run: datetime


@dataclass(frozen=True)
class Status:
    last_schedule: datetime | None
    last_successful: datetime | None
    next_schedule: datetime | None
    active: tuple[str, ...]


ConditionSet = tuple[str, str, str, str]
"""(type, status, reason, message)."""


@dataclass(frozen=True)
class Decision:
    create: Create | None = None
    cancel: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    requeue_at: datetime | None = None
    status: Status = field(default_factory=lambda: Status(None, None, None, ()))
    conditions: tuple[ConditionSet, ...] = ()


def _stuck(reason: str, message: str, status: Status, delete: tuple[str, ...]) -> Decision:
    return Decision(delete=delete, status=status, conditions=(
        ("Ready", "False", reason, message), ("Stalled", "True", reason, message),
        ("MissedRuns", "False", "OnTime", "no run is missed")))


def history(children: Sequence[Child], successful: int, failed: int) -> tuple[str, ...]:
    """The finished children beyond the history limits, oldest first (a cancelled child counts as failed)."""
    done = sorted((c for c in children if not c.active), key=lambda c: (c.run, c.name), reverse=True)
    good = [c for c in done if c.outcome == "Succeeded" and not c.replaced]
    bad = [c for c in done if not (c.outcome == "Succeeded" and not c.replaced)]
    return tuple(c.name for c in sorted([*good[successful:], *bad[failed:]], key=lambda c: (c.run, c.name)))


def due(cron: Cron, tz: tzinfo, earliest: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The latest run in ``(earliest, now]`` and how many there are (counted up to ``MAX_MISSED + 1``)."""
    latest, count, t = None, 0, earliest
    while count <= MAX_MISSED:
        nxt = next_after(cron, tz, t)
        if nxt is None or nxt > now:
            return latest, count
        latest, count, t = nxt, count + 1, nxt
    return _latest_before(cron, tz, t, now), count


def _latest_before(cron: Cron, tz: tzinfo, after: datetime, now: datetime) -> datetime:
    """The latest run in ``(after, now]``, ``after`` being a run: looked for from recent windows backwards, so a
    schedule down for a year does not walk every minute of it."""
    window = timedelta(hours=1)
    while True:
        start = max(after, now - window)
        t, latest = start, None
        while (nxt := next_after(cron, tz, t)) is not None and nxt <= now:
            latest, t = nxt, nxt
        if latest is not None or start == after:
            return latest if latest is not None else after
        window *= 8


def _stale(cron: Cron, tz: tzinfo, spec: Spec, base: datetime, now: datetime) -> datetime | None:
    """The latest run after ``base`` (the last run started) that is older than the starting deadline: it never
    started and never will (None without a deadline)."""
    if spec.starting_deadline is None:
        return None
    return due(cron, tz, base, now - timedelta(seconds=spec.starting_deadline))[0]


def decide(name: str, spec: Spec, state: State, children: Sequence[Child], *, tz: tzinfo | None,
           now: datetime, refused: Mapping[str, str] | None = None) -> Decision:
    """What to do now (see the module's table). ``refused``: child name -> the API server's message, for a child
    whose creation this reconcile saw refused (the shell decides again with it)."""
    active = tuple(sorted(c.name for c in children if c.active))
    finished_ok = [c.finished for c in children if c.outcome == "Succeeded" and c.finished is not None]
    last_successful = max([*finished_ok, *([state.last_successful] if state.last_successful else [])], default=None)
    runs = [c.run for c in children]
    last_schedule = max([*runs, *([state.last_schedule] if state.last_schedule else [])], default=None)
    trim = history(children, spec.successful_limit, spec.failed_limit)
    try:
        cron = parse(spec.schedule)
    except CronError as e:
        return _stuck("InvalidSchedule", f"spec.schedule {spec.schedule!r}: {e}; write five cron fields or a macro "
                                         "such as @daily", Status(last_schedule, last_successful, None, active), trim)
    if tz is None:
        return _stuck("UnknownTimeZone", f"spec.timeZone {spec.time_zone!r} is not in the operator's time zone "
                                         "database; use an IANA name such as Europe/Berlin",
                      Status(last_schedule, last_successful, None, active), trim)
    upcoming = next_after(cron, tz, now)
    if upcoming is None:
        return _stuck("InvalidSchedule", f"spec.schedule {spec.schedule!r} matches no time in the next five years "
                                         "(a day its months never have?); fix the day-of-month or the month",
                      Status(last_schedule, last_successful, None, active), trim)

    earliest = last_schedule or state.created
    if spec.starting_deadline is not None:
        earliest = max(earliest, now - timedelta(seconds=spec.starting_deadline))
    run, missed = due(cron, tz, earliest, now)

    create: Create | None = None
    cancel: tuple[str, ...] = ()
    waiting = ""
    refusal = ""
    taken = {c.name for c in children}
    if run is not None and not spec.suspend:
        child = child_name(name, run)
        if child in taken:
            pass
        elif refused and child in refused:
            refusal = (f"the API server refused the child {child} of the run of {run.isoformat()}: "
                       f"{refused[child][:1024]}; fix spec.buildTemplate (or the policy that refuses it)")
        elif spec.concurrency == "Forbid" and active:
            waiting = (f"the run of {run.isoformat()} waits for {', '.join(active)} to finish "
                       "(concurrencyPolicy Forbid)")
        else:
            create = Create(child, run)
            if spec.concurrency == "Replace":
                cancel = active
    if create is not None:
        last_schedule = max(last_schedule or create.run, create.run)
        active = tuple(sorted({*(a for a in active if a not in cancel), create.name}))

    status = Status(last_schedule, last_successful, None if spec.suspend else upcoming, active)
    if spec.suspend:
        ready = ("Ready", "True", "Suspended", "spec.suspend is true: no run starts")
    else:
        at = upcoming.isoformat() if upcoming is not None else "never"
        ready = ("Ready", "True", "Scheduled", f"the next run is at {at}" + (f"; {waiting}" if waiting else ""))
    if missed > MAX_MISSED:
        missing = ("MissedRuns", "True", "TooManyMissedRuns",
                   f"more than {MAX_MISSED} runs were missed; only the latest starts. Set spec.startingDeadlineSeconds "
                   "to bound how late a run may start")
    elif create is None and (stale := _stale(cron, tz, spec, last_schedule or state.created, now)) is not None:
        missing = ("MissedRuns", "True", "MissedStartingDeadline",
                   f"the run of {stale.isoformat()} did not start within spec.startingDeadlineSeconds "
                   f"({spec.starting_deadline}s)")
    else:
        missing = ("MissedRuns", "False", "OnTime", "no run is missed")
    stalled = ("Stalled", "False", "NotStalled", "nothing needs a person")
    if refusal:
        ready, stalled = ("Ready", "False", "ChildRefused", refusal), ("Stalled", "True", "ChildRefused", refusal)
    return Decision(create=create, cancel=cancel, delete=trim, requeue_at=upcoming, status=status,
                    conditions=(ready, stalled, missing))
