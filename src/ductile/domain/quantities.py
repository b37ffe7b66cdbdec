"""Durations and sizes as operators write them.

Durations: an integer and a unit, optionally several in a row, largest first:
``500ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``1w``, ``1h30m``. Sizes are
binary (D4, [R]): ``64KB`` is 65,536 bytes, ``1MB`` is 1,048,576 bytes.
Named intervals (``hourly``, ``daily``, ...) exist for schedules only.
"""

from __future__ import annotations

import re
from datetime import timedelta

from ductile.domain.errors import UnitError

_DURATION_UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_UNIT_ORDER = ["w", "d", "h", "m", "s", "ms"]
_DURATION_PART = re.compile(r"([0-9]+)(ms|w|d|h|m|s)")

#: Named intervals accepted by ``schedule.every``. They are elapsed time, not
#: calendar time: ``monthly`` is 30 days (use ``cron`` for "the 1st").
NAMED_INTERVALS: dict[str, timedelta] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
}

_SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}
_SIZE = re.compile(r"([0-9]+)\s*([A-Za-z]*)")

MAX_DURATION = timedelta(days=3650)
#: The largest size accepted: a signed 64-bit integer, far beyond any sane cap.
MAX_SIZE = 2**63 - 1
#: More significant digits than this cannot be a valid duration or size (and
#: ``int()`` refuses very long digit strings with a bare ValueError).
_MAX_DIGITS = 20


def _count(digits: str) -> int | None:
    """The integer ``digits`` spell, or None when it is absurdly long."""
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return None
    return int(significant or "0")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text into a positive :class:`timedelta`.

    Units must appear largest first and at most once; a bare number is
    refused because "60" could mean seconds or minutes.
    """
    if not isinstance(text, str):
        raise UnitError(f"a duration must be text like '30s' or '5m', not {type(text).__name__}")
    s = text.strip()
    if not s:
        raise UnitError("a duration cannot be empty (write e.g. '30s', '5m', '2h')")
    if s.isascii() and s.isdigit():
        raise UnitError(f"duration '{text}' needs a unit: write '{s}s' for seconds or '{s}m' for minutes")
    pos = 0
    total = timedelta(0)
    last_rank = -1
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise UnitError(
                f"'{text}' is not a duration; use a whole number and a unit "
                "(ms, s, m, h, d, w), e.g. '30s', '5m', '1h30m'"
            )
        unit = m.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise UnitError(f"duration '{text}': units must go from largest to smallest, once each")
        last_rank = rank
        count = _count(m.group(1))
        if count is None or count > MAX_DURATION // _DURATION_UNITS[unit]:
            raise UnitError(f"duration '{text}' is longer than ten years")
        total += count * _DURATION_UNITS[unit]
        if total > MAX_DURATION:
            raise UnitError(f"duration '{text}' is longer than ten years")
        pos = m.end()
    if total <= timedelta(0):
        raise UnitError(f"duration '{text}' must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """The canonical text for a duration: ``parse_duration(format_duration(d)) == d``."""
    if value <= timedelta(0):
        raise UnitError("only positive durations have a text form")
    ms_total = value // timedelta(milliseconds=1)
    if timedelta(milliseconds=ms_total) != value:
        raise UnitError("durations finer than a millisecond have no text form")
    parts: list[str] = []
    for unit in _UNIT_ORDER:
        step = _DURATION_UNITS[unit] // timedelta(milliseconds=1)
        count, ms_total = divmod(ms_total, step)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_interval(text: str) -> timedelta:
    """A schedule interval: a named interval (``daily``) or any duration."""
    if isinstance(text, str) and text.strip().lower() in NAMED_INTERVALS:
        return NAMED_INTERVALS[text.strip().lower()]
    try:
        return parse_duration(text)
    except UnitError as e:
        names = ", ".join(NAMED_INTERVALS)
        raise UnitError(f"{e} (or one of: {names})") from None


def parse_size(text: str) -> int:
    """Parse ``64KB`` / ``1MB`` / ``512B`` into bytes. Units are binary."""
    if not isinstance(text, str):
        raise UnitError(f"a size must be text like '64KB' or '1MB', not {type(text).__name__}")
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise UnitError(f"'{text}' is not a size; write e.g. '512B', '64KB', '1MB'")
    unit = m.group(2).upper()
    if unit == "":
        raise UnitError(f"size '{text}' needs a unit: B, KB, MB or GB (binary: 1MB = 1,048,576 bytes)")
    if unit not in _SIZE_UNITS:
        raise UnitError(f"size '{text}': unknown unit '{m.group(2)}' (use B, KB, MB or GB)")
    count = _count(m.group(1))
    value = MAX_SIZE + 1 if count is None else count * _SIZE_UNITS[unit]
    if value > MAX_SIZE:
        raise UnitError(f"size '{text}' is too large (the limit is {MAX_SIZE:,} bytes)")
    if value <= 0:
        raise UnitError(f"size '{text}' must be larger than zero")
    return value


def format_size(value: int) -> str:
    """The canonical text for a size: ``parse_size(format_size(n)) == n``."""
    if value <= 0:
        raise UnitError("only positive sizes have a text form")
    for unit in ("GB", "MB", "KB"):
        step = _SIZE_UNITS[unit]
        if value % step == 0:
            return f"{value // step}{unit}"
    return f"{value}B"
