"""Schedule math (D17): the first of three layers, and the only pure one.

Given a schedule, the previous planned run and a random draw, decide the next
planned run. Nothing here loops over time or stores anything: the schedule
*index* (a store concern) keeps the planned runs; the *runner* (the app)
asks it what is due and enqueues.

Rules, each written down in ``docs/adr``:

* **Nominal grid.** ``every`` runs sit on ``anchor + k * interval`` in
  elapsed (UTC) time, the anchor being the moment the schedule was first
  planned; ``cron`` runs sit on the expression's fire times in the
  schedule's zone. Jitter is an offset from the nominal time, drawn once per
  planned run, so runs never drift as a random walk.
* **Jitter** is ``(draw - 0.5) * jitter``: ``|offset| <= jitter / 2``.
* **Windows** are hard: a planned time outside ``preferred_window`` snaps to
  the start of the next window; if jitter alone pushed a run that was
  nominally inside the window out of it, the run is clamped to that window's
  edge instead. Overnight windows (22:00-06:00) work.
* **DST.** Cron and windows are evaluated in wall time of the zone; instants
  are UTC. A wall time in a spring-forward gap runs at the end of the gap; a
  wall time in a fall-back overlap runs once, at its first occurrence.
* **Coalescing.** Runs never go backwards or repeat: the next planned time is
  strictly after the previous planned time and after ``now`` (nominal times
  that would land on or before either are skipped).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import attrs
from croniter import croniter

from ductile.domain.errors import ScheduleError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.routing import event_id_for
from ductile.domain.units import format_duration

ONE_SECOND = timedelta(seconds=1)
#: How long the index may take to find a cron fire before giving up.
_CRON_SEARCH_LIMIT = 5000


class CatchUp(enum.StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


# --------------------------------------------------------------------------- wall time


def wall_to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a naive wall time in ``tz``.

    An overlap (fall-back) resolves to the first occurrence; a wall time that
    does not exist (spring-forward gap) resolves to the end of the gap.
    """
    if wall.tzinfo is not None:
        raise ValueError("wall_to_utc takes a naive wall time")
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if second.astimezone(tz).replace(tzinfo=None) == wall:
        return second
    # A gap: find the transition, the first instant whose wall time is past ``wall``.
    lo, hi = min(first, second), max(first, second)
    while hi - lo > ONE_SECOND:
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def to_wall(at: datetime, tz: tzinfo) -> datetime:
    """The naive wall time of an instant in ``tz``."""
    return at.astimezone(tz).replace(tzinfo=None)


# --------------------------------------------------------------------------- windows


_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_clock(text: str, where: str) -> time:
    m = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScheduleError(f"{where} must be a time like '06:00' (00:00 to 23:59), not {text!r}")
    return time(int(m.group(1)), int(m.group(2)))


