"""Cron expressions: the one module that knows croniter.

croniter computes in wall time and fires a repeated hour twice; here its wall
times become instants by the schedule's DST rule (once in an overlap, at the
end of a gap). Its original maintainer declared it abandoned in 2024 (it lives
on under pallets-eco), so nothing else imports it: swapping it (cronsim is the
usual alternative) touches this module only. See PITFALLS.md, "Time".

croniter (with the dateutil it imports) is imported at the first cron
expression: ~80 ms of every command's start that a config without one never
pays (``ductile queue`` reads the config).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from ductile.domain.errors import ScheduleError
from ductile.domain.schedule.wall import to_wall, wall_to_utc

#: How many wall times in a row may map onto an already-yielded fire (a fall-back
#: overlap of a minutely cron costs 60) before the cron search gives up.
_CRON_SEARCH_LIMIT = 5000
#: Where :func:`validate_cron` looks for a first fire (croniter searches 50 years on).
_CRON_REFERENCE = datetime(2000, 1, 1)  # noqa: DTZ001 - a wall time, naive on purpose

if TYPE_CHECKING:
    from croniter import croniter


def _croniter() -> type[croniter]:
    """croniter's class, imported at first use (see the module's docs)."""
    from croniter import croniter  # noqa: PLC0415 - deferred on purpose

    cls: type[croniter] = croniter  # croniter has no type information
    return cls


def validate_cron(expr: str) -> str:
    """A 5-field cron expression that fires at least once, normalized; raises :class:`ScheduleError`."""
    if not isinstance(expr, str):
        raise ScheduleError(
            f"cron must be a string of 5 fields (minute hour day month weekday), not {expr!r}"
        )
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron must have exactly 5 fields (minute hour day month weekday), {expr!r} has {len(fields)}"
        )
    normalized = " ".join(fields)
    try:
        ok = bool(_croniter().is_valid(normalized))
    except Exception:  # croniter raises several kinds on odd input
        ok = False
    if not ok:
        raise ScheduleError(f"cron expression {expr!r} is not valid")
    try:
        _croniter()(normalized, _CRON_REFERENCE).get_next(datetime)
    except Exception as e:  # e.g. '0 0 31 2 *': no date ever matches
        raise ScheduleError(f"cron expression {expr!r} never fires: no date matches it") from e
    return normalized


@functools.lru_cache(maxsize=256)
def _parsed_cron(expr: str) -> croniter:
    """A croniter for ``expr``, parsed once (parsing costs far more than a step)."""
    try:
        return _croniter()(expr, _CRON_REFERENCE)
    except Exception as e:
        raise ScheduleError(f"cron expression {expr!r} is not valid") from e


def _cron_iterator(expr: str, start: datetime) -> croniter:
    """A fresh croniter over naive wall time, positioned at ``start`` (excluded)."""
    it = copy.copy(_parsed_cron(expr))
    it.set_current(start, force=True)
    return it


def cron_fires(expr: str, after: datetime, tz: tzinfo) -> Iterator[datetime]:
    """Fire instants of ``expr`` in ``tz`` strictly after ``after``, increasing.

    Each wall time fires once: at its first occurrence in a fall-back overlap,
    at the end of the gap in a spring-forward gap (once, however many wall
    times of the gap match, and not again for the wall time the gap ends at).
    """
    it = _cron_iterator(expr, to_wall(after, tz))
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
            landed = to_wall(at, tz)
            if landed > wall:
                # ``wall`` was in a gap: every wall time up to ``landed`` maps onto ``at`` too.
                it = _cron_iterator(expr, landed)
        else:
            # A wall time repeated by a fall-back overlap, already passed.
            misses += 1
            if misses > _CRON_SEARCH_LIMIT:  # pragma: no cover - defensive
                raise ScheduleError(f"cron expression {expr!r} does not advance")
