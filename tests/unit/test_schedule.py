"""Schedule math (D17): worked examples, validation, DST days, long downtime.

The hypothesis properties live in ``test_schedule_properties.py``.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ductile.domain.schedule.plan as schedule_module
from ductile.domain.errors import DuctileError, ScheduleError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.schedule import (
    CatchUp,
    FireDecision,
    PlannedRun,
    Schedule,
    Window,
    cron_fires,
    due,
    first_nominal,
    jitter_offset,
    next_nominal,
    on_due,
    place,
    plan_next,
    poll_guard_allows,
    preview,
    timer_event_id,
    to_wall,
    validate_cron,
    wall_to_utc,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
APIA = ZoneInfo("Pacific/Apia")
KOLKATA = ZoneInfo("Asia/Kolkata")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def utc(  # noqa: PLR0917 - mirrors datetime()
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def fires(expr: str, after: datetime, tz: ZoneInfo, n: int) -> list[datetime]:
    return list(itertools.islice(cron_fires(expr, after, tz), n))


def run(**kw: object) -> PlannedRun:
    base: dict[str, object] = {"key": "k", "fingerprint": "f", "offset": timedelta(0)}
    base.update(kw)
    if "nominal_at" not in base:
        base["nominal_at"] = base["planned_at"]
    return PlannedRun(**base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- wall time


@pytest.mark.parametrize(
    ("tz", "wall", "expected"),
    [
        # Ordinary wall times.
        (BERLIN, datetime(2026, 1, 15, 12, 0), utc(2026, 1, 15, 11, 0)),
        (KOLKATA, datetime(2026, 3, 29, 2, 30), utc(2026, 3, 28, 21, 0)),
        (ZoneInfo("UTC"), datetime(2026, 3, 29, 2, 30), utc(2026, 3, 29, 2, 30)),
        (timezone(timedelta(hours=-3)), datetime(2026, 3, 29, 2, 30), utc(2026, 3, 29, 5, 30)),
        # Spring-forward gaps: the transition instant.
        (BERLIN, datetime(2026, 3, 29, 2, 30), utc(2026, 3, 29, 1, 0)),
        (BERLIN, datetime(2026, 3, 29, 2, 0), utc(2026, 3, 29, 1, 0)),
        (BERLIN, datetime(2026, 3, 29, 2, 59, 59, 999999), utc(2026, 3, 29, 1, 0)),
        (NEW_YORK, datetime(2026, 3, 8, 2, 30), utc(2026, 3, 8, 7, 0)),
        (LORD_HOWE, datetime(2026, 10, 4, 2, 15), utc(2026, 10, 3, 15, 30)),
        (APIA, datetime(2011, 12, 30, 12, 0), utc(2011, 12, 30, 10, 0)),  # the skipped day
        # Fall-back overlaps: the first occurrence.
        (BERLIN, datetime(2026, 10, 25, 2, 30), utc(2026, 10, 25, 0, 30)),
        (NEW_YORK, datetime(2026, 11, 1, 1, 30), utc(2026, 11, 1, 5, 30)),
        (LORD_HOWE, datetime(2026, 4, 5, 1, 45), utc(2026, 4, 4, 14, 45)),
    ],
)
def test_wall_to_utc_examples(tz: ZoneInfo, wall: datetime, expected: datetime) -> None:
    assert wall_to_utc(wall, tz) == expected
    assert wall_to_utc(wall.replace(fold=1), tz) == expected, "fold of the input is ignored"


def test_wall_to_utc_and_to_wall_refuse_the_wrong_kind_of_datetime() -> None:
    with pytest.raises(ValueError, match="naive wall time"):
        wall_to_utc(utc(2026, 1, 1), BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        to_wall(datetime(2026, 1, 1), BERLIN)


def test_to_wall_reads_the_clock() -> None:
    assert to_wall(utc(2026, 7, 1, 10, 0), BERLIN) == datetime(2026, 7, 1, 12, 0)
    second = to_wall(utc(2026, 10, 25, 1, 30), BERLIN)  # 02:30 CET, the repeat
    assert second == datetime(2026, 10, 25, 2, 30)
    assert second.fold == 1


# --------------------------------------------------------------------------- cron validation


@pytest.mark.parametrize(
    ("expr", "normalized"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0  7 * *\t1-5 ", "0 7 * * 1-5"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days only, but it fires
        ("30 7 * * MON-FRI", "30 7 * * MON-FRI"),
    ],
)
def test_validate_cron_accepts_and_normalizes(expr: str, normalized: str) -> None:
    assert validate_cron(expr) == normalized


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 * * * *", "exactly 5 fields"),
        ("0 0 1 1 * 2030 x", "exactly 5 fields"),
        ("0 0 1 1 * 2030", "exactly 5 fields"),
        ("bad", "exactly 5 fields"),
        ("", "exactly 5 fields"),
        ("@daily", "exactly 5 fields"),
        ("a b c d e", "not valid"),
        ("60 * * * *", "not valid"),
        ("* 24 * * *", "not valid"),
        ("*/0 * * * *", "not valid"),
        ("1-60 * * * *", "not valid"),
        ("H * * * *", "not valid"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_validate_cron_rejects(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as err:
        validate_cron(expr)
    assert repr(expr) in str(err.value), "the message names the expression"


@pytest.mark.parametrize("value", [None, 5, ["*", "*", "*", "*", "*"]])
def test_validate_cron_rejects_non_strings(value: object) -> None:
    with pytest.raises(ScheduleError, match="5 fields"):
        validate_cron(value)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_a_cron_that_never_fires_is_an_error_not_a_hang() -> None:
    with pytest.raises(ScheduleError, match="never fires"):
        Schedule(tz=BERLIN, cron="0 0 31 2 *")
    # cron_fires on its own (no validation in front) also ends with a ScheduleError.
    with pytest.raises(ScheduleError, match="no next fire"):
        next(cron_fires("0 0 31 2 *", utc(2026, 1, 1), BERLIN))
    with pytest.raises(ScheduleError, match="not valid"):
        next(cron_fires("not a cron at all", utc(2026, 1, 1), BERLIN))


def test_schedule_errors_are_ductile_errors() -> None:
    assert issubclass(ScheduleError, DuctileError)


# --------------------------------------------------------------------------- schedule validation


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "exactly one of 'every', 'cron', 'at' or 'after'"),
        ({"every": HOUR, "cron": "0 * * * *"}, "exactly one of 'every', 'cron', 'at' or 'after'"),
        ({"every": timedelta(0)}, "longer than zero"),
        ({"every": -HOUR}, "longer than zero"),
        ({"every": HOUR, "jitter": -MINUTE}, "cannot be negative"),
        ({"every": HOUR, "jitter": HOUR}, r"'jitter' \(1h\) must be shorter than 'every' \(1h\)"),
        ({"every": 5 * MINUTE, "jitter": HOUR}, "must be shorter than 'every'"),
        ({"cron": "0 0 * *"}, "exactly 5 fields"),
    ],
)
def test_schedule_rejects(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(tz=BERLIN, **kw)  # type: ignore[arg-type]


def test_schedule_accepts_jitter_just_under_every_and_normalizes_cron() -> None:
    assert Schedule(tz=BERLIN, every=HOUR, jitter=HOUR - US).jitter == HOUR - US
    assert Schedule(tz=BERLIN, cron=" 0  7 * * * ").cron == "0 7 * * *"


def test_fingerprint_follows_what_decides_run_times_only() -> None:
    base = Schedule(tz=BERLIN, every=HOUR, jitter=MINUTE, window=Window.parse("06:00", "22:00"))
    fp = base.fingerprint()
    assert fp == attrs.evolve(base).fingerprint()
    for changed in [
        attrs.evolve(base, every=2 * HOUR),
        attrs.evolve(base, jitter=2 * MINUTE),
        attrs.evolve(base, window=Window.parse("06:00", "21:00")),
        attrs.evolve(base, window=None),
        attrs.evolve(base, tz=NEW_YORK),
        Schedule(tz=BERLIN, cron="0 * * * *", jitter=MINUTE, window=base.window),
    ]:
        assert changed.fingerprint() != fp
    for same in [
        attrs.evolve(base, command="sync"),
        attrs.evolve(base, catch_up=CatchUp.RUN_ONCE),
        attrs.evolve(base, emit=EmittedEvent(type="morning.digest")),
    ]:
        assert same.fingerprint() == fp


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("start", "end", "where"),
    [
        ("6:00", "22:00", "preferred_window.start"),
        ("06:00", "24:00", "preferred_window.end"),
        ("06:60", "22:00", "preferred_window.start"),
        ("0600", "22:00", "preferred_window.start"),
        ("06:00:00", "22:00", "preferred_window.start"),
        ("06:00 ", "22:00", "preferred_window.start"),
        ("", "22:00", "preferred_window.start"),
        ("06:00", "ten", "preferred_window.end"),
        ("06:00", None, "preferred_window.end"),
    ],
)
def test_window_parse_rejects_bad_clock_text(start: str, end: str, where: str) -> None:
    with pytest.raises(ScheduleError, match=where):
        Window.parse(start, end)


def test_window_start_must_differ_from_end() -> None:
    with pytest.raises(ScheduleError, match="must differ"):
        Window.parse("06:00", "06:00")
    with pytest.raises(ScheduleError, match="take no zone"):
        Window(time(6, tzinfo=UTC), time(7))


def test_window_parse_accepts_edges() -> None:
    w = Window.parse("00:00", "23:59")
    assert (w.start, w.end, w.overnight) == (time(0), time(23, 59), False)
    assert Window.parse("22:00", "06:00").overnight


@pytest.mark.parametrize(
    ("clock", "inside"),
    [((21, 59), False), ((22, 0), True), ((23, 30), True), ((0, 0), True), ((5, 59), True), ((6, 0), False)],
)
def test_overnight_window_containment(clock: tuple[int, int], inside: bool) -> None:
    w = Window.parse("22:00", "06:00")
    at = wall_to_utc(datetime(2026, 6, 10, *clock), BERLIN)
    assert w.contains(at, BERLIN) is inside
    assert w.contains_wall(to_wall(at, BERLIN)) is inside


def test_overnight_window_bounds_span_midnight() -> None:
    w = Window.parse("22:00", "06:00")
    at = wall_to_utc(datetime(2026, 6, 11, 3, 0), BERLIN)
    assert w.bounds(at, BERLIN) == (utc(2026, 6, 10, 20, 0), utc(2026, 6, 11, 4, 0))
    with pytest.raises(ValueError, match="not inside the window"):
        w.bounds(utc(2026, 6, 11, 10, 0), BERLIN)


def test_window_next_start_is_strictly_after() -> None:
    w = Window.parse("06:00", "22:00")
    six = wall_to_utc(datetime(2026, 6, 10, 6, 0), BERLIN)
    assert w.next_start(six - US, BERLIN) == six
    assert w.next_start(six, BERLIN) == six + DAY


def test_window_start_inside_a_dst_gap_opens_at_the_end_of_the_gap() -> None:
    w = Window.parse("02:30", "04:00")
    # 2026-03-29 in Berlin: 02:00 -> 03:00, so the window is 03:00-04:00 CEST that day.
    assert w.occurrence(date(2026, 3, 29), BERLIN) == (utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0))
    assert w.next_start(utc(2026, 3, 28, 12, 0), BERLIN) == utc(2026, 3, 29, 1, 0)
    sched = Schedule(tz=BERLIN, every=DAY, window=w)
    # Nominally 01:00 CET, outside: snaps to the start, which is the end of the gap.
    planned, _, snapped = place(sched, utc(2026, 3, 29, 0, 0), 0.5)
    assert (planned, snapped) == (utc(2026, 3, 29, 1, 0), True)


def test_a_window_swallowed_by_a_gap_does_not_exist_that_day() -> None:
    w = Window.parse("02:10", "02:40")
    start, end = w.occurrence(date(2026, 3, 29), BERLIN)
    assert start == end == utc(2026, 3, 29, 1, 0)
    assert not w.contains(start, BERLIN)
    # The next window is the following day's.
    assert w.next_start(utc(2026, 3, 28, 12, 0), BERLIN) == utc(2026, 3, 30, 0, 10)
    sched = Schedule(tz=BERLIN, every=HOUR, window=w)
    entry = plan_next(sched, key="k", previous=None, now=utc(2026, 3, 28, 23, 0), draw=0.5)
    assert entry.planned_at == utc(2026, 3, 30, 0, 10)
    assert w.contains(entry.planned_at, BERLIN)


def test_a_window_inside_a_fall_back_overlap_opens_once() -> None:
    w = Window.parse("02:15", "02:45")
    # 2026-10-25 in Berlin: 03:00 CEST -> 02:00 CET; 02:15-02:45 happens twice on the clock.
    assert w.occurrence(date(2026, 10, 25), BERLIN) == (utc(2026, 10, 25, 0, 15), utc(2026, 10, 25, 0, 45))
    repeat = utc(2026, 10, 25, 1, 30)  # 02:30 CET, the second time
    assert w.contains_wall(to_wall(repeat, BERLIN))
    assert not w.contains(repeat, BERLIN)


# --------------------------------------------------------------------------- jitter and place


def test_jitter_offset() -> None:
    assert jitter_offset(HOUR, 0.0) == -30 * MINUTE
    assert jitter_offset(HOUR, 0.5) == timedelta(0)
    assert jitter_offset(HOUR, 0.75) == 15 * MINUTE
    assert jitter_offset(timedelta(0), 0.9) == timedelta(0)
    for bad in (1.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            jitter_offset(HOUR, bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12).map(lambda n: n * US), st.floats(0.0, 1.0, exclude_max=True))
def test_jitter_offset_is_within_half_the_jitter(jitter: timedelta, draw: float) -> None:
    offset = jitter_offset(jitter, draw)
    assert abs(offset) <= jitter / 2
    assert timedelta(0) <= jitter / 2 + offset <= jitter


def test_place_without_a_window_is_nominal_plus_offset() -> None:
    sched = Schedule(tz=BERLIN, every=DAY, jitter=HOUR)
    assert place(sched, utc(2026, 6, 1, 12), 0.25) == (utc(2026, 6, 1, 11, 45), -15 * MINUTE, False)


@pytest.mark.parametrize(
    ("nominal_wall", "draw", "planned_wall", "snapped"),
    [
        # Inside and jitter stays inside.
        ((2026, 6, 10, 23, 0), 0.75, (2026, 6, 10, 23, 15), False),
        # Nominally inside, jitter pushes it past the end: clamped to the last second.
        ((2026, 6, 10, 5, 50), 1 - 1e-9, (2026, 6, 10, 5, 59, 59), False),
        # Nominally inside, jitter pulls it before the start: clamped to the start.
        ((2026, 6, 10, 22, 5), 0.0, (2026, 6, 10, 22, 0), False),
        # Nominally outside: snaps to the next start (same evening).
        ((2026, 6, 10, 12, 0), 0.5, (2026, 6, 10, 22, 0), True),
        ((2026, 6, 10, 6, 0), 0.5, (2026, 6, 10, 22, 0), True),
        # Nominally outside but jitter pulls it inside: runs there.
        ((2026, 6, 10, 6, 10), 0.0, (2026, 6, 10, 5, 40), False),
    ],
)
def test_place_in_an_overnight_window(
    nominal_wall: tuple[int, ...], draw: float, planned_wall: tuple[int, ...], snapped: bool
) -> None:
    sched = Schedule(tz=BERLIN, every=DAY, jitter=HOUR, window=Window.parse("22:00", "06:00"))
    nominal = wall_to_utc(datetime(*nominal_wall), BERLIN)  # type: ignore[arg-type]
    planned, offset, was_snapped = place(sched, nominal, draw)
    assert to_wall(planned, BERLIN) == datetime(*planned_wall)  # type: ignore[arg-type]
    assert was_snapped is snapped
    if snapped:
        assert offset == jitter_offset(HOUR, draw)
    else:
        assert planned == nominal + offset
        assert abs(offset) <= 30 * MINUTE


def test_place_clamp_never_moves_past_the_nominal_time() -> None:
    # Nominal in the last half second of the window, tiny jitter pushing out: stays at the nominal time.
    sched = Schedule(tz=UTC, every=DAY, jitter=timedelta(seconds=1), window=Window.parse("06:00", "22:00"))
    nominal = utc(2026, 6, 10, 21, 59, 59, 600000)
    planned, offset, snapped = place(sched, nominal, 0.99)
    assert (planned, offset, snapped) == (nominal, timedelta(0), False)


# --------------------------------------------------------------------------- the grid


def test_every_grid_is_anchored_at_first_planning() -> None:
    sched = Schedule(tz=BERLIN, every=6 * HOUR, jitter=30 * MINUTE)
    now = utc(2026, 6, 1, 8, 0)
    first = plan_next(sched, key="k", previous=None, now=now, draw=0.0)
    assert first.nominal_at == now + 15 * MINUTE == first_nominal(sched, now)
    assert first.planned_at == now
    second = plan_next(sched, key="k", previous=first, now=first.planned_at, draw=0.9)
    assert second.nominal_at == first.nominal_at + 6 * HOUR
    assert second.planned_at == second.nominal_at + 12 * MINUTE
    assert next_nominal(sched, first.nominal_at) == second.nominal_at


def test_a_new_cron_schedule_whose_jitter_lands_in_the_past_runs_now() -> None:
    sched = Schedule(tz=BERLIN, cron="30 7 * * *", jitter=10 * MINUTE)
    now = wall_to_utc(datetime(2026, 6, 1, 7, 28), BERLIN)
    entry = plan_next(sched, key="k", previous=None, now=now, draw=0.0)  # drawn: -5 minutes
    assert entry.nominal_at == wall_to_utc(datetime(2026, 6, 1, 7, 30), BERLIN)
    assert entry.planned_at == now
    assert entry.offset == -2 * MINUTE
    later = plan_next(sched, key="k", previous=None, now=now, draw=0.9)
    assert later.planned_at == entry.nominal_at + 4 * MINUTE


def test_coalescing_skips_nominal_times_jitter_puts_before_the_previous_run() -> None:
    # A 5-minute cron with 10 minutes of jitter: a run drawn late makes the next one land behind it.
    sched = Schedule(tz=UTC, cron="*/5 * * * *", jitter=10 * MINUTE)
    prev = run(
        nominal_at=utc(2026, 6, 1, 10, 0), planned_at=utc(2026, 6, 1, 10, 4), fingerprint=sched.fingerprint()
    )
    nxt = plan_next(sched, key="k", previous=prev, now=prev.planned_at, draw=0.0)  # offset -5m
    assert nxt.nominal_at == utc(2026, 6, 1, 10, 10)  # 10:05 would land at 10:00, behind 10:04
    assert nxt.planned_at == utc(2026, 6, 1, 10, 5)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # Daily at 02:30 across Berlin's spring-forward: the gap day runs at 03:00 CEST.
        (
            "30 2 * * *",
            utc(2026, 3, 27, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        ),
        # Daily at 02:30 across fall-back: once, at the first (CEST) occurrence.
        (
            "30 2 * * *",
            utc(2026, 10, 23, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # Hourly across spring-forward: 02:00 (missing) and 03:00 both mean 01:00 UTC: once.
        (
            "0 * * * *",
            utc(2026, 3, 28, 23, 30),
            [utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)],
        ),
        # Hourly across fall-back: 02:00 fires once (CEST); the CET repeat is skipped.
        (
            "0 * * * *",
            utc(2026, 10, 24, 22, 30),
            [
                utc(2026, 10, 24, 23, 0),
                utc(2026, 10, 25, 0, 0),
                utc(2026, 10, 25, 2, 0),
                utc(2026, 10, 25, 3, 0),
            ],
        ),
    ],
)
def test_cron_fires_across_berlin_dst(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(expr, after, BERLIN, len(expected)) == expected


def test_cron_fires_starting_inside_the_repeated_hour_does_not_fire_again() -> None:
    after = utc(2026, 10, 25, 1, 10)  # 02:10 CET, the second time round
    assert fires("*/20 * * * *", after, BERLIN, 2) == [utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 20)]


def test_cron_fires_on_new_yorks_fall_back_and_lord_howes_half_hour() -> None:
    assert fires("30 1 * * *", utc(2026, 10, 31, 12), NEW_YORK, 2) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    # Lord Howe falls back 02:00 -> 01:30 on 2026-04-05: 01:45 happens twice, fires once.
    got = fires("45 1 * * *", utc(2026, 4, 3, 12), LORD_HOWE, 3)
    assert got == [utc(2026, 4, 3, 14, 45), utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]


def test_cron_fires_through_the_day_apia_skipped() -> None:
    # 2011-12-30 did not exist in Apia: every minute of it lands on the transition, once.
    got = fires("0 12 * * *", utc(2011, 12, 29, 12), APIA, 3)
    assert got == [utc(2011, 12, 29, 22, 0), utc(2011, 12, 30, 10, 0), utc(2011, 12, 30, 22, 0)]
    minutely = fires("* * * * *", utc(2011, 12, 30, 9, 58), APIA, 4)
    assert minutely == [
        utc(2011, 12, 30, 9, 59),
        utc(2011, 12, 30, 10, 0),
        utc(2011, 12, 30, 10, 1),
        utc(2011, 12, 30, 10, 2),
    ]


# --------------------------------------------------------------------------- long downtime


@pytest.fixture
def count_place(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """Records every nominal time plan_next places: the grid points it visits."""
    seen: list[datetime] = []
    real = schedule_module.place

    def counting(
        schedule: Schedule, nominal: datetime, draw: float, **kw: object
    ) -> tuple[datetime, timedelta, bool]:
        seen.append(nominal)
        return real(schedule, nominal, draw, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(schedule_module, "place", counting)
    return seen


@pytest.mark.parametrize(
    "sched",
    [
        Schedule(tz=BERLIN, every=5 * MINUTE),
        Schedule(tz=BERLIN, every=5 * MINUTE, jitter=4 * MINUTE),
        Schedule(tz=BERLIN, every=timedelta(seconds=1), window=Window.parse("06:00", "06:01")),
        Schedule(
            tz=BERLIN, every=MINUTE, jitter=50 * timedelta(seconds=1), window=Window.parse("22:00", "06:00")
        ),
        Schedule(tz=BERLIN, cron="* * * * *"),
        Schedule(tz=BERLIN, cron="* * * * *", jitter=10 * MINUTE, window=Window.parse("09:00", "09:30")),
        Schedule(tz=LORD_HOWE, cron="*/5 * * * 1-5", window=Window.parse("23:00", "01:00")),
    ],
)
def test_a_year_of_downtime_is_planned_without_walking_the_year(
    sched: Schedule, count_place: list[datetime]
) -> None:
    then = utc(2025, 3, 1, 9, 17, 3)
    old = plan_next(sched, key="k", previous=None, now=then, draw=0.3)
    now = utc(2026, 3, 29, 0, 40)  # a year later, Berlin's spring-forward night
    count_place.clear()
    nxt = plan_next(sched, key="k", previous=old, now=now, draw=0.7)
    assert len(count_place) <= 30, f"visited {len(count_place)} grid points"
    assert nxt.planned_at > now
    if sched.every is not None:
        assert (nxt.nominal_at - old.nominal_at) % sched.every == timedelta(0)
    if sched.window is not None:
        assert sched.window.contains(nxt.planned_at, sched.tz)
    else:
        # Nothing between now and the run: it is the first one due.
        assert nxt.planned_at <= now + (sched.every or MINUTE) + sched.jitter


# --------------------------------------------------------------------------- due, catch-up, preview


def test_due_is_half_open_and_sorted_by_time_then_key() -> None:
    t = utc(2026, 1, 1, 12)
    entries = [run(key="b", planned_at=t), run(key="a", planned_at=t), run(key="c", planned_at=t + HOUR)]
    assert [e.key for e in due(entries, t, t + HOUR)] == ["a", "b"]
    assert [e.key for e in due(entries, t - HOUR, t + HOUR + US)] == ["a", "b", "c"]
    assert due(entries, t + US, t + HOUR) == []
    assert due(entries, t + HOUR, t) == []


@pytest.mark.parametrize(
    ("catch_up", "late", "grace", "decision"),
    [
        (CatchUp.SKIP, timedelta(0), MINUTE, FireDecision.FIRE),
        (CatchUp.SKIP, MINUTE, MINUTE, FireDecision.FIRE),
        (CatchUp.SKIP, MINUTE + US, MINUTE, FireDecision.SKIP_MISSED),
        (CatchUp.SKIP, 300 * DAY, MINUTE, FireDecision.SKIP_MISSED),
        (CatchUp.RUN_ONCE, 300 * DAY, MINUTE, FireDecision.FIRE),
    ],
)
def test_on_due(catch_up: CatchUp, late: timedelta, grace: timedelta, decision: FireDecision) -> None:
    sched = Schedule(tz=BERLIN, every=HOUR, catch_up=catch_up)
    entry = run(planned_at=utc(2026, 1, 1))
    assert on_due(sched, entry, now=entry.planned_at + late, grace=grace) is decision


def test_run_once_after_downtime_fires_one_job_then_plans_the_future() -> None:
    sched = Schedule(tz=BERLIN, every=HOUR, catch_up=CatchUp.RUN_ONCE)
    entry = plan_next(sched, key="k", previous=None, now=utc(2026, 1, 1), draw=0.5)
    now = entry.planned_at + 30 * DAY + 10 * MINUTE
    assert on_due(sched, entry, now=now, grace=MINUTE) is FireDecision.FIRE
    nxt = plan_next(sched, key="k", previous=entry, now=now, draw=0.5)
    assert now < nxt.planned_at <= now + HOUR
    assert due([nxt], utc(2000, 1, 1), now + US) == []


def test_preview_of_an_every_schedule_with_a_window() -> None:
    sched = Schedule(tz=BERLIN, every=6 * HOUR, jitter=HOUR, window=Window.parse("06:00", "22:00"))
    # First planned at 08:30 CEST: the anchor (nominal) is 09:00 CEST.
    entry = plan_next(sched, key="k", previous=None, now=utc(2026, 6, 1, 6, 30), draw=0.1)
    runs = preview(sched, entry, utc(2026, 6, 1), utc(2026, 6, 3, 6))
    walls = [to_wall(r.planned_at, BERLIN).time() for r in runs]
    assert runs[0] == entry
    assert walls[0] == time(8, 36)  # 09:00 drawn 24 minutes early
    # Then 15:00, 21:00; 03:00 snaps to 06:00; 09:00 ...
    assert walls[1:8] == [time(15), time(21), time(6), time(9), time(15), time(21), time(6)]
    assert len(runs) == 8
    assert [r.snapped for r in runs[1:5]] == [False, False, True, False]


def test_preview_far_ahead_does_not_walk_and_respects_the_limit(count_place: list[datetime]) -> None:
    sched = Schedule(tz=BERLIN, every=MINUTE)
    entry = plan_next(sched, key="k", previous=None, now=utc(2026, 1, 1), draw=0.5)
    count_place.clear()
    runs = preview(sched, entry, utc(2027, 1, 1), utc(2027, 1, 2), limit=10)
    assert len(runs) == 10
    assert len(count_place) <= 15
    assert runs[0].planned_at == utc(2027, 1, 1)
    assert all(b.planned_at - a.planned_at == MINUTE for a, b in itertools.pairwise(runs))


def test_preview_of_an_empty_range() -> None:
    sched = Schedule(tz=BERLIN, every=HOUR)
    entry = plan_next(sched, key="k", previous=None, now=utc(2026, 1, 1), draw=0.5)
    assert preview(sched, entry, utc(2026, 1, 2), utc(2026, 1, 2)) == []
    assert preview(sched, entry, utc(2025, 1, 1), utc(2025, 1, 2)) == []


# --------------------------------------------------------------------------- poll guard, timer ids


@pytest.mark.parametrize(
    ("outstanding", "limit", "allowed"),
    [(0, 1, True), (1, 1, False), (2, 1, False), (1, 2, True), (2, 2, False), (0, 0, False)],
)
def test_poll_guard_allows(outstanding: int, limit: int, allowed: bool) -> None:
    assert poll_guard_allows(outstanding, limit) is allowed


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_poll_guard_allows_only_below_the_limit(outstanding: int, limit: int) -> None:
    assert poll_guard_allows(outstanding, limit) == (outstanding < limit)
    if poll_guard_allows(outstanding, limit):
        assert poll_guard_allows(outstanding - 1, limit) if outstanding > 0 else True


def test_timer_event_id_is_stable_per_key_and_nominal_time() -> None:
    t = utc(2026, 6, 1, 7, 30)
    assert timer_event_id("digest", t) == timer_event_id("digest", t.astimezone(BERLIN))
    assert timer_event_id("digest", t) != timer_event_id("digest", t + timedelta(seconds=1))
    assert timer_event_id("digest", t) != timer_event_id("other", t)
    with pytest.raises(ValueError, match="timezone-aware"):
        timer_event_id("digest", datetime(2026, 6, 1, 7, 30))


def test_plan_next_refuses_a_naive_now() -> None:
    sched = Schedule(tz=BERLIN, every=HOUR)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_next(sched, key="k", previous=None, now=datetime(2026, 1, 1), draw=0.5)