@attrs.frozen
class Window:
    """A daily span of wall time, ``[start, end)``; overnight when start > end."""

    start: time
    end: time

    def __attrs_post_init__(self) -> None:
        if self.start == self.end:
            raise ScheduleError("preferred_window start and end must differ")

    @classmethod
    def parse(cls, start: str, end: str) -> Window:
        return cls(_parse_clock(start, "preferred_window.start"), _parse_clock(end, "preferred_window.end"))

    @property
    def overnight(self) -> bool:
        return self.start > self.end

    def contains_wall(self, wall: datetime) -> bool:
        t = wall.time()
        if self.overnight:
            return t >= self.start or t < self.end
        return self.start <= t < self.end

    def contains(self, at: datetime, tz: tzinfo) -> bool:
        return self.contains_wall(to_wall(at, tz))

    def next_start(self, after: datetime, tz: tzinfo) -> datetime:
        """The first window start strictly after ``after``."""
        day = to_wall(after, tz).date() - timedelta(days=1)
        for i in range(4):
            candidate = wall_to_utc(datetime.combine(day + timedelta(days=i), self.start), tz)
            if candidate > after:
                return candidate
        raise AssertionError("no window start within three days")  # pragma: no cover

    def bounds(self, at: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
        """The ``[start, end)`` instants of the window occurrence containing ``at``."""
        wall = to_wall(at, tz)
        day: date = wall.date()
        if self.overnight and wall.time() < self.end:
            day -= timedelta(days=1)
        start = wall_to_utc(datetime.combine(day, self.start), tz)
        end_day = day + timedelta(days=1) if self.overnight else day
        end = wall_to_utc(datetime.combine(end_day, self.end), tz)
        return start, end


# --------------------------------------------------------------------------- schedules


def validate_cron(expr: str) -> str:
    """A 5-field cron expression, normalized; raises :class:`ScheduleError`."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ScheduleError(f"cron must have exactly 5 fields (minute hour day month weekday), not {expr!r}")
    normalized = " ".join(expr.split())
    try:
        ok = croniter.is_valid(normalized)
    except Exception:  # croniter raises several kinds on odd input
        ok = False
    if not ok:
        raise ScheduleError(f"cron expression {expr!r} is not valid")
    return normalized


@attrs.frozen(kw_only=True)
class Schedule:
    """A plugin's schedule, as configured (values already parsed)."""

    tz: tzinfo
    every: timedelta | None = None
    cron: str | None = None
    jitter: timedelta = timedelta(0)
    window: Window | None = None
    catch_up: CatchUp = CatchUp.SKIP
    #: The command a fire enqueues (``poll`` unless configured).
    command: str = "poll"
    #: A timer trigger: fire this event into the router instead of a command.
    emit: EmittedEvent | None = None

    def __attrs_post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ScheduleError("a schedule needs exactly one of 'every' or 'cron'")
        if self.every is not None and self.every <= timedelta(0):
            raise ScheduleError("'every' must be longer than zero")
        if self.cron is not None:
            object.__setattr__(self, "cron", validate_cron(self.cron))
        if self.jitter < timedelta(0):
            raise ScheduleError("'jitter' cannot be negative")
        if self.every is not None and self.jitter >= self.every:
            raise ScheduleError(
                f"'jitter' ({format_duration(self.jitter)}) must be shorter than "
                f"'every' ({format_duration(self.every)}), or runs could swap order"
            )

    def fingerprint(self) -> str:
        """Changes whenever anything that decides run times changes."""
        body: dict[str, Any] = {
            "every": self.every.total_seconds() if self.every else None,
            "cron": self.cron,
            "jitter": self.jitter.total_seconds(),
            "window": [self.window.start.isoformat(), self.window.end.isoformat()] if self.window else None,
            "tz": str(self.tz),
            "catch_up": self.catch_up.value,
            "command": self.command,
            "emit": attrs.asdict(self.emit) if self.emit else None,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class PlannedRun:
    """One row of the schedule index: the next run of one schedule."""

    key: str
    fingerprint: str
    #: Where the grid says the run belongs.
    nominal_at: datetime
    #: When it will actually run: nominal + jitter, kept inside the window.
    planned_at: datetime
    #: The jitter offset drawn for this run (stored: never re-drawn).
    offset: timedelta
    #: True when the window moved the run to the start of a later window.
    snapped: bool = False


# --------------------------------------------------------------------------- the grid


def cron_fires(expr: str, after: datetime, tz: tzinfo) -> Iterator[datetime]:
    """Fire instants of ``expr`` in ``tz`` strictly after ``after``, increasing.

    Each wall time fires once: at its first occurrence in a fall-back overlap,
    at the end of the gap in a spring-forward gap (deduplicated when that
    coincides with the next fire).
    """
    it = croniter(expr, to_wall(after, tz))
    last = after
    misses = 0
    while True:
        try:
            wall = it.get_next(datetime)
        except Exception as e:  # e.g. '0 0 31 2 *' never fires
            raise ScheduleError(f"cron expression {expr!r} has no next fire time") from e
        at = wall_to_utc(wall, tz)
        if at > last:
            misses = 0
            last = at
            yield at
        else:
            misses += 1
            if misses > _CRON_SEARCH_LIMIT:  # pragma: no cover - defensive
                raise ScheduleError(f"cron expression {expr!r} does not advance")


def next_nominal(schedule: Schedule, after: datetime) -> datetime:
    """The grid point following the nominal time ``after``."""
    if schedule.every is not None:
        return after + schedule.every
    assert schedule.cron is not None
    return next(cron_fires(schedule.cron, after, schedule.tz))


def first_nominal(schedule: Schedule, now: datetime) -> datetime:
    """Where a newly seen schedule's grid starts.

    ``every``: ``now + jitter / 2`` (the anchor), so a new schedule runs
    within ``[now, now + jitter]`` of appearing and then every interval;
    ``cron``: the next fire after now.
    """
    if schedule.every is not None:
        return now + schedule.jitter / 2
    assert schedule.cron is not None
    return next(cron_fires(schedule.cron, now, schedule.tz))


def jitter_offset(jitter: timedelta, draw: float) -> timedelta:
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"a random draw must be in [0, 1), got {draw!r}")
    return (jitter * (draw - 0.5)) if jitter else timedelta(0)


def place(schedule: Schedule, nominal: datetime, draw: float) -> tuple[datetime, timedelta, bool]:
    """Planned instant, effective offset and snapped flag for a nominal time."""
    offset = jitter_offset(schedule.jitter, draw)
    planned = nominal + offset
    window, tz = schedule.window, schedule.tz
    if window is None or window.contains(planned, tz):
        return planned, offset, False
    if window.contains(nominal, tz):
        start, end = window.bounds(nominal, tz)
        clamped = max(start, min(planned, end - ONE_SECOND))
        return clamped, clamped - nominal, False
    snapped = window.next_start(planned, tz)
    return snapped, offset, True


def _lookback(schedule: Schedule) -> timedelta:
    """How far before ``now`` a nominal time can lie and still plan into the future."""
    back = schedule.jitter / 2 + ONE_SECOND
    if schedule.window is not None:
        back += timedelta(days=2)
    return back


def _candidates(schedule: Schedule, start: datetime, *, inclusive: bool) -> Iterator[datetime]:
    """Grid points from ``start`` on (``start`` itself when ``inclusive``)."""
    nominal = start if inclusive else next_nominal(schedule, start)
    while True:
        yield nominal
        nominal = next_nominal(schedule, nominal)


def _skip_ahead(schedule: Schedule, nominal: datetime, horizon: datetime) -> datetime:
    """Jump an ``every`` grid close to ``horizon`` without walking it step by step."""
    if schedule.every is None or nominal >= horizon:
        return nominal
    steps = (horizon - nominal) // schedule.every
    return nominal + steps * schedule.every


def plan_next(
    schedule: Schedule,
    *,
    key: str,
    previous: PlannedRun | None,
    now: datetime,
    draw: float,
) -> PlannedRun:
    """The next planned run of ``schedule``.

    ``previous`` is the run just fired (or skipped); when it is missing or
    belongs to another version of the schedule (fingerprint), the grid
    restarts at :func:`first_nominal`. The result is strictly after both
    ``previous.planned_at`` and ``now``.
    """
    fp = schedule.fingerprint()
    floor = now
    if previous is None or previous.fingerprint != fp:
        gen = _candidates(schedule, first_nominal(schedule, now), inclusive=True)
        if schedule.every is not None:
            floor = now - ONE_SECOND  # the anchor itself may run right away
    else:
        floor = max(now, previous.planned_at)
        start = previous.nominal_at
        if schedule.every is not None:
            start = _skip_ahead(schedule, start, floor - _lookback(schedule))
            gen = _candidates(schedule, start, inclusive=start != previous.nominal_at)
        else:
            horizon = floor - _lookback(schedule)
            gen = (
                _candidates(schedule, start, inclusive=False)
                if start >= horizon
                else cron_fires(schedule.cron or "", max(start, horizon), schedule.tz)
            )
    for nominal in gen:
        planned, offset, snapped = place(schedule, nominal, draw)
        if planned > floor:
            return PlannedRun(
                key=key,
                fingerprint=fp,
                nominal_at=nominal,
                planned_at=planned,
                offset=offset,
                snapped=snapped,
            )
    raise AssertionError("unreachable: the grid is infinite")  # pragma: no cover


# --------------------------------------------------------------------------- due / fire decisions


def due(entries: Iterable[PlannedRun], start: datetime, end: datetime) -> list[PlannedRun]:
    """Planned runs in ``[start, end)``, earliest first: the index's one question."""
    return sorted((e for e in entries if start <= e.planned_at < end), key=lambda e: (e.planned_at, e.key))


def preview(
    schedule: Schedule, entry: PlannedRun, start: datetime, end: datetime, *, limit: int = 1000
) -> list[PlannedRun]:
    """The stored run and the runs after it in ``[start, end)``.

    Later runs have no jitter drawn yet, so they are shown at their centre
    (draw 0.5); the window still applies.
    """
    runs: list[PlannedRun] = []
    current = entry
    while current.planned_at < end and len(runs) < limit:
        if current.planned_at >= start:
            runs.append(current)
        current = plan_next(schedule, key=entry.key, previous=current, now=current.planned_at, draw=0.5)
    return runs


class FireDecision(enum.StrEnum):
    FIRE = "fire"
    #: Missed by more than the grace while ductile was down; catch_up: skip.
    SKIP_MISSED = "skip_missed"


def on_due(schedule: Schedule, entry: PlannedRun, *, now: datetime, grace: timedelta) -> FireDecision:
    """A due run: fire it, or (missed long ago and ``catch_up: skip``) skip it.

    ``run_once`` fires one job for however many runs were missed: the
    following plan starts after ``now``.
    """
    if now - entry.planned_at <= grace or schedule.catch_up is CatchUp.RUN_ONCE:
        return FireDecision.FIRE
    return FireDecision.SKIP_MISSED


def poll_guard_allows(outstanding: int, max_outstanding: int) -> bool:
    """D21: no new poll while ``max_outstanding`` polls are queued or running."""
    return outstanding < max_outstanding


def timer_event_id(key: str, nominal_at: datetime) -> str:
    """A timer trigger's event id: stable for one nominal run of one schedule."""
    return event_id_for(f"timer:{key}", int(nominal_at.timestamp()))
