"""core.schedules: the cron expression, its runs in a time zone (DST gaps and repeats), and the decider's table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import schedules as s
from property_budget import examples

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- the expression ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "after", "want"), [
    ("* * * * *", at(2026, 6, 1, 12, 0, 30), at(2026, 6, 1, 12, 1)),
    ("*/15 * * * *", at(2026, 6, 1, 12, 0), at(2026, 6, 1, 12, 15)),
    ("5/20 * * * *", at(2026, 6, 1, 12, 30), at(2026, 6, 1, 12, 45)),
    ("0 9-17/4 * * *", at(2026, 6, 1, 12, 0), at(2026, 6, 1, 13, 0)),
    ("0 0 1 JAN *", at(2026, 6, 1), at(2027, 1, 1)),
    ("0 0 * * MON-FRI", at(2026, 6, 6), at(2026, 6, 8)),  # a Saturday: next Monday
    ("0 0 * * 7", at(2026, 6, 1), at(2026, 6, 7)),  # 7 is Sunday
    ("0 0 13 * FRI", at(2026, 6, 1), at(2026, 6, 5)),  # both restricted: either day runs
    ("0 0 */10 * MON", at(2026, 6, 2), at(2026, 8, 31)),  # "*/10" counts as a star: a Monday 1, 11, 21, 31
    ("@hourly", at(2026, 6, 1, 12, 0), at(2026, 6, 1, 13, 0)),
    ("@daily", at(2026, 6, 1, 12, 0), at(2026, 6, 2)),
    ("@weekly", at(2026, 6, 1, 12, 0), at(2026, 6, 7)),
    ("@monthly", at(2026, 6, 1, 12, 0), at(2026, 7, 1)),
    ("@yearly", at(2026, 6, 1, 12, 0), at(2027, 1, 1)),
    ("0 0 29 2 *", at(2026, 6, 1), at(2028, 2, 29)),
])
def test_next_run_in_utc(expr: str, after: datetime, want: datetime) -> None:
    assert s.next_after(s.parse(expr), UTC, after) == want


@pytest.mark.parametrize(("expr", "says"), [
    ("* * * *", "4 fields"),
    ("60 * * * *", "minute: '60' is out of range 0-59"),
    ("* 24 * * *", "hour: '24' is out of range"),
    ("* * 0 * *", "day-of-month: '0' is out of range 1-31"),
    ("* * * 13 *", "month: '13' is out of range"),
    ("* * * * 8", "day-of-week: '8' is out of range 0-7"),
    ("*/0 * * * *", "minute: the step of '*/0'"),
    ("30-10 * * * *", "minute: the range '30-10' ends before it starts"),
    ("* * * FOO *", "month: 'FOO' is not a number or a name"),
    ("@every 5m", "unknown macro"),
    ("1,,2 * * * *", "minute: empty item"),
    ("* " * 70, "longer than 128"),
])
def test_a_bad_expression_names_the_field(expr: str, says: str) -> None:
    with pytest.raises(s.CronError, match=says.replace("*", r"\*")):
        s.parse(expr)


def test_a_skipped_wall_time_runs_once_when_the_clocks_have_jumped() -> None:
    """Berlin, 29 March 2026: 02:00 CET is 03:00 CEST. A daily 02:30 runs at 03:00; */20 in hour 2 runs once."""
    assert s.next_after(s.parse("30 2 * * *"), BERLIN, at(2026, 3, 28, 12)) == at(2026, 3, 29, 1)
    runs = []
    t = at(2026, 3, 28, 12)
    for _ in range(3):
        t = s.next_after(s.parse("*/20 2 * * *"), BERLIN, t)  # type: ignore[assignment]
        runs.append(t)
    assert runs == [at(2026, 3, 29, 1), at(2026, 3, 30, 0), at(2026, 3, 30, 0, 20)]


def test_a_repeated_wall_time_runs_once_at_its_first_occurrence() -> None:
    """Berlin, 25 October 2026: 03:00 CEST is 02:00 CET again. 02:30 happens twice; it runs at the first."""
    first = s.next_after(s.parse("30 2 * * *"), BERLIN, at(2026, 10, 24, 12))
    assert first == at(2026, 10, 25, 0, 30)
    assert s.next_after(s.parse("30 2 * * *"), BERLIN, first) == at(2026, 10, 26, 1, 30)  # type: ignore[arg-type]


def test_a_half_hour_jump_ends_on_the_minute() -> None:
    """Lord Howe Island moves its clocks by 30 minutes (02:00 to 02:30 on the first Sunday of October): a run at
    02:01 happens at the jump, 15:30 UTC, on the minute (found by Hypothesis: it was 15:30:01)."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert s.next_after(s.parse("1 2 * 10-12 *"), lord_howe, at(2028, 1, 1)) == at(2028, 9, 30, 15, 30)


