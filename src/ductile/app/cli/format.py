"""How the verbs show things: aligned tables, durations, local times, schedules, times read.

Pure functions shared by the verb modules (and by ``ductile simulate``'s report).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

from ductile.app.cli.context import UsageError
from ductile.domain.errors import UnitError
from ductile.domain.protocol import iso_utc
from ductile.domain.quantities import format_duration, parse_duration
from ductile.domain.schedule import SHORT_NAMES, CatchUp, IfRunning, Schedule

#: Between the two ends of a window in a schedule summary.
EN_DASH = "\u2013"


def cell(value: object) -> str:
    """One table cell on one line: control characters and every blank but the
    space (tabs, line and paragraph separators) become spaces."""
    text = "-" if value is None else str(value)
    text = "".join(" " if (c.isspace() or c < " " or "\x7f" <= c <= "\x9f") else c for c in text)
    return text if text.strip() else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart; no trailing blanks. ``None``/empty cells show ``-``."""
    grid = [[cell(h) for h in headers]]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells, the table {len(headers)} columns")
        grid.append([cell(c) for c in row])
    widths = [max(len(line[i]) for line in grid) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid
    )


def human_duration(seconds: float) -> str:
    """``350ms``, ``1.2s``, ``3m4s``, ``2h5m``, ``3d4h``: at most two units, never rounded up."""
    if math.isnan(seconds) or math.isinf(seconds):
        return "-"
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 1:
        return f"{math.floor(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    total = math.floor(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if total >= size:
            text = f"{total // size}{unit}"
            next_unit, next_size = units[i + 1] if i + 1 < len(units) else ("", 0)
            if next_size and (total % size) // next_size:
                text += f"{(total % size) // next_size}{next_unit}"
            return text
    raise AssertionError("unreachable: seconds >= 60")  # pragma: no cover


def local_time(at: datetime | None, tz: tzinfo | None = None) -> str:
    """An instant as ISO-8601 in ``tz`` (None: the machine's zone), without microseconds."""
    if at is None:
        return "-"
    shown = at.astimezone(tz) if tz is not None else at.astimezone()
    return shown.replace(microsecond=0).isoformat()


def _text_duration(value: timedelta) -> str:
    """A configured duration as the operator would write it."""
    try:
        return format_duration(value)
    except UnitError:
        return human_duration(value.total_seconds())


def schedule_summary(schedule: Schedule) -> str:
    """One line: ``every 6h jitter 30m window (±15m) 06:00\u201322:00 Europe/Berlin`` (with an
    en dash), ``cron '30 7 * * 1-5' Europe/Berlin``, ``at 2026-12-24T17:00:00Z UTC`` or ``after 2m
    UTC``. The jitter is named as configured, then what it means: the width of the window around
    each grid point, and the half-width; then ``not_on`` days, and ``catch_up`` and ``if_running``
    when not their defaults."""
    parts: list[str] = []
    if schedule.every is not None:
        parts.append(f"every {_text_duration(schedule.every)}")
    elif schedule.at is not None:
        parts.append(f"at {iso_utc(schedule.at)}")
    elif schedule.after is not None:
        parts.append(f"after {_text_duration(schedule.after)}")
    else:
        parts.append(f"cron '{schedule.cron}'")
    if schedule.jitter:
        parts.append(
            f"jitter {_text_duration(schedule.jitter)} window (±{_text_duration(schedule.jitter / 2)})"
        )
    if schedule.window is not None:
        parts.append(f"{schedule.window.start:%H:%M}{EN_DASH}{schedule.window.end:%H:%M}")
    if schedule.not_on:
        parts.append("not " + ",".join(SHORT_NAMES[d] for d in sorted(schedule.not_on)))
    parts.append(zone_name(schedule.tz))
    if schedule.catch_up is not CatchUp.SKIP:
        parts.append(f"catch_up {schedule.catch_up.value}")
    if schedule.if_running is not IfRunning.QUEUE:
        parts.append(f"if_running {schedule.if_running.value}")
    if schedule.emit is not None:
        parts.append(f"emit '{schedule.emit.type}'")
    elif schedule.command != "poll":
        parts.append(f"command {schedule.command}")
    return " ".join(parts)


def schedules_summary(schedules: Sequence[Schedule], paused: Collection[str] = ()) -> str | None:
    """Every schedule of a plugin in one cell: the summary alone for a lone ``default``, else
    ``morning: cron ...; hourly: every 1h ...``; ``(paused)`` after each paused id."""
    if not schedules:
        return None
    if len(schedules) == 1 and schedules[0].id == "default":
        mark = " (paused)" if "default" in paused else ""
        return schedule_summary(schedules[0]) + mark
    return "; ".join(
        f"{s.id}{' (paused)' if s.id in paused else ''}: {schedule_summary(s)}" for s in schedules
    )


def zone_name(tz: tzinfo) -> str:
    """``Europe/Berlin`` for a ZoneInfo; the zone's own text otherwise."""
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of ``text`` behind ``prefix``."""
    return "\n".join(prefix + line for line in text.splitlines())


def pretty_json(value: object) -> str:
    """A JSON value for people: indented, keys sorted."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def signed(seconds: float) -> str:
    """An offset with its sign: ``+3m4s``, ``-12s``, ``0s``."""
    if seconds == 0:
        return "0s"
    return ("+" if seconds > 0 else "") + human_duration(seconds)


def parse_time(text: str, *, now: datetime, tz: tzinfo | None = None) -> datetime:
    """``now``, ``+24h``, ``-30m`` (relative to now), or ISO-8601.

    An ISO time without an offset is in ``tz`` (None: the machine's zone); a
    date alone is its midnight. Raises :class:`UsageError`.
    """
    s = text.strip()
    if s.lower() == "now":
        return now
    if s[:1] in "+-" and len(s) > 1:
        try:
            delta = parse_duration(s[1:])
        except UnitError as e:
            raise UsageError(f"{text!r} is not a relative time: {e}") from None
        return now + delta if s[0] == "+" else now - delta
    try:
        at = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time: use ISO-8601 (2026-11-23T07:30, 2026-11-23T07:30+01:00), "
            "'now', or a relative time such as +24h or -30m"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz) if tz is not None else at.astimezone()
    return at.astimezone(UTC)
