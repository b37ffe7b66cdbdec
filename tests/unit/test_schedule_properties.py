"""Hypothesis properties of the schedule math (D17), over zones with odd DST.

The zones include 30-minute DST (Lord_Howe), a day skipped by a date-line jump
(Apia 2011, Kiritimati 1994), a zone that falls back at midnight (Santiago),
+12:45/+13:45 (Chatham), and zones without DST (UTC, Kolkata). Instants are
drawn near each zone's real transitions as often as far from them.

Oracles are independent of the code under test where it matters: transitions
are found by scanning offsets, cron fire sets by enumerating wall times.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import attrs
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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
    preview,
    to_wall,
    wall_to_utc,
)

US = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "America/Santiago",
    "Pacific/Chatham",
    "UTC",
    "Asia/Kolkata",
)
SCAN_FROM = datetime(1993, 1, 1, tzinfo=UTC)
SCAN_TO = datetime(2036, 1, 1, tzinfo=UTC)

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Transition:
    at: datetime
    before: timedelta
    after: timedelta

    @property
    def is_gap(self) -> bool:
        return self.after > self.before


def _offset(tz: ZoneInfo, at: datetime) -> timedelta:
    off = at.astimezone(tz).utcoffset()
    assert off is not None
    return off


@functools.cache
def transitions(zone: str) -> tuple[Transition, ...]:
    """Every UTC-offset change of ``zone`` in the scan range, found by scanning days then bisecting."""
    tz = ZoneInfo(zone)
    found: list[Transition] = []
    t = SCAN_FROM
    off = _offset(tz, t)
    while t < SCAN_TO:
        nxt = t + DAY
        nxt_off = _offset(tz, nxt)
        if nxt_off != off:
            lo, hi = t, nxt  # offset(lo) == off, offset(hi) != off
            while hi - lo > US:
                mid = lo + (hi - lo) // 2
                if _offset(tz, mid) == off:
                    lo = mid
                else:
                    hi = mid
            found.append(Transition(hi, off, _offset(tz, hi)))
        t, off = nxt, nxt_off
    return tuple(found)


def gaps(zone: str) -> list[Transition]:
    return [t for t in transitions(zone) if t.is_gap]


def overlaps(zone: str) -> list[Transition]:
    return [t for t in transitions(zone) if not t.is_gap]


DST_ZONES = tuple(z for z in ZONES if transitions(z))


def test_the_zone_table_has_the_interesting_transitions() -> None:
    # The strategies below rely on these being present in zoneinfo.
    assert any(t.after - t.before == timedelta(minutes=30) for t in transitions("Australia/Lord_Howe"))
    assert any(t.after - t.before == DAY for t in transitions("Pacific/Apia"))
    assert any(t.after - t.before == DAY for t in transitions("Pacific/Kiritimati"))
    assert transitions("UTC") == ()
    assert transitions("Asia/Kolkata") == ()
    assert len(overlaps("Europe/Berlin")) > 30


# --------------------------------------------------------------------------- strategies

zones = st.sampled_from(ZONES)
dst_zones = st.sampled_from(DST_ZONES)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)


def _align(at: datetime, how: str) -> datetime:
    if how == "minute":
        return at.replace(second=0, microsecond=0)
    if how == "second":
        return at.replace(microsecond=0)
    return at


@st.composite
def instants(draw: st.DrawFn, zone: str, *, spread: timedelta = 3 * DAY) -> datetime:
    """An aware UTC instant: near a transition of ``zone`` half the time (sometimes within hours)."""
    trans = transitions(zone)
    near = draw(st.booleans())
    if trans and near:
        base = draw(st.sampled_from(trans)).at
        reach = draw(st.sampled_from([min(spread, 3 * HOUR), spread]))
        delta = draw(st.integers(-(reach // US), reach // US))
        at = base + delta * US
    else:
        lo, hi = datetime(2000, 1, 1, tzinfo=UTC), datetime(2035, 1, 1, tzinfo=UTC)
        at = lo + draw(st.integers(0, (hi - lo) // US)) * US
    return _align(at, draw(st.sampled_from(["minute", "second", "micro"])))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(0, 24 * 60 - 1).filter(lambda m: m != start))
    return Window(time(start // 60, start % 60), time(end // 60, end % 60))


def _durations(lo: timedelta, hi: timedelta) -> st.SearchStrategy[timedelta]:
    return st.integers(lo // US, hi // US).map(lambda n: n * US)


@st.composite
def cron_exprs(draw: st.DrawFn) -> str:
    minute = draw(
        st.one_of(
            st.integers(0, 59).map(str),
            st.sampled_from(["*/5", "*/15", "*/30", "0,30", "15,45", "*"]),
        )
    )
    hour = draw(
        st.one_of(
            st.integers(0, 23).map(str),
            st.sampled_from(["*", "*/2", "1-3", "0,12", "22-23"]),
        )
    )
    if minute == "*" and hour == "*":
        hour = "2"  # keep minutely crons to one hour a day: enumeration oracles stay cheap
    dow = draw(st.sampled_from(["*", "*", "*", "1-5", "0,6"]))
    return f"{minute} {hour} * * {dow}"


def jitters(cap: timedelta) -> st.SearchStrategy[timedelta]:
    """No jitter, a tiny one (clamping at a window's last second), or any up to ``cap``."""
    tiny = [j for j in (US, timedelta(seconds=1), timedelta(milliseconds=1500)) if j <= cap]
    some = _durations(timedelta(0), cap)
    return st.one_of(st.just(timedelta(0)), st.sampled_from(tiny or [timedelta(0)]), some, some)


@st.composite
def schedules(
    draw: st.DrawFn,
    *,
    kind: str | None = None,
    window: bool | None = None,
    zone: str | None = None,
    min_every: timedelta = timedelta(seconds=1),
    max_jitter: timedelta | None = None,
) -> Schedule:
    tz = ZoneInfo(zone or draw(zones))
    kind = kind or draw(st.sampled_from(["every", "cron"]))
    win = draw(windows()) if (window if window is not None else draw(st.booleans())) else None
    if kind == "every":
        every = draw(
            st.one_of(
                st.sampled_from([timedelta(minutes=m) for m in (5, 15, 30, 60, 360, 1440, 10080)]),
                st.integers(1, 180).map(lambda m: m * MINUTE),
                _durations(min_every, 3 * DAY),
            ).filter(lambda e: e >= min_every)
        )
        cap = every - US if max_jitter is None else min(every - US, max_jitter)
        return Schedule(tz=tz, every=every, jitter=draw(jitters(cap)), window=win)
    cap = 2 * HOUR if max_jitter is None else max_jitter
    jitter = draw(jitters(cap))
    return Schedule(tz=tz, cron=draw(cron_exprs()), jitter=jitter, window=win)


@st.composite
def schedule_and_now(draw: st.DrawFn, /, **kw: Any) -> tuple[Schedule, datetime]:
    sched = draw(schedules(**kw))
    return sched, draw(instants(str(sched.tz)))


#: How late the runner asks for the next plan: on time, a tick late, or after downtime.
lateness = st.one_of(
    st.just(timedelta(0)),
    _durations(timedelta(0), 2 * MINUTE),
    _durations(timedelta(0), 3 * DAY),
    _durations(-HOUR, timedelta(0)),
    _durations(30 * DAY, 400 * DAY),
)


def chain(
    sched: Schedule, now: datetime, steps: list[tuple[float, timedelta]], first_draw: float
) -> list[tuple[datetime, PlannedRun]]:
    """(now, run) pairs: a first plan, then each next plan asked ``lateness`` after the previous run."""
    run = plan_next(sched, key="k", previous=None, now=now, draw=first_draw)
    out = [(now, run)]
    for draw, late in steps:
        now = run.planned_at + late
        run = plan_next(sched, key="k", previous=run, now=now, draw=draw)
        out.append((now, run))
    return out


chains = st.lists(st.tuples(draws, lateness), min_size=1, max_size=6)


# --------------------------------------------------------------------------- 10. wall_to_utc


@st.composite
def walls_near_transitions(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    zone = draw(dst_zones)
    tr = draw(st.sampled_from(transitions(zone)))
    tz = ZoneInfo(zone)
    span = abs(tr.after - tr.before) + 2 * HOUR
    centre = (tr.at + tr.before).replace(tzinfo=None)  # the wall time the clock reads just before
    wall = centre + draw(st.integers(-(span // US), span // US)) * US
    return tz, _align(wall, draw(st.sampled_from(["minute", "second", "micro"])))


@FAST
@given(walls_near_transitions())
def test_wall_to_utc_is_the_first_instant_reading_that_wall_time(case: tuple[ZoneInfo, datetime]) -> None:
    tz, wall = case
    at = wall_to_utc(wall, tz)
    assert at.utcoffset() == timedelta(0)
    reads = to_wall(at, tz)
    assert reads >= wall, f"{at} reads {reads}, before {wall}"
    assert to_wall(at - US, tz) < wall, f"an earlier instant {at - US} already reads {wall} or later"
    if reads != wall:
        # A gap: the answer is the transition instant, where the offset changes.
        assert _offset(tz, at - US) < _offset(tz, at), f"{wall} does not exist but {at} is no transition"
        assert any(t.at == at and t.is_gap for t in transitions(str(tz)))
    else:
        # Existing wall time; in an overlap the first occurrence (fold=0).
        assert at == wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


@FAST
@given(st.data())
def test_wall_to_utc_round_trips_every_instant_that_is_not_a_repeat(data: st.DataObject) -> None:
    zone = data.draw(zones)
    tz = ZoneInfo(zone)
    at = data.draw(instants(zone))
    back = wall_to_utc(to_wall(at, tz), tz)
    if at.astimezone(tz).fold == 0:
        assert back == at
    else:  # the second occurrence of a repeated wall time maps to the first one
        assert back < at
        assert to_wall(back, tz) == to_wall(at, tz)


# --------------------------------------------------------------------------- windows


@FAST
@given(st.data())
def test_window_contains_agrees_with_the_clock_away_from_transitions(data: st.DataObject) -> None:
    zone = data.draw(zones)
    tz = ZoneInfo(zone)
    window = data.draw(windows())
    at = data.draw(instants(zone))
    assume(all(abs(t.at - at) > 2 * DAY for t in transitions(zone)))
    assert window.contains(at, tz) == window.contains_wall(to_wall(at, tz))


@FAST
@given(st.data())
def test_window_occurrences_are_disjoint_and_next_start_is_the_first_after(data: st.DataObject) -> None:
    zone = data.draw(zones)
    tz = ZoneInfo(zone)
    window = data.draw(windows())
    at = data.draw(instants(zone))
    day = to_wall(at, tz).date()
    occ = [window.occurrence(day + i * DAY, tz) for i in range(-3, 4)]
    for (s1, e1), (s2, e2) in itertools.pairwise(occ):
        assert s1 <= e1 <= s2 <= e2
    start = window.next_start(at, tz)
    assert start > at
    assert window.contains(start, tz)
    assert not any(at < s < start and s < e for s, e in occ), "skipped an earlier window start"
    inside = [o for o in occ if o[0] <= at < o[1]]
    assert window.contains(at, tz) == bool(inside)
    if inside:
        assert window.bounds(at, tz) == inside[0]


# --------------------------------------------------------------------------- 1 & 2: windows and offsets


def check_run(sched: Schedule, run: PlannedRun, draw: float) -> None:
    half = sched.jitter / 2
    if sched.window is not None:
        assert sched.window.contains(run.planned_at, sched.tz), (
            f"{run.planned_at} ({to_wall(run.planned_at, sched.tz)}) is outside {sched.window}"
        )
    if run.snapped:
        assert sched.window is not None
        assert not sched.window.contains(run.nominal_at, sched.tz)
        assert run.offset == jitter_offset(sched.jitter, draw)
        assert run.planned_at == sched.window.next_start(run.planned_at - US, sched.tz), "not a window start"
    else:
        assert run.planned_at == run.nominal_at + run.offset
        assert abs(run.offset) <= half, f"offset {run.offset} beyond jitter/2 {half}"


@FAST
@given(schedule_and_now(window=True), draws, chains)
def test_1_a_planned_run_never_leaves_its_window(
    case: tuple[Schedule, datetime], first: float, steps: list[tuple[float, timedelta]]
) -> None:
    sched, now = case
    assert sched.window is not None
    for _, run in chain(sched, now, steps, first):
        assert sched.window.contains(run.planned_at, sched.tz)


@FAST
@given(schedule_and_now(), draws, chains)
def test_2_offsets_stay_within_half_the_jitter_unless_snapped(
    case: tuple[Schedule, datetime], first: float, steps: list[tuple[float, timedelta]]
) -> None:
    sched, now = case
    draws_used = [first] + [d for d, _ in steps]
    for (_, run), d in zip(chain(sched, now, steps, first), draws_used, strict=True):
        check_run(sched, run, d)


@FAST
@given(st.data(), draws)
def test_2_place_keeps_nominal_plus_offset(data: st.DataObject, draw: float) -> None:
    sched = data.draw(schedules())
    nominal = data.draw(instants(str(sched.tz)))
    planned, offset, snapped = place(sched, nominal, draw)
    check_run(
        sched,
        PlannedRun(
            key="k", fingerprint="f", nominal_at=nominal, planned_at=planned, offset=offset, snapped=snapped
        ),
        draw,
    )
    if sched.window is None:
        assert offset == jitter_offset(sched.jitter, draw)


# --------------------------------------------------------------------------- 3: no drift


@FAST
@given(
    schedule_and_now(kind="every", window=False),
    st.lists(st.tuples(draws, st.just(timedelta(0))), max_size=12),
    draws,
)
def test_3_every_runs_stay_on_the_grid_without_drift(
    case: tuple[Schedule, datetime], steps: list[tuple[float, timedelta]], first: float
) -> None:
    sched, now = case
    assert sched.every is not None
    runs = [run for _, run in chain(sched, now, steps, first)]
    anchor = runs[0].nominal_at
    assert anchor == now + sched.jitter / 2
    for k, run in enumerate(runs):
        assert run.nominal_at == anchor + k * sched.every, f"run {k} drifted"


@FAST
@given(schedule_and_now(kind="every"), draws, chains)
def test_3_every_runs_stay_aligned_to_the_anchor_after_downtime_and_windows(
    case: tuple[Schedule, datetime], first: float, steps: list[tuple[float, timedelta]]
) -> None:
    sched, now = case
    assert sched.every is not None
    runs = [run for _, run in chain(sched, now, steps, first)]
    anchor = runs[0].nominal_at
    for run in runs:
        assert (run.nominal_at - anchor) % sched.every == timedelta(0)


# --------------------------------------------------------------------------- 4 & 5: DST and cron


def matching_walls(expr: str, first_day: date, last_day: date) -> list[datetime]:
    """Every naive wall time matching one of the test grammar's crons, by brute force."""
    minute_f, hour_f, _, _, dow_f = expr.split()

    def expand(field: str, top: int) -> set[int]:
        if field == "*":
            return set(range(top))
        if field.startswith("*/"):
            return set(range(0, top, int(field[2:])))
        if "-" in field:
            a, b = field.split("-")
            return set(range(int(a), int(b) + 1))
        return {int(x) for x in field.split(",")}

    minutes, hours = expand(minute_f, 60), expand(hour_f, 24)
    dows = expand(dow_f, 7)  # cron: 0 = Sunday
    out: list[datetime] = []
    day = first_day
    while day <= last_day:
        if day.isoweekday() % 7 in dows:
            out.extend(datetime.combine(day, time(h, m)) for h in sorted(hours) for m in sorted(minutes))
        day += DAY
    return out


@SLOWER
@given(st.data())
def test_cron_fires_are_the_wall_times_mapped_once_each(data: st.DataObject) -> None:
    zone = data.draw(st.sampled_from([z for z in DST_ZONES if overlaps(z)]))
    tz = ZoneInfo(zone)
    expr = data.draw(cron_exprs())
    if data.draw(st.booleans()):
        after = data.draw(instants(zone, spread=DAY))
    else:
        # Inside a repeated hour, second time round: the clock re-reads times that already fired.
        tr = data.draw(st.sampled_from(overlaps(zone)))
        after = tr.at + data.draw(_durations(timedelta(0), tr.before - tr.after))
        expr = data.draw(st.sampled_from(["*/5 * * * *", "* * * * *", "0,30 * * * *", "*/20 * * * 1-5"]))
    until = after + 2 * DAY
    fires = list(itertools.takewhile(lambda f: f <= until, cron_fires(expr, after, tz)))
    assert all(a < b for a, b in itertools.pairwise(fires)), "fire instants must strictly increase"
    first_day, last_day = to_wall(after, tz).date() - DAY, to_wall(until, tz).date() + DAY
    expected = sorted({wall_to_utc(w, tz) for w in matching_walls(expr, first_day, last_day)})
    assert fires == [f for f in expected if after < f <= until]
    walls = [to_wall(f, tz) for f in fires]
    assert all(a < b for a, b in itertools.pairwise(walls)), "a wall time fired twice"


@FAST
@given(st.data())
def test_4_a_daily_cron_inside_a_fall_back_overlap_fires_once_at_the_first_occurrence(
    data: st.DataObject,
) -> None:
    zone = data.draw(st.sampled_from([z for z in DST_ZONES if overlaps(z)]))
    tz = ZoneInfo(zone)
    tr = data.draw(st.sampled_from(overlaps(zone)))
    repeat = tr.before - tr.after
    overlap_start = (tr.at + tr.after).replace(tzinfo=None)  # the wall time the clock is set back to
    wall = overlap_start + data.draw(st.integers(0, repeat // MINUTE - 1)) * MINUTE
    fires = list(
        itertools.takewhile(
            lambda f: f < tr.at + 2 * DAY,
            cron_fires(f"{wall.minute} {wall.hour} * * *", tr.at - 2 * DAY, tz),
        )
    )
    at_wall = [f for f in fires if to_wall(f, tz) == wall]
    assert len(at_wall) == 1, f"{wall} fired {len(at_wall)} times: {at_wall}"
    assert at_wall[0] < tr.at, "must be the first occurrence, before the clocks went back"
    assert at_wall[0] == wall_to_utc(wall, tz)
    assert at_wall[0] + repeat not in fires
    assert all(a < b for a, b in itertools.pairwise(fires))


@FAST
@given(st.data())
def test_4_an_hourly_cron_fires_once_per_wall_hour_across_a_fall_back(data: st.DataObject) -> None:
    zone = data.draw(st.sampled_from([z for z in DST_ZONES if overlaps(z)]))
    tz = ZoneInfo(zone)
    tr = data.draw(st.sampled_from(overlaps(zone)))
    minute = data.draw(st.integers(0, 59))
    start, end = tr.at - 6 * HOUR, tr.at + 6 * HOUR
    fires = list(itertools.takewhile(lambda f: f < end, cron_fires(f"{minute} * * * *", start, tz)))
    walls = [to_wall(f, tz) for f in fires]
    assert all(a < b for a, b in itertools.pairwise(fires)), "fire instants must strictly increase"
    assert len(set(walls)) == len(walls), "a wall hour fired twice"
    assert all(w.minute == minute for w in walls)
    # Every wall hour the clock shows in the range fires exactly once.
    shown = set()
    t = start.replace(second=0, microsecond=0) + MINUTE
    while t < end:
        w = to_wall(t, tz)
        if w.minute == minute and wall_to_utc(w, tz) > start:
            shown.add(w.replace(fold=0))
        t += MINUTE
    assert set(walls) == shown


@FAST
@given(st.data())
def test_5_a_daily_cron_inside_a_spring_forward_gap_fires_once_at_the_transition(
    data: st.DataObject,
) -> None:
    zone = data.draw(st.sampled_from([z for z in DST_ZONES if gaps(z)]))
    tz = ZoneInfo(zone)
    tr = data.draw(st.sampled_from(gaps(zone)))
    gap_start = (tr.at + tr.before).replace(tzinfo=None)  # the first wall time that does not exist
    wall = gap_start + data.draw(st.integers(0, (tr.after - tr.before) // MINUTE - 1)) * MINUTE
    assume(wall.second == 0 and wall.microsecond == 0)
    fires = list(
        itertools.takewhile(
            lambda f: f < tr.at + 3 * DAY,
            cron_fires(f"{wall.minute} {wall.hour} * * *", tr.at - 3 * DAY, tz),
        )
    )
    assert tr.at in fires, f"{wall} in the gap did not fire at the transition {tr.at}"
    i = fires.index(tr.at)
    assert to_wall(fires[i - 1], tz).date() < wall.date(), "fired earlier on the gap day"
    if i + 1 < len(fires):
        assert to_wall(fires[i + 1], tz).date() > wall.date(), "fired again on the gap day"
    # And the runner, planning with no jitter, runs it there once.
    sched = Schedule(tz=tz, cron=f"{wall.minute} {wall.hour} * * *")
    run = plan_next(sched, key="k", previous=None, now=fires[i - 1], draw=0.5)
    assert run.planned_at == tr.at
    after = plan_next(sched, key="k", previous=run, now=run.planned_at, draw=0.5)
    assert to_wall(after.planned_at, tz).date() > wall.date()


@FAST
@given(st.data(), draws)
def test_4_a_daily_plan_chain_runs_once_on_a_fall_back_day(data: st.DataObject, draw: float) -> None:
    zone = data.draw(st.sampled_from([z for z in DST_ZONES if overlaps(z)]))
    tz = ZoneInfo(zone)
    tr = data.draw(st.sampled_from(overlaps(zone)))
    overlap_start = (tr.at + tr.after).replace(tzinfo=None)
    wall = overlap_start + data.draw(st.integers(0, (tr.before - tr.after) // MINUTE - 1)) * MINUTE
    sched = Schedule(
        tz=tz, cron=f"{wall.minute} {wall.hour} * * *", jitter=data.draw(_durations(timedelta(0), HOUR))
    )
    run = plan_next(sched, key="k", previous=None, now=tr.at - 3 * DAY, draw=draw)
    nominals = []
    while run.nominal_at < tr.at + 3 * DAY:
        nominals.append(run.nominal_at)
        run = plan_next(sched, key="k", previous=run, now=run.planned_at, draw=draw)
    on_day = [n for n in nominals if to_wall(n, tz).date() == wall.date()]
    assert on_day == [wall_to_utc(wall, tz)]


# --------------------------------------------------------------------------- 6: plan_next


@FAST
@given(schedule_and_now(), draws, chains)
def test_6_plans_strictly_increase_and_stay_after_now_and_the_previous_run(
    case: tuple[Schedule, datetime], first: float, steps: list[tuple[float, timedelta]]
) -> None:
    sched, start = case
    runs = chain(sched, start, steps, first)
    assert runs[0][1].planned_at >= start, "a new schedule's first run lies in the past"
    for (_, prev), (now, run) in itertools.pairwise(runs):
        assert run.planned_at > now
        assert run.planned_at > prev.planned_at
        assert run.nominal_at > prev.nominal_at


def brute_force_next(
    sched: Schedule, prev: PlannedRun, now: datetime, draw: float, limit: int
) -> PlannedRun | None:
    """plan_next by walking the grid one point at a time (the obvious, slow algorithm)."""
    floor = max(now, prev.planned_at)
    nominal = prev.nominal_at
    for _ in range(limit):
        nominal = next_nominal(sched, nominal)
        planned, offset, snapped = place(sched, nominal, draw)
        if planned > floor:
            return PlannedRun(
                key=prev.key,
                fingerprint=prev.fingerprint,
                nominal_at=nominal,
                planned_at=planned,
                offset=offset,
                snapped=snapped,
            )
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule_and_now(min_every=timedelta(minutes=20), max_jitter=3 * HOUR),
    draws,
    draws,
    st.data(),
)
def test_6_plan_next_is_the_first_grid_point_placed_after_the_floor(
    case: tuple[Schedule, datetime], first: float, draw: float, data: st.DataObject
) -> None:
    """The skip-ahead finds exactly what walking the grid one point at a time finds."""
    sched, now = case
    prev = plan_next(sched, key="k", previous=None, now=now, draw=first)
    # Late by a little, by days, or by whole intervals give or take the jitter (grid points near the floor).
    step = sched.every or HOUR
    late = data.draw(
        st.one_of(
            _durations(-HOUR, 2 * HOUR),
            _durations(timedelta(0), 4 * DAY),
            st.builds(
                lambda k, d: k * step + d,
                st.integers(0, min(40, 4 * DAY // step)),
                _durations(-sched.jitter, sched.jitter),
            ),
        )
    )
    now = prev.planned_at + late
    fast = plan_next(sched, key="k", previous=prev, now=now, draw=draw)
    slow = brute_force_next(sched, prev, now, draw, limit=2000)
    assert slow is not None
    assert fast == slow


@FAST
@given(schedule_and_now(), st.data(), draws, draws)
def test_6_a_changed_fingerprint_restarts_the_grid(
    case: tuple[Schedule, datetime], data: st.DataObject, d1: float, d2: float
) -> None:
    sched, now = case
    old = plan_next(
        sched, key="k", previous=None, now=now - data.draw(_durations(timedelta(0), 30 * DAY)), draw=d1
    )
    changed = data.draw(schedules(zone=str(sched.tz)))
    assume(changed.fingerprint() != sched.fingerprint())
    run = plan_next(changed, key="k", previous=old, now=now, draw=d2)
    assert run.fingerprint == changed.fingerprint()
    assert run.nominal_at == first_nominal(changed, now)
    assert run.planned_at >= now
    assert run == plan_next(changed, key="k", previous=None, now=now, draw=d2)


@FAST
@given(schedule_and_now(kind="every", window=False), draws)
def test_6_the_first_plan_of_an_every_schedule_lands_within_the_jitter_of_now(
    case: tuple[Schedule, datetime], draw: float
) -> None:
    sched, now = case
    run = plan_next(sched, key="k", previous=None, now=now, draw=draw)
    assert now <= run.planned_at <= now + sched.jitter
    assert run.planned_at == now + sched.jitter / 2 + jitter_offset(sched.jitter, draw)


@FAST
@given(schedule_and_now(kind="cron", window=False), draws, st.floats(0, 1))
def test_6_the_first_plan_of_a_cron_schedule_is_the_next_fire_never_in_the_past(
    case: tuple[Schedule, datetime], draw: float, before: float
) -> None:
    sched, now = case
    assert sched.cron is not None
    # Often just before a fire, so that jitter can reach back past now.
    fire = next(cron_fires(sched.cron, now, sched.tz))
    now = max(now, fire - sched.jitter * before)
    run = plan_next(sched, key="k", previous=None, now=now, draw=draw)
    assert run.nominal_at == next(cron_fires(sched.cron, now, sched.tz))
    assert run.planned_at == max(now, run.nominal_at + jitter_offset(sched.jitter, draw))


# --------------------------------------------------------------------------- 7: catch-up


@FAST
@given(
    schedule_and_now(),
    draws,
    st.sampled_from(list(CatchUp)),
    _durations(timedelta(0), 400 * DAY),
    _durations(timedelta(0), 2 * HOUR),
    draws,
)
def test_7_catch_up_fires_within_grace_skips_beyond_and_never_bursts(  # noqa: PLR0917
    case: tuple[Schedule, datetime],
    d1: float,
    catch_up: CatchUp,
    down: timedelta,
    grace: timedelta,
    d2: float,
) -> None:
    sched, start = case
    sched = attrs.evolve(sched, catch_up=catch_up)
    entry = plan_next(sched, key="k", previous=None, now=start, draw=d1)
    now = entry.planned_at + down  # the daemon comes back
    decision = on_due(sched, entry, now=now, grace=grace)
    if down <= grace:
        assert decision is FireDecision.FIRE
    elif catch_up is CatchUp.SKIP:
        assert decision is FireDecision.SKIP_MISSED
    elif catch_up is CatchUp.RUN_ALL:
        assert decision is FireDecision.CATCH_UP
    else:
        assert decision is FireDecision.FIRE
    # Fired or skipped, the next plan is in the future: the index holds nothing else due now.
    following = plan_next(sched, key="k", previous=entry, now=now, draw=d2)
    assert following.planned_at > now
    assert due([following], entry.planned_at, now + US) == []


# --------------------------------------------------------------------------- 8: due


planned_runs = st.builds(
    lambda key, minutes: PlannedRun(
        key=key,
        fingerprint="f",
        nominal_at=datetime(2026, 1, 1, tzinfo=UTC) + minutes * MINUTE,
        planned_at=datetime(2026, 1, 1, tzinfo=UTC) + minutes * MINUTE,
        offset=timedelta(0),
    ),
    st.text("abcde", min_size=1, max_size=3),
    st.integers(0, 200),
)


@FAST
@given(st.lists(planned_runs, max_size=30), st.integers(-10, 210), st.integers(-10, 210))
def test_8_due_returns_exactly_the_runs_in_the_half_open_range_sorted(
    entries: list[PlannedRun], a: int, b: int
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC) + a * MINUTE
    end = datetime(2026, 1, 1, tzinfo=UTC) + b * MINUTE
    got = due(entries, start, end)
    assert sorted(map(id, got)) == sorted(id(e) for e in entries if start <= e.planned_at < end)
    assert [(r.planned_at, r.key) for r in got] == sorted((r.planned_at, r.key) for r in got)


# --------------------------------------------------------------------------- 9: preview


@SLOWER
@given(
    schedule_and_now(min_every=timedelta(minutes=30), max_jitter=2 * HOUR),
    draws,
    _durations(-DAY, 3 * DAY),
    _durations(timedelta(0), 3 * DAY),
)
def test_9_preview_lists_increasing_runs_inside_the_range_and_the_window(
    case: tuple[Schedule, datetime], draw: float, lead: timedelta, length: timedelta
) -> None:
    sched, now = case
    entry = plan_next(sched, key="k", previous=None, now=now, draw=draw)
    start = entry.planned_at + lead
    end = start + length
    runs = preview(sched, entry, start, end)
    assert all(start <= r.planned_at < end for r in runs)
    assert all(a.planned_at < b.planned_at for a, b in itertools.pairwise(runs))
    if sched.window is not None:
        assert all(sched.window.contains(r.planned_at, sched.tz) for r in runs)
    # The same runs as walking from the entry one plan at a time.
    walked, current = [], entry
    while current.planned_at < end:
        if current.planned_at >= start:
            walked.append(current)
        current = plan_next(sched, key="k", previous=current, now=current.planned_at, draw=0.5)
    assert runs == walked