def test_zone() -> None:
    assert s.zone(None) is UTC and s.zone("Europe/Berlin") == BERLIN
    assert s.zone("Mars/Olympus_Mons") is None and s.zone("../etc/passwd") is None


def test_child_name_is_the_run_in_minutes_since_the_epoch() -> None:
    assert s.child_name("nightly", at(2026, 6, 1)) == f"nightly-{int(at(2026, 6, 1).timestamp()) // 60}"
    long = s.child_name("n" * 70, at(2026, 6, 1))
    assert len(long) <= 63 and long == s.child_name("n" * 70, at(2026, 6, 1))


# --- properties ---------------------------------------------------------------------------------------------------

FIELD = st.one_of(st.just("*"), st.integers(0, 5).map(str), st.integers(1, 30).map(lambda n: f"*/{n}"))
EXPRESSIONS = st.tuples(
    st.one_of(st.just("*"), st.integers(0, 59).map(str), st.integers(1, 30).map(lambda n: f"*/{n}"),
              st.tuples(st.integers(0, 29), st.integers(30, 59)).map(lambda p: f"{p[0]}-{p[1]}")),
    st.one_of(st.just("*"), st.integers(0, 23).map(str), st.sampled_from(["1-3", "2", "2,3", "*/2", "0-23/5"])),
    st.one_of(st.just("*"), st.integers(1, 28).map(str), st.just("1-15")),
    st.one_of(st.just("*"), st.sampled_from(["3", "MAR,OCT", "*/3", "10-12"])),
    st.one_of(st.just("*"), st.sampled_from(["0", "1-5", "SUN", "SAT,SUN"])),
).map(" ".join)
ZONES = st.sampled_from([UTC, BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")])
INSTANTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=examples(600), deadline=None)
@given(EXPRESSIONS, ZONES, INSTANTS)
def test_the_next_run_is_after_now_on_a_minute_and_matches_or_ends_a_jump(expr: str, tz: ZoneInfo,
                                                                          now: datetime) -> None:
    cron = s.parse(expr)
    nxt = s.next_after(cron, tz, now)
    assert nxt is not None and nxt > now and nxt.second == 0 and nxt.microsecond == 0
    wall = nxt.astimezone(tz)
    assert wall.fold == 0  # a wall time that happens twice runs at its first occurrence
    matches = wall.minute in cron.minutes and wall.hour in cron.hours and cron.day_matches(wall.date())
    jumped = (nxt - timedelta(minutes=1)).astimezone(tz).utcoffset() != wall.utcoffset()
    assert matches or jumped  # a run at the end of a jump stands for the skipped wall times


@settings(max_examples=examples(300), deadline=None)
@given(EXPRESSIONS, ZONES, INSTANTS)
def test_no_run_is_skipped_between_now_and_the_next(expr: str, tz: ZoneInfo, now: datetime) -> None:
    """Every matching wall-clock minute strictly between ``now`` and the next run is one that ran already: a
    repeat (its first occurrence was earlier) or nothing: walk the minutes in between."""
    cron = s.parse(expr)
    nxt = s.next_after(cron, tz, now)
    assert nxt is not None
    t = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    steps = 0
    while t < nxt and steps < 3000:
        wall = t.astimezone(tz)
        if wall.minute in cron.minutes and wall.hour in cron.hours and cron.day_matches(wall.date()):
            assert wall.fold == 1 and s.resolve(wall.replace(tzinfo=None), tz) < t  # the repeat of a run
        t += timedelta(minutes=1)
        steps += 1


@settings(max_examples=examples(300), deadline=None)
@given(EXPRESSIONS, ZONES, INSTANTS)
def test_a_run_never_happens_twice_in_a_repeated_hour(expr: str, tz: ZoneInfo, now: datetime) -> None:
    cron = s.parse(expr)
    first = s.next_after(cron, tz, now)
    assert first is not None
    second = s.next_after(cron, tz, first)
    assert second is not None and second > first
    assert second.astimezone(tz).replace(tzinfo=None) != first.astimezone(tz).replace(tzinfo=None)


# --- the decider ---------------------------------------------------------------------------------------------------

NAME = "nightly"
CREATED = at(2026, 6, 1, 0, 0, 30)


def spec(**kw: object) -> s.Spec:
    return s.Spec(**{"schedule": "*/5 * * * *", **kw})  # type: ignore[arg-type]


def child(run: datetime, outcome: s.Outcome = "Active", **kw: object) -> s.Child:
    return s.Child(s.child_name(NAME, run), run, outcome, **kw)  # type: ignore[arg-type]


def decide(sp: s.Spec, children: list[s.Child], now: datetime, last: datetime | None = None,
           tz: object = UTC) -> s.Decision:
    return s.decide(NAME, sp, s.State(CREATED, last), children, tz=tz, now=now)  # type: ignore[arg-type]


def cond(d: s.Decision, type_: str) -> tuple[str, str]:
    return next((st_, r) for t, st_, r, _ in d.conditions if t == type_)


def test_no_run_due_waits_for_the_next() -> None:
    d = decide(spec(), [], at(2026, 6, 1, 0, 3))
    assert d.create is None and d.requeue_at == at(2026, 6, 1, 0, 5) == d.status.next_schedule
    assert cond(d, "Ready") == ("True", "Scheduled")


def test_a_due_run_creates_its_child_named_from_its_time() -> None:
    d = decide(spec(), [], at(2026, 6, 1, 0, 5, 2))
    assert d.create == s.Create(s.child_name(NAME, at(2026, 6, 1, 0, 5)), at(2026, 6, 1, 0, 5))
    assert d.status.last_schedule == at(2026, 6, 1, 0, 5) and d.status.active == (d.create.name,)
    assert d.requeue_at == at(2026, 6, 1, 0, 10)


def test_deciding_twice_creates_nothing_new() -> None:
    run = at(2026, 6, 1, 0, 5)
    assert decide(spec(), [child(run)], at(2026, 6, 1, 0, 5, 3)).create is None
    assert decide(spec(), [], at(2026, 6, 1, 0, 5, 3), last=run).create is None  # its child deleted by history


def test_only_the_latest_missed_run_starts() -> None:
    d = decide(spec(), [], at(2026, 6, 1, 2, 7))  # 25 runs missed
    assert d.create is not None and d.create.run == at(2026, 6, 1, 2, 5)
    assert cond(d, "MissedRuns") == ("False", "OnTime")


def test_more_than_a_hundred_missed_runs_is_a_condition_not_a_storm() -> None:
    d = decide(spec(), [], at(2026, 6, 3, 0, 1))
    assert d.create is not None and d.create.run == at(2026, 6, 3, 0, 0)
    assert cond(d, "MissedRuns") == ("True", "TooManyMissedRuns")


def test_a_run_past_its_starting_deadline_is_missed() -> None:
    d = decide(spec(starting_deadline=60), [], at(2026, 6, 1, 0, 7), last=at(2026, 6, 1, 0, 0))
    assert d.create is None and cond(d, "MissedRuns") == ("True", "MissedStartingDeadline")
    d = decide(spec(starting_deadline=180), [], at(2026, 6, 1, 0, 7), last=at(2026, 6, 1, 0, 0))
    assert d.create is not None and d.create.run == at(2026, 6, 1, 0, 5)


@pytest.mark.parametrize(("policy", "created", "cancelled"), [
    ("Allow", True, ()), ("Forbid", False, ()), ("Replace", True, ("running",)),
])
def test_concurrency(policy: s.Concurrency, created: bool, cancelled: tuple[str, ...]) -> None:
    running = s.Child("running", at(2026, 6, 1, 0, 5))
    d = decide(spec(concurrency=policy), [running], at(2026, 6, 1, 0, 10, 1), last=at(2026, 6, 1, 0, 5))
    assert (d.create is not None) is created and d.cancel == cancelled
    if policy == "Forbid":
        assert d.status.active == ("running",) and "waits for running" in next(
            m for t, _, _, m in d.conditions if t == "Ready")
    if policy == "Replace":
        assert d.status.active == (d.create.name,)  # type: ignore[union-attr]


def test_forbid_starts_the_waiting_run_once_the_active_child_ends_within_its_deadline() -> None:
    done = s.Child("running", at(2026, 6, 1, 0, 5), "Succeeded", finished=at(2026, 6, 1, 0, 11))
    d = decide(spec(concurrency="Forbid"), [done], at(2026, 6, 1, 0, 11), last=at(2026, 6, 1, 0, 5))
    assert d.create is not None and d.create.run == at(2026, 6, 1, 0, 10)
    d = decide(spec(concurrency="Forbid", starting_deadline=30), [done], at(2026, 6, 1, 0, 11),
               last=at(2026, 6, 1, 0, 5))
    assert d.create is None and cond(d, "MissedRuns") == ("True", "MissedStartingDeadline")


def test_a_replaced_child_is_not_active_and_counts_as_failed() -> None:
    replaced = s.Child("old", at(2026, 6, 1, 0, 5), replaced=True)
    d = decide(spec(concurrency="Forbid", failed_limit=0), [replaced], at(2026, 6, 1, 0, 10, 1),
               last=at(2026, 6, 1, 0, 5))
    assert d.create is not None and d.delete == ("old",)


def test_a_refused_child_is_a_condition_with_the_server_s_answer_and_cancels_nothing() -> None:
    running = s.Child("running", at(2026, 6, 1, 0, 5))
    name = s.child_name(NAME, at(2026, 6, 1, 0, 10))
    d = s.decide(NAME, spec(concurrency="Replace"), s.State(CREATED, at(2026, 6, 1, 0, 5)), [running], tz=UTC,
                 now=at(2026, 6, 1, 0, 10, 1), refused={name: "denied by policy egress: spec.repository.url"})
    assert d.create is None and d.cancel == () and d.status.active == ("running",)
    assert d.status.last_schedule == at(2026, 6, 1, 0, 5)
    assert cond(d, "Ready") == ("False", "ChildRefused") and cond(d, "Stalled") == ("True", "ChildRefused")
    assert "denied by policy egress" in next(m for t, _, _, m in d.conditions if t == "Ready")


def test_suspend_starts_nothing_and_shows_no_next_run() -> None:
    d = decide(spec(suspend=True), [], at(2026, 6, 1, 0, 5, 1))
    assert d.create is None and d.status.next_schedule is None and cond(d, "Ready") == ("True", "Suspended")
    resumed = decide(spec(), [], at(2026, 6, 1, 1, 0, 1))  # resumed, no deadline: the latest missed run starts
    assert resumed.create is not None and resumed.create.run == at(2026, 6, 1, 1, 0)


def test_history_limits_delete_the_oldest_finished_children() -> None:
    runs = [at(2026, 6, 1, 0, m) for m in range(5, 60, 5)]
    kids = [child(r, "Succeeded" if i % 2 else "Failed", finished=r + timedelta(minutes=1))
            for i, r in enumerate(runs[:-1])] + [child(runs[-1])]
    d = decide(spec(successful_limit=2, failed_limit=1), kids, at(2026, 6, 1, 0, 56))
    kept_ok = [c for c in kids if c.outcome == "Succeeded"][-2:]
    kept_bad = [c for c in kids if c.outcome == "Failed"][-1:]
    assert set(d.delete) == {c.name for c in kids if c.outcome != "Active"} - {c.name for c in kept_ok + kept_bad}
    assert kids[-1].name not in d.delete  # never an active child
    assert d.status.last_successful == kept_ok[-1].finished


@pytest.mark.parametrize(("sp", "tz", "reason"), [
    (spec(schedule="61 * * * *"), UTC, "InvalidSchedule"),
    (spec(schedule="0 0 30 2 *"), UTC, "InvalidSchedule"),
    (spec(time_zone="Mars/Base"), None, "UnknownTimeZone"),
])
def test_an_unusable_spec_stalls_naming_the_field(sp: s.Spec, tz: object, reason: str) -> None:
    d = decide(sp, [], at(2026, 6, 1, 0, 5, 1), tz=tz)
    assert d.create is None and d.requeue_at is None and d.status.next_schedule is None
    assert cond(d, "Ready") == ("False", reason) and cond(d, "Stalled") == ("True", reason)
    message = next(m for t, _, _, m in d.conditions if t == "Stalled")
    assert ("spec.schedule" if reason == "InvalidSchedule" else "spec.timeZone") in message


def test_a_schedule_in_a_time_zone_runs_at_its_wall_clock_time() -> None:
    d = decide(spec(schedule="0 9 * * *", time_zone="Europe/Berlin"), [], at(2026, 6, 2, 7, 0, 1), tz=BERLIN)
    assert d.create is not None and d.create.run == at(2026, 6, 2, 7, 0)  # 09:00 CEST
    assert d.status.next_schedule == at(2026, 6, 3, 7, 0)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.integers(0, 400), max_size=12, unique=True), st.integers(0, 2000),
       st.sampled_from(["Allow", "Forbid", "Replace"]), st.booleans())
def test_decisions_never_create_an_existing_child_nor_delete_an_active_one(
        offsets: list[int], now_offset: int, policy: s.Concurrency, finished: bool) -> None:
    runs = [CREATED.replace(second=0) + timedelta(minutes=5 * (o + 1)) for o in sorted(offsets)]
    now = CREATED + timedelta(minutes=now_offset)
    kids = [child(r, "Succeeded" if finished and i % 2 else "Active") for i, r in enumerate(runs) if r <= now]
    d = decide(spec(concurrency=policy), kids, now)
    active = {c.name for c in kids if c.active}
    assert not set(d.delete) & active
    assert d.create is None or d.create.name not in {c.name for c in kids}
    assert d.create is None or (d.create.run <= now and d.create.run > max((c.run for c in kids), default=CREATED))
    assert d.requeue_at is not None and d.requeue_at > now
    if policy == "Forbid" and active:
        assert d.create is None
