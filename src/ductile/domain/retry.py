"""Retry and backoff (D3).

Attempt *n* failed retryably and *n < max_attempts*: the job goes back to the
queue at ``now + base * 2**(n-1) + draw * base`` with ``draw`` in [0, 1).
The exponential part is capped at :data:`MAX_BACKOFF` so a large
``max_attempts`` never waits for months (or overflows).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

EX_CONFIG = 78
DEFAULT_BACKOFF_BASE = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=24)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    backoff_base: timedelta = DEFAULT_BACKOFF_BASE


def _check_draw(draw: float) -> None:
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"a random draw must be in [0, 1), got {draw!r}")


def backoff_delay(attempt: int, base: timedelta, draw: float) -> timedelta:
    """How long to wait after attempt ``attempt`` (1-based) failed."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    _check_draw(draw)
    exponential = MAX_BACKOFF
    if attempt - 1 < 40:  # 2**40 * 1 µs already exceeds the cap
        exponential = min(base * (2 ** (attempt - 1)), MAX_BACKOFF)
    return exponential + base * draw


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
