"""The ``input_schema`` check: examples for each keyword, and properties over any JSON."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.payload_schema import MAX_PROBLEMS, json_type_of, problems

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
TYPE_NAMES = ("null", "boolean", "integer", "number", "string", "object", "array")


@given(JSON)
def test_the_empty_schema_accepts_anything(value: Any) -> None:
    assert problems(value, {}) == []


@given(JSON)
def test_a_value_fits_its_own_type_and_no_unrelated_one(value: Any) -> None:
    own = json_type_of(value)
    assert problems(value, {"type": own}) == []
    related = {own, "number"} if own == "integer" else {own}
    if own == "number" and float(value).is_integer():
        related.add("integer")  # 2.0 is an integer to JSON Schema
    for other in set(TYPE_NAMES) - related:
        assert problems(value, {"type": other}), (value, other)


@given(JSON, st.dictionaries(st.sampled_from(["type", "enum", "properties", "items", "required", "minimum",
                                              "maxLength", "pattern", "anyOf", "additionalProperties"]),
                             JSON, max_size=4))  # fmt: skip
def test_any_schema_shaped_mapping_gives_a_bounded_list_of_text_and_never_raises(
    value: Any, schema: dict[str, Any]
) -> None:
    found = problems(value, schema)
    assert len(found) <= MAX_PROBLEMS
    assert all(isinstance(p, str) and p.startswith("payload") for p in found)


@given(st.lists(st.integers(), min_size=MAX_PROBLEMS + 1, max_size=50))
def test_a_long_bad_list_reports_at_most_the_cap(items: list[int]) -> None:
    assert len(problems(items, {"type": "array", "items": {"type": "string"}})) == MAX_PROBLEMS


SCHEMA = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "pattern": "^https?://", "maxLength": 30},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "ratio": {"type": "number", "exclusiveMaximum": 1},
    },
}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"url": "https://a"}, []),
        ({"url": "https://a", "limit": 5, "mode": "fast", "tags": ["x"], "ratio": 0.5}, []),
        ({}, ["payload.url: is required"]),
        ({"url": 3}, ["payload.url: must be string, not integer"]),
        ({"url": "ftp://a"}, ["payload.url: does not match the pattern '^https?://'"]),
        ({"url": "https://" + "a" * 30}, ["payload.url: has 38 characters, over the maxLength 30"]),
        ({"url": "https://a", "limit": 0}, ["payload.limit: 0, under the minimum 1"]),
        ({"url": "https://a", "limit": True}, ["payload.limit: must be integer, not boolean"]),
        ({"url": "https://a", "mode": "medium"}, ["payload.mode: 'medium' is not one of ['fast', 'slow']"]),
        ({"url": "https://a", "tags": ["a", 2]}, ["payload.tags[1]: must be string, not integer"]),
        ({"url": "https://a", "tags": ["a", "b", "c"]}, ["payload.tags: has 3 items, over the maxItems 2"]),
        ({"url": "https://a", "ratio": 1}, ["payload.ratio: 1 must be less than 1"]),
        (
            {"url": "https://a", "extra": 1},
            ["payload.extra: is not allowed here (known: limit, mode, ratio, tags, url)"],
        ),
    ],
)
def test_each_keyword_names_the_path_of_what_breaks_it(payload: dict[str, Any], expected: list[str]) -> None:
    assert problems(payload, SCHEMA) == expected


def test_any_of_and_one_of() -> None:
    either = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert problems("a", either) == []
    assert problems(1.5, either) == ["payload: must match at least one of the 2 schemas of anyOf"]
    exactly = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    assert problems(1.5, exactly) == []
    assert problems(2, exactly) == ["payload: must match exactly one of the 2 schemas of oneOf"]


def test_a_broken_pattern_is_not_a_crash() -> None:
    assert problems("x", {"type": "string", "pattern": "("}) == []


@pytest.mark.parametrize("wanted", [False, 3, None, {"a": 1}])
def test_a_type_that_names_no_type_is_not_checked(wanted: object) -> None:
    """Found by the property above: ``{"type": false}`` raised TypeError (not iterable)."""
    assert problems({"x": 1}, {"type": wanted}) == []
