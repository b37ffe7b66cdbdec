"""Wall time: a zone's clock readings and the UTC instants they name.

Instants are aware UTC datetimes; wall times are naive clock readings in a
zone, used only to evaluate cron and windows (adding a ``timedelta`` to an
aware local datetime resets ``fold``, so arithmetic stays in UTC). A wall time
in a spring-forward gap names the end of the gap; one in a fall-back overlap
names its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

ONE_SECOND = timedelta(seconds=1)
ONE_MICROSECOND = timedelta(microseconds=1)


def require_aware(at: datetime, what: str) -> None:
    """Refuse a naive datetime where an instant is expected."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware instant, got naive {at!r}")


def wall_to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a naive wall time in ``tz``: the first instant the clock reads ``wall`` or later.

    An overlap (fall-back) resolves to the first occurrence (``fold=0``); a
    wall time that does not exist (spring-forward gap) resolves to the end of
    the gap, the transition instant. The result is non-decreasing in ``wall``.
    """
    if wall.tzinfo is not None:
        raise ValueError(f"wall_to_utc takes a naive wall time, got {wall!r}")
    wall = wall.replace(fold=0)
    first = wall.replace(tzinfo=tz).astimezone(UTC)
    if to_wall(first, tz) == wall:
        return first
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if to_wall(second, tz) == wall:  # pragma: no cover - only odd tzinfo classes get here
        return second
    # A gap: the wall time read at ``lo`` is before ``wall``, at ``hi`` after it.
    lo, hi = min(first, second), max(first, second)
    while hi - lo > ONE_MICROSECOND:
        mid = lo + (hi - lo) // 2
        if to_wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def to_wall(at: datetime, tz: tzinfo) -> datetime:
    """The naive wall time of an (aware) instant in ``tz``."""
    require_aware(at, "an instant")
    return at.astimezone(tz).replace(tzinfo=None)
