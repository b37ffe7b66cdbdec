"""Properties of the schedule kinds protocol v2's users rely on: one-shots, not_on, run_all, ids.

Built on the strategies of ``test_schedule_properties`` (zones with odd DST,
windows, jitter, cron and every): the existing window/jitter checks are run
again on schedules that also skip days, so they hold with ``not_on`` as well.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ductile.domain.errors import ScheduleError
from ductile.domain.schedule import (
    EXHAUSTED,
    RUN_ALL_CAP,
    CatchUp,
    FireDecision,
    PlannedRun,
    Schedule,
    Window,
    missed_runs,
    on_due,
    parse_weekday,
    plan_next,
    schedule_key,
    split_key,
    to_wall,
    weekdays,
)
from tests.unit.test_schedule_properties import (
    DAY,
    FAST,
    HOUR,
    MINUTE,
    SLOWER,
    US,
    _durations,
    check_run,
    draws,
    instants,
    jitters,
    schedule_and_now,
    windows,
    zones,
)

GRACE = timedelta(minutes=2)
not_on_days = st.frozensets(st.integers(0, 6), min_size=1, max_size=6)


# --------------------------------------------------------------------------- one-shots


@st.composite
def one_shots(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    zone = draw(zones)
    tz = ZoneInfo(zone)
    now = draw(instants(zone))
    window = draw(windows()) if draw(st.booleans()) else None
    jitter = draw(jitters(2 * HOUR))
    catch_up = draw(st.sampled_from(list(CatchUp)))
    if draw(st.booleans()):
        at = now + draw(_durations(-3 * DAY, 30 * DAY))
        return Schedule(tz=tz, at=at, jitter=jitter, window=window, catch_up=catch_up, id="once"), now
    after = draw(_durations(timedelta(0), 2 * DAY))
    return Schedule(tz=tz, after=after, jitter=jitter, window=window, catch_up=catch_up, id="warmup"), now


@FAST
@given(one_shots(), draws, st.lists(_durations(US, 3 * DAY), min_size=1, max_size=40))
def test_a_one_shot_fires_at_most_once_and_then_is_done_for_good(
    case: tuple[Schedule, datetime], draw: float, ticks: list[timedelta]
) -> None:
    """A runner ticking at any times fires a one-shot at most once; once past it, the plan is done."""
    schedule, now = case
    key = schedule_key("p", schedule.id)
    entry = plan_next(schedule, key=key, previous=None, now=now, draw=draw)
    assert not entry.done
    if schedule.after is not None:
        assert entry.planned_at >= now
    fired = 0
    for step in ticks:
        now += step
        if entry.done or entry.planned_at > now:
            continue
        decision = on_due(schedule, entry, now=now, grace=GRACE)
        fired += decision is not FireDecision.SKIP_MISSED
        entry = plan_next(schedule, key=key, previous=entry, now=now, draw=draw)
        assert entry.done
        assert entry.planned_at == EXHAUSTED
    assert fired <= 1
    if entry.done:
        # Done stays done: planning again from the done row changes nothing.
        assert plan_next(schedule, key=key, previous=entry, now=now + 400 * DAY, draw=draw).done


@FAST
@given(one_shots(), draws, _durations(timedelta(0), GRACE))
def test_a_one_shot_reached_within_the_grace_fires_exactly_once(
    case: tuple[Schedule, datetime], draw: float, late: timedelta
) -> None:
    schedule, now = case
    entry = plan_next(schedule, key="p/x", previous=None, now=now, draw=draw)
    at = max(now, entry.planned_at) + late
    assume(at - entry.planned_at <= GRACE)
    assert on_due(schedule, entry, now=at, grace=GRACE) is FireDecision.FIRE


def test_an_at_one_shot_missed_while_down_runs_late_only_when_catch_up_says_so() -> None:
    at = datetime(2026, 12, 24, 17, tzinfo=UTC)
    for catch_up, expected in [
        (CatchUp.SKIP, FireDecision.SKIP_MISSED),
        (CatchUp.RUN_ONCE, FireDecision.FIRE),
        (CatchUp.RUN_ALL, FireDecision.CATCH_UP),
    ]:
        schedule = Schedule(tz=UTC, at=at, catch_up=catch_up, id="once")
        entry = plan_next(schedule, key="p/once", previous=None, now=at - DAY, draw=0.5)
        assert entry.planned_at == at
        assert on_due(schedule, entry, now=at + DAY, grace=GRACE) is expected
        if catch_up is CatchUp.RUN_ALL:  # one run was missed: one job
            assert missed_runs(schedule, entry, now=at + DAY) == ([entry], False)


def test_after_is_planned_from_now_and_a_changed_instant_replans_a_done_one_shot() -> None:
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    warmup = Schedule(tz=UTC, after=2 * MINUTE, id="warmup")
    assert plan_next(warmup, key="p/warmup", previous=None, now=now, draw=0.5).planned_at == now + 2 * MINUTE
    once = Schedule(tz=UTC, at=now + HOUR, id="once")
    done = plan_next(
        once,
        key="p/once",
        previous=plan_next(once, key="p/once", previous=None, now=now, draw=0.5),
        now=now,
        draw=0.5,
    )
    assert done.done
    moved = attrs.evolve(once, at=now + 2 * HOUR)
    again = plan_next(moved, key="p/once", previous=done, now=now, draw=0.5)
    assert not again.done
    assert again.planned_at == now + 2 * HOUR


# --------------------------------------------------------------------------- not_on


@FAST
@given(
    schedule_and_now(),
    not_on_days,
    draws,
    st.lists(st.tuples(draws, _durations(timedelta(0), 3 * DAY)), max_size=25),
)
def test_not_on_never_plans_a_run_on_an_excluded_day_in_the_schedules_zone(
    case: tuple[Schedule, datetime],
    not_on: frozenset[int],
    first: float,
    steps: list[tuple[float, timedelta]],
) -> None:
    base, now = case
    schedule = attrs.evolve(base, not_on=not_on)
    try:
        run = plan_next(schedule, key="p/x", previous=None, now=now, draw=first)
    except ScheduleError:  # a cron whose every fire lands on an excluded day: never runs
        assume(False)
        return
    runs = [run]
    for draw, late in steps:
        now = run.planned_at + late
        following = plan_next(schedule, key="p/x", previous=run, now=now, draw=draw)
        assert following.planned_at > max(now, run.planned_at)
        run = following
        runs.append(run)
    for item in runs:
        day = to_wall(item.planned_at, schedule.tz).weekday()
        assert day not in not_on, (
            f"{item.planned_at} is a {day} in {schedule.tz}, excluded by {sorted(not_on)}"
        )


@SLOWER
@given(
    schedule_and_now(window=True),
    not_on_days,
    draws,
    st.lists(st.tuples(draws, _durations(timedelta(0), 3 * DAY)), min_size=1, max_size=6),
)
def test_windows_and_jitter_still_hold_on_a_schedule_with_not_on(
    case: tuple[Schedule, datetime],
    not_on: frozenset[int],
    first: float,
    steps: list[tuple[float, timedelta]],
) -> None:
    base, now = case
    schedule = attrs.evolve(base, not_on=not_on)
    try:
        run = plan_next(schedule, key="p/x", previous=None, now=now, draw=first)
    except ScheduleError:
        assume(False)
        return
    for draw, late in steps:
        run = plan_next(schedule, key="p/x", previous=run, now=run.planned_at + late, draw=draw)
        check_run(schedule, run, draw)


def test_weekdays_are_names_or_cron_numbers_with_sunday_zero() -> None:
    assert parse_weekday("sat") == 5
    assert parse_weekday("Saturday") == 5
    assert parse_weekday(0) == 6  # Sunday
    assert parse_weekday(6) == 5  # Saturday
    assert parse_weekday("1") == 0  # Monday
    for bad in (7, -1, "someday", True, None, 1.5):
        with pytest.raises(ScheduleError):
            parse_weekday(bad)
    with pytest.raises(ScheduleError, match="every day of the week"):
        weekdays(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])


def test_a_weekday_hourly_schedule_skips_the_weekend_in_its_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = Schedule(tz=berlin, every=HOUR, not_on=weekdays(["sat", "sun"]), id="hourly")
    friday_night = datetime(2026, 11, 27, 22, 30, tzinfo=berlin).astimezone(UTC)
    run = plan_next(schedule, key="p/hourly", previous=None, now=friday_night, draw=0.5)
    run = plan_next(schedule, key="p/hourly", previous=run, now=run.planned_at, draw=0.5)
    following = plan_next(schedule, key="p/hourly", previous=run, now=run.planned_at, draw=0.5)
    local = to_wall(following.planned_at, berlin)
    assert (local.weekday(), local.hour) == (0, 0), local  # Monday midnight, Berlin
    assert following.nominal_at - run.nominal_at == 49 * HOUR  # the grid held over the weekend


def test_a_cron_that_only_fires_on_an_excluded_day_is_refused_not_looped() -> None:
    schedule = Schedule(tz=UTC, cron="0 12 * * 2", not_on=weekdays(["tue"]), id="never")
    with pytest.raises(ScheduleError, match="not_on"):
        plan_next(schedule, key="p/never", previous=None, now=datetime(2026, 1, 1, tzinfo=UTC), draw=0.5)


# --------------------------------------------------------------------------- run_all


@FAST
@given(schedule_and_now(), draws, _durations(timedelta(0), 400 * DAY), st.integers(1, RUN_ALL_CAP))
def test_run_all_never_exceeds_its_cap_and_lists_only_missed_runs_in_order(
    case: tuple[Schedule, datetime], draw: float, down: timedelta, cap: int
) -> None:
    base, start = case
    schedule = attrs.evolve(base, catch_up=CatchUp.RUN_ALL)
    entry = plan_next(schedule, key="p/x", previous=None, now=start, draw=draw)
    now = entry.planned_at + down
    runs, more = missed_runs(schedule, entry, now=now, cap=cap)
    assert 1 <= len(runs) <= cap
    assert runs[0] == entry
    assert all(r.planned_at <= now for r in runs)
    assert all(a.planned_at < b.planned_at for a, b in itertools.pairwise(runs))
    if not more:  # every missed run is listed: the one after the last is in the future
        after = plan_next(schedule, key="p/x", previous=runs[-1], now=runs[-1].planned_at, draw=0.5)
        assert after.planned_at > now
    else:
        assert len(runs) == cap


def test_run_all_after_a_long_downtime_stops_at_100() -> None:
    schedule = Schedule(tz=UTC, every=MINUTE, catch_up=CatchUp.RUN_ALL, id="m")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entry = plan_next(schedule, key="p/m", previous=None, now=start, draw=0.5)
    runs, more = missed_runs(schedule, entry, now=start + 365 * DAY)
    assert (len(runs), more) == (RUN_ALL_CAP, True)


# --------------------------------------------------------------------------- ids and keys


@FAST
@given(schedule_and_now(), draws, st.lists(st.tuples(draws, _durations(timedelta(0), DAY)), max_size=8))
def test_a_schedules_id_never_changes_its_runs(
    case: tuple[Schedule, datetime], first: float, steps: list[tuple[float, timedelta]]
) -> None:
    """Every rule holds per entry: the same schedule under two ids plans the same runs."""
    base, now = case
    other = attrs.evolve(base, id="morning")
    a = plan_next(base, key=schedule_key("p"), previous=None, now=now, draw=first)
    b = plan_next(other, key=schedule_key("p", "morning"), previous=None, now=now, draw=first)
    for draw, late in steps:
        assert (a.nominal_at, a.planned_at, a.offset, a.snapped) == (
            b.nominal_at,
            b.planned_at,
            b.offset,
            b.snapped,
        )
        at = a.planned_at + late
        a = plan_next(base, key=a.key, previous=a, now=at, draw=draw)
        b = plan_next(other, key=b.key, previous=b, now=at, draw=draw)


def test_keys_name_the_plugin_and_the_schedule() -> None:
    assert schedule_key("feeds") == "feeds/default"
    assert split_key("feeds/morning") == ("feeds", "morning")
    assert split_key("feeds") == ("feeds", "default")
    run = PlannedRun(
        key="my.plugin-1/hourly",
        fingerprint="f",
        nominal_at=datetime(2026, 1, 1, tzinfo=UTC),
        planned_at=datetime(2026, 1, 1, tzinfo=UTC),
        offset=timedelta(0),
    )
    assert (run.plugin, run.schedule_id, run.done) == ("my.plugin-1", "hourly", False)


@pytest.mark.parametrize("bad", ["", "a/b", "-x", "x" * 65, "a b"])
def test_a_schedule_id_is_a_simple_name(bad: str) -> None:
    with pytest.raises(ScheduleError, match="schedule id"):
        Schedule(tz=UTC, every=HOUR, id=bad)


def _old_fingerprint(schedule: Schedule) -> str:
    """The fingerprint as the first wave computed it (before at, after and not_on existed)."""
    body: dict[str, Any] = {
        "every": schedule.every // US if schedule.every is not None else None,
        "cron": schedule.cron,
        "jitter": schedule.jitter // US,
        "window": [schedule.window.start.isoformat(), schedule.window.end.isoformat()]
        if schedule.window
        else None,
        "tz": str(schedule.tz),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@FAST
@given(schedule_and_now())
def test_a_schedule_without_the_new_keys_keeps_its_fingerprint_so_upgrades_keep_the_grid(
    case: tuple[Schedule, datetime],
) -> None:
    schedule, _ = case
    assert schedule.fingerprint() == _old_fingerprint(schedule)
    assert attrs.evolve(schedule, not_on=frozenset({5})).fingerprint() != schedule.fingerprint()


def test_one_shot_rules() -> None:
    with pytest.raises(ScheduleError, match="exactly one of"):
        Schedule(tz=UTC, at=datetime(2026, 1, 1, tzinfo=UTC), every=HOUR)
    with pytest.raises(ScheduleError, match="not_on"):
        Schedule(tz=UTC, after=MINUTE, not_on=frozenset({5}))
    with pytest.raises(ScheduleError, match="negative"):
        Schedule(tz=UTC, after=-MINUTE)
    with pytest.raises(ValueError, match="aware"):
        Schedule(tz=UTC, at=datetime(2026, 1, 1))
    window = Window.parse("06:00", "22:00")
    snapped = Schedule(tz=UTC, at=datetime(2026, 1, 1, 3, tzinfo=UTC), window=window)
    run = plan_next(snapped, key="p/x", previous=None, now=datetime(2025, 12, 31, tzinfo=UTC), draw=0.5)
    assert run.planned_at == datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert run.snapped
