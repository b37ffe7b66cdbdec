"""Retry and backoff (D3): base * 2^(n-1) + draw * base, capped; who is retryable."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.retry import (
    DEFAULT_BACKOFF_BASE,
    EX_CONFIG,
    MAX_BACKOFF,
    RetryDecision,
    RetryPolicy,
    backoff_delay,
    decide_retry,
    is_retryable,
    max_backoff,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)

draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
#: Bases from one microsecond to ten years (the longest duration config accepts).
bases = st.integers(1, timedelta(days=3650) // US).map(lambda n: timedelta(microseconds=n))
attempts = st.integers(1, 200)


def expected_exponential(attempt: int, base: timedelta) -> timedelta:
    """The capped exponential part, computed in integers so it cannot overflow."""
    return timedelta(microseconds=min((base // US) * 2 ** (attempt - 1), MAX_BACKOFF // US))


def test_defaults() -> None:
    assert timedelta(seconds=30) == DEFAULT_BACKOFF_BASE
    assert RetryPolicy() == RetryPolicy(max_attempts=4, backoff_base=timedelta(seconds=30))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        (1, 0.0, timedelta(seconds=30)),
        (2, 0.0, timedelta(minutes=1)),
        (3, 0.0, timedelta(minutes=2)),
        (4, 0.5, timedelta(minutes=4, seconds=15)),
        (1, 0.25, timedelta(seconds=37.5)),
    ],
)
def test_spec_examples_with_default_base(attempt: int, draw: float, expected: timedelta) -> None:
    assert backoff_delay(attempt, DEFAULT_BACKOFF_BASE, draw) == expected


def test_exponential_part_is_capped() -> None:
    assert backoff_delay(50, timedelta(seconds=30), 0.0) == MAX_BACKOFF
    assert backoff_delay(10**9, timedelta(seconds=30), 0.0) == MAX_BACKOFF
    assert backoff_delay(12, timedelta(seconds=30), 0.0) == timedelta(seconds=30 * 2**11)
    assert backoff_delay(13, timedelta(seconds=30), 0.5) == MAX_BACKOFF + timedelta(seconds=15)


@pytest.mark.parametrize("base", [timedelta(hours=1), timedelta(days=1), timedelta(days=3650)])
@pytest.mark.parametrize("attempt", [30, 31, 39, 40, 41, 100])
def test_large_base_and_attempt_do_not_overflow(base: timedelta, attempt: int) -> None:
    # Regression: base=1h, attempt=40 used to raise OverflowError (1h * 2**39 > timedelta.max).
    assert backoff_delay(attempt, base, 0.0) == MAX_BACKOFF


def test_draw_just_below_one_stays_below_base() -> None:
    # Regression: 30s * 0.9999999999999999 rounded up to a whole 30s.
    delay = backoff_delay(3, timedelta(seconds=30), math.nextafter(1.0, 0.0))
    assert delay == timedelta(minutes=2) + timedelta(seconds=30) - US


@settings(max_examples=300, deadline=None)
@given(attempt=attempts, base=bases, draw=draws)
def test_delay_is_within_exponential_and_exponential_plus_base(
    attempt: int, base: timedelta, draw: float
) -> None:
    exp = expected_exponential(attempt, base)
    delay = backoff_delay(attempt, base, draw)
    assert exp <= delay < exp + base
    assert delay < max_backoff(base)


@settings(max_examples=300, deadline=None)
@given(attempt=attempts, base=bases, draw=draws)
def test_delay_is_monotone_in_attempt_for_a_fixed_draw(attempt: int, base: timedelta, draw: float) -> None:
    assert backoff_delay(attempt, base, draw) <= backoff_delay(attempt + 1, base, draw)


@settings(max_examples=100, deadline=None)
@given(attempt=st.integers(1, 10**18), base=bases, draw=draws)
def test_huge_attempts_never_overflow(attempt: int, base: timedelta, draw: float) -> None:
    delay = backoff_delay(attempt, base, draw)
    assert timedelta(0) < delay < MAX_BACKOFF + base


@settings(max_examples=100, deadline=None)
@given(attempt=attempts, base=bases, d1=draws, d2=draws)
def test_delay_is_monotone_in_draw(attempt: int, base: timedelta, d1: float, d2: float) -> None:
    lo, hi = sorted((d1, d2))
    assert backoff_delay(attempt, base, lo) <= backoff_delay(attempt, base, hi)


@pytest.mark.parametrize("draw", [-0.1, 1.0, 1.5, math.nan, math.inf, -math.inf])
def test_draw_outside_unit_interval_raises(draw: float) -> None:
    with pytest.raises(ValueError, match=r"draw must be in \[0, 1\)"):
        backoff_delay(1, DEFAULT_BACKOFF_BASE, draw)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempts count from 1"):
        backoff_delay(attempt, DEFAULT_BACKOFF_BASE, 0.0)


def test_negative_base_is_refused_and_zero_base_means_no_wait() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        backoff_delay(1, timedelta(seconds=-1), 0.0)
    assert backoff_delay(1, timedelta(0), 0.5) == timedelta(0)
    assert backoff_delay(100, timedelta(0), 0.5) == timedelta(0)


# --- is_retryable -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "response_retry", "expected"),
    [
        (EX_CONFIG, None, False),
        (EX_CONFIG, True, False),  # exit 78 wins whatever the body says
        (EX_CONFIG, False, False),
        (0, False, False),
        (1, False, False),
        (None, False, False),
        (0, True, True),
        (1, None, True),
        (None, None, True),
        (2, True, True),
        (137, None, True),
        (-9, None, True),
        (77, None, True),
        (79, None, True),
    ],
)
def test_is_retryable(exit_code: int | None, response_retry: bool | None, expected: bool) -> None:
    assert is_retryable(exit_code=exit_code, response_retry=response_retry) is expected


def test_ex_config_is_78() -> None:
    assert EX_CONFIG == 78


@settings(max_examples=200, deadline=None)
@given(
    exit_code=st.one_of(st.none(), st.integers(-255, 255)),
    response_retry=st.sampled_from([None, True, False]),
)
def test_only_78_and_retry_false_stop_retries(exit_code: int | None, response_retry: bool | None) -> None:
    expected = exit_code != 78 and response_retry is not False
    assert is_retryable(exit_code=exit_code, response_retry=response_retry) is expected


# --- decide_retry -------------------------------------------------------------


def test_decide_retry_requeues_with_backoff_while_attempts_remain() -> None:
    decision = decide_retry(
        attempt=2, max_attempts=4, retryable=True, now=NOW, base=timedelta(seconds=30), draw=0.5
    )
    assert decision == RetryDecision(True, NOW + timedelta(seconds=75))


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "retryable"),
    [(4, 4, True), (5, 4, True), (1, 1, True), (1, 4, False), (3, 4, False)],
)
def test_decide_retry_gives_up(attempt: int, max_attempts: int, retryable: bool) -> None:
    decision = decide_retry(
        attempt=attempt, max_attempts=max_attempts, retryable=retryable, now=NOW, base=timedelta(1), draw=0
    )
    assert decision == RetryDecision(False, None)


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 50),
    max_attempts=st.integers(1, 50),
    retryable=st.booleans(),
    base=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    draw=draws,
)
def test_decide_retry_property(
    attempt: int, max_attempts: int, retryable: bool, base: timedelta, draw: float
) -> None:
    decision = decide_retry(
        attempt=attempt, max_attempts=max_attempts, retryable=retryable, now=NOW, base=base, draw=draw
    )
    if retryable and attempt < max_attempts:
        assert decision.requeue
        assert decision.next_retry_at == NOW + backoff_delay(attempt, base, draw)
        assert decision.next_retry_at > NOW
    else:
        assert decision == RetryDecision(False, None)
