"""Durations and sizes as operators write them: round trips and clear refusals."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ductile.domain.errors import DuctileError, UnitError
from ductile.domain.quantities import (
    MAX_DURATION,
    MAX_SIZE,
    NAMED_INTERVALS,
    format_duration,
    format_size,
    parse_duration,
    parse_interval,
    parse_size,
)

MS = timedelta(milliseconds=1)
UNITS = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": MS,
}
ORDER = ["w", "d", "h", "m", "s", "ms"]

positive_ms_durations = st.integers(1, MAX_DURATION // MS).map(lambda n: timedelta(milliseconds=n))


# --- durations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s6ms", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5, milliseconds=6)),
        ("90m", timedelta(minutes=90)),
        ("  5m\t", timedelta(minutes=5)),
        ("0h30m", timedelta(minutes=30)),
        ("007s", timedelta(seconds=7)),
        ("3650d", MAX_DURATION),
        ("0" * 5000 + "1s", timedelta(seconds=1)),
    ],
)
def test_parse_duration_examples(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=7), "1w"),
        (timedelta(days=8, milliseconds=1), "1w1d1ms"),
        (timedelta(seconds=30), "30s"),
    ],
)
def test_format_duration_is_canonical(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@settings(max_examples=300, deadline=None)
@given(positive_ms_durations)
def test_duration_round_trip(d: timedelta) -> None:
    text = format_duration(d)
    assert parse_duration(text) == d
    # canonical: formatting the parsed value gives the same text back
    assert format_duration(parse_duration(text)) == text


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(ORDER), st.integers(0, 10_000), min_size=1),
)
def test_parse_duration_sums_units_written_largest_first(counts: dict[str, int]) -> None:
    text = "".join(f"{counts[u]}{u}" for u in ORDER if u in counts)
    total = sum((n * UNITS[u] for u, n in counts.items()), timedelta(0))
    assume(timedelta(0) < total <= MAX_DURATION)
    assert parse_duration(text) == total


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(ORDER), min_size=2, max_size=4).filter(
        lambda us: any(ORDER.index(a) >= ORDER.index(b) for a, b in itertools.pairwise(us))
    ),
    st.integers(1, 9),
)
def test_out_of_order_or_repeated_units_are_refused(units: list[str], n: int) -> None:
    text = "".join(f"{n}{u}" for u in units)
    with pytest.raises(UnitError, match="largest to smallest, once each"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("60", "needs a unit: write '60s' for seconds or '60m' for minutes"),
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("5m1h", "largest to smallest"),
        ("5m5m", "largest to smallest"),
        ("1s500ms1s", "largest to smallest"),
        ("0s", "must be longer than zero"),
        ("0h0m", "must be longer than zero"),
        ("-5m", "is not a duration"),
        ("+5m", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("5 m", "is not a duration"),
        ("1h 30m", "is not a duration"),
        ("5x", "is not a duration"),
        ("5M", "is not a duration"),
        ("h", "is not a duration"),
        ("abc", "is not a duration"),
        ("5m!", "is not a duration"),
        ("\u0663s", "is not a duration"),  # an Arabic-Indic digit is not an ASCII number
        ("\u00b2", "is not a duration"),  # superscript two
        ("3651d", "longer than ten years"),
        ("3650d1ms", "longer than ten years"),
        ("99999999999999999999d", "longer than ten years"),
        ("9" * 5000 + "s", "longer than ten years"),
        ("1" + "0" * 30 + "w", "longer than ten years"),
    ],
)
def test_parse_duration_refusals(text: str, message: str) -> None:
    with pytest.raises(UnitError, match=message) as info:
        parse_duration(text)
    assert isinstance(info.value, DuctileError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [5, 5.0, None, b"5m", timedelta(minutes=5), ["5m"]])
def test_parse_duration_refuses_non_text(value: object) -> None:
    with pytest.raises(UnitError, match=f"must be text.*not {type(value).__name__}"):
        parse_duration(value)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_parse_duration_any_text_gives_positive_bounded_value_or_unit_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except UnitError:
        return
    assert timedelta(0) < value <= MAX_DURATION


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (timedelta(0), "only positive"),
        (timedelta(seconds=-1), "only positive"),
        (timedelta(microseconds=1500), "finer than a millisecond"),
    ],
)
def test_format_duration_refusals(value: timedelta, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        format_duration(value)


# --- named intervals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hourly", timedelta(hours=1)),
        ("daily", timedelta(days=1)),
        ("weekly", timedelta(weeks=1)),
        ("monthly", timedelta(days=30)),
        (" Daily ", timedelta(days=1)),
        ("HOURLY", timedelta(hours=1)),
        ("6h", timedelta(hours=6)),
        ("15m", timedelta(minutes=15)),
    ],
)
def test_parse_interval(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


def test_named_intervals_are_the_documented_set() -> None:
    assert set(NAMED_INTERVALS) == {"hourly", "daily", "weekly", "monthly"}


@pytest.mark.parametrize("text", ["fortnightly", "60", "", "5m1h", "0s"])
def test_parse_interval_refusal_lists_the_names(text: str) -> None:
    with pytest.raises(UnitError, match=r"or one of: hourly, daily, weekly, monthly"):
        parse_interval(text)


def test_parse_interval_refuses_non_text() -> None:
    with pytest.raises(UnitError, match="must be text"):
        parse_interval(60)  # type: ignore[arg-type]


# --- sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512B", 512),
        ("64KB", 65_536),
        ("1MB", 1_048_576),
        ("10MB", 10 * 1_048_576),
        ("1GB", 1_073_741_824),
        ("64kb", 65_536),
        ("1mb", 1_048_576),
        ("1MiB", 1_048_576),
        ("1KiB", 1024),
        ("2GiB", 2 * 1024**3),
        ("1 MB", 1_048_576),
        (" 64KB ", 65_536),
        ("0" * 5000 + "1KB", 1024),
        ("8589934591GB", 8589934591 * 1024**3),
        (f"{MAX_SIZE}B", MAX_SIZE),
    ],
)
def test_parse_size_examples_are_binary(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1B"), (1023, "1023B"), (1024, "1KB"), (1536, "1536B"), (1_048_576, "1MB"), (3 * 1024**3, "3GB")],
)
def test_format_size_is_canonical(value: int, text: str) -> None:
    assert format_size(value) == text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(1, MAX_SIZE), st.integers(1, 2**20).map(lambda n: n * 1024)))
def test_size_round_trip(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("64", "needs a unit: B, KB, MB or GB"),
        ("", "is not a size"),
        ("   ", "is not a size"),
        ("MB", "is not a size"),
        ("1.5MB", "is not a size"),
        ("-1KB", "is not a size"),
        ("1MB2", "is not a size"),
        ("\u0663MB", "is not a size"),
        ("64XB", "unknown unit 'XB'"),
        ("1TB", "unknown unit 'TB'"),
        ("0KB", "must be larger than zero"),
        ("0B", "must be larger than zero"),
        ("8589934592GB", "too large"),
        ("9" * 5000 + "GB", "too large"),
    ],
)
def test_parse_size_refusals(text: str, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parse_size(text)


@pytest.mark.parametrize("value", [1024, 1.0, None, b"1MB"])
def test_parse_size_refuses_non_text(value: object) -> None:
    with pytest.raises(UnitError, match=f"must be text.*not {type(value).__name__}"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1])
def test_format_size_refuses_non_positive(value: int) -> None:
    with pytest.raises(UnitError, match="only positive"):
        format_size(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_parse_size_any_text_gives_positive_bounded_value_or_unit_error(text: str) -> None:
    try:
        value = parse_size(text)
    except UnitError:
        return
    assert 0 < value <= MAX_SIZE
