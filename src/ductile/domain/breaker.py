"""The circuit breaker (D3, amended).

Per (plugin, command), counting consecutive failed or timed-out runs of
scheduler-originated jobs. With several schedules per plugin the pair is
(plugin, :func:`subject`): the command, qualified by the schedule when it is
not the ``default`` one (``poll@hourly``), so one schedule's failures never
hold back another's runs (ADR 0029). At ``threshold`` it opens: the scheduler enqueues
nothing for that pair. After ``reset_after`` one scheduled job may go as a
probe (half-open): success closes the breaker, failure re-opens it. A probe
that never reports (cancelled, lost) does not wedge the breaker: another
probe is admitted one ``reset_after`` later. ``reset`` closes it by hand.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import attrs


class BreakerStatus(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    threshold: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    reset_after: timedelta = timedelta(minutes=30)


@attrs.frozen(kw_only=True)
class Breaker:
    plugin: str
    command: str
    status: BreakerStatus = BreakerStatus.CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    #: When the current half-open probe was admitted.
    probe_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        """Open or half-open: the scheduler must ask :func:`admit` first."""
        return self.status is not BreakerStatus.CLOSED


#: Between a command and its schedule's id in a breaker's subject (neither name can hold it).
SUBJECT_SEPARATOR = "@"
_DEFAULT_SCHEDULE = "default"


def subject(command: str, schedule_id: str | None) -> str:
    """What a scheduled job's breaker counts: its command, or ``command@schedule`` for a schedule
    other than ``default`` (a plugin's one ``schedule:`` keeps the pair it always had)."""
    if schedule_id is None or schedule_id == _DEFAULT_SCHEDULE:
        return command
    return f"{command}{SUBJECT_SEPARATOR}{schedule_id}"


def closed(plugin: str, command: str) -> Breaker:
    return Breaker(plugin=plugin, command=command)


def admit(breaker: Breaker, *, now: datetime, policy: BreakerPolicy) -> tuple[bool, Breaker]:
    """May the scheduler enqueue a job for this pair now? Returns the new breaker too."""
    if breaker.status is BreakerStatus.CLOSED:
        return True, breaker
    if breaker.status is BreakerStatus.OPEN:
        assert breaker.opened_at is not None
        if now >= breaker.opened_at + policy.reset_after:
            return True, attrs.evolve(breaker, status=BreakerStatus.HALF_OPEN, probe_at=now)
        return False, breaker
    # half-open: one probe at a time, unless the probe got lost
    assert breaker.probe_at is not None
    if now >= breaker.probe_at + policy.reset_after:
        return True, attrs.evolve(breaker, probe_at=now)
    return False, breaker


def record_success(breaker: Breaker) -> Breaker:
    return closed(breaker.plugin, breaker.command)


def record_failure(breaker: Breaker, *, now: datetime, policy: BreakerPolicy) -> Breaker:
    failures = breaker.failures + 1
    if breaker.status is BreakerStatus.HALF_OPEN:
        return attrs.evolve(
            breaker, status=BreakerStatus.OPEN, failures=failures, opened_at=now, probe_at=None
        )
    if breaker.status is BreakerStatus.OPEN:
        return attrs.evolve(breaker, failures=failures)
    if failures >= policy.threshold:
        return attrs.evolve(breaker, status=BreakerStatus.OPEN, failures=failures, opened_at=now)
    return attrs.evolve(breaker, failures=failures)


def reset(breaker: Breaker) -> Breaker:
    """The operator's ``ductile reset``."""
    return closed(breaker.plugin, breaker.command)


def reopens_at(breaker: Breaker, policy: BreakerPolicy) -> datetime | None:
    """When the next probe may go, for display; None when closed."""
    if breaker.status is BreakerStatus.OPEN and breaker.opened_at is not None:
        return breaker.opened_at + policy.reset_after
    if breaker.status is BreakerStatus.HALF_OPEN and breaker.probe_at is not None:
        return breaker.probe_at + policy.reset_after
    return None
