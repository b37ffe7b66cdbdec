"""Retry and backoff (D3).

Attempt *n* failed retryably and *n < max_attempts*: the job goes back to the
queue at ``now + base * 2**(n-1) + draw * base`` with ``draw`` in [0, 1).
The exponential part is capped at :data:`MAX_BACKOFF` so a large
``max_attempts`` never waits for months (or overflows).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from ductile.domain.draw import check_draw

EX_CONFIG = 78
DEFAULT_BACKOFF_BASE = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=24)
_MICROSECOND = timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    backoff_base: timedelta = DEFAULT_BACKOFF_BASE


def backoff_delay(attempt: int, base: timedelta, draw: float) -> timedelta:
    """How long to wait after attempt ``attempt`` (1-based) failed."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    if base < timedelta(0):
        raise ValueError(f"the backoff base must not be negative, got {base}")
    check_draw(draw)
    if not base:
        return timedelta(0)
    # Compute in integer microseconds: base * 2**(n-1) as a timedelta
    # overflows long before n reaches 40 when base is an hour or more.
    cap_us = MAX_BACKOFF // _MICROSECOND
    if attempt - 1 >= cap_us.bit_length():
        exponential = MAX_BACKOFF  # 2**(n-1) µs alone exceeds the cap
    else:
        exponential = timedelta(microseconds=min((base // _MICROSECOND) << (attempt - 1), cap_us))
    # timedelta * float rounds to the microsecond; a draw just under 1 must
    # still stay under ``base``.
    return exponential + min(base * draw, base - _MICROSECOND)


def max_backoff(base: timedelta) -> timedelta:
    """The longest delay :func:`backoff_delay` can return for ``base``."""
    return MAX_BACKOFF + base


def is_retryable(*, exit_code: int | None, response_retry: bool | None) -> bool:
    """Exit 78 or a response saying ``"retry": false`` stop retries; all else retries."""
    if exit_code == EX_CONFIG:
        return False
    return response_retry is not False


@attrs.frozen
class RetryDecision:
    requeue: bool
    next_retry_at: datetime | None


def decide_retry(
    *, attempt: int, max_attempts: int, retryable: bool, now: datetime, base: timedelta, draw: float
) -> RetryDecision:
    """Re-queue with a backoff, or give up."""
    if retryable and attempt < max_attempts:
        return RetryDecision(True, now + backoff_delay(attempt, base, draw))
    return RetryDecision(False, None)
