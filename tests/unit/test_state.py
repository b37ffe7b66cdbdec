"""Plugin state (D9): shallow merge and the 1 MiB cap on the compact UTF-8 JSON form."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.state import MAX_STATE_BYTES, MergeResult, merge_state, serialize_state, state_size

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
states = st.dictionaries(st.text(max_size=4), json_values, max_size=5)

#: ``{"k":""}`` is 8 bytes; the filler string makes up the rest.
ENVELOPE = len(b'{"k":""}')


def test_limit_is_one_mebibyte() -> None:
    assert MAX_STATE_BYTES == 1_048_576


def test_top_level_keys_are_replaced_and_nested_objects_are_not_merged() -> None:
    current = {"token": {"access": "a1", "refresh": "r1"}, "cursor": 10, "keep": [1, 2]}
    result = merge_state(current, {"token": {"access": "a2"}, "cursor": 11, "new": True})
    assert result.ok
    assert result.rejected is None
    assert result.state == {"token": {"access": "a2"}, "cursor": 11, "keep": [1, 2], "new": True}


def test_null_value_replaces_rather_than_deletes() -> None:
    result = merge_state({"a": 1}, {"a": None})
    assert result.state == {"a": None}


def test_empty_update_keeps_state() -> None:
    result = merge_state({"a": 1}, {})
    assert result == MergeResult({"a": 1}, len(b'{"a":1}'))


def test_inputs_are_not_mutated() -> None:
    current: dict[str, Any] = {"a": {"x": 1}}
    updates: dict[str, Any] = {"a": {"y": 2}, "b": 3}
    c0, u0 = copy.deepcopy(current), copy.deepcopy(updates)
    merge_state(current, updates)
    assert (current, updates) == (c0, u0)


def test_size_is_compact_utf8_bytes() -> None:
    state = {"name": "é", "list": [1, 2]}
    assert serialize_state(state) == '{"name":"é","list":[1,2]}'.encode()
    assert state_size(state) == len('{"name":"é","list":[1,2]}'.encode())
    assert state_size({"e": "é"}) == len(b'{"e":""}') + 2  # two bytes in UTF-8, not \\u00e9


def test_exactly_at_the_default_limit_is_accepted() -> None:
    updates = {"k": "x" * (MAX_STATE_BYTES - ENVELOPE)}
    result = merge_state({}, updates)
    assert result.ok
    assert result.size == MAX_STATE_BYTES
    assert result.state == updates


def test_one_byte_over_the_default_limit_is_rejected_and_state_kept() -> None:
    current = {"cursor": 5}
    updates = {"k": "x" * (MAX_STATE_BYTES - ENVELOPE + 1)}
    result = merge_state(current, updates)
    assert not result.ok
    assert result.state is current
    assert result.state == {"cursor": 5}
    assert result.size == state_size(current)
    assert result.rejected is not None
    assert "1,048,576-byte limit" in result.rejected
    assert "update rejected" in result.rejected
    assert f"{state_size({**current, **updates}):,} bytes" in result.rejected


def test_limit_counts_bytes_not_characters() -> None:
    # 3 two-byte characters: 8 + 6 = 14 bytes, although only 11 characters
    assert merge_state({}, {"k": "ééé"}, limit=14).ok
    assert not merge_state({}, {"k": "ééé"}, limit=13).ok


def test_update_that_shrinks_an_oversized_state_is_accepted() -> None:
    current = {"big": "x" * 100}
    result = merge_state(current, {"big": ""}, limit=50)
    assert result.ok
    assert result.state == {"big": ""}


@settings(max_examples=150, deadline=None)
@given(current=states, updates=states, limit=st.integers(2, 400))
def test_merge_property(current: dict[str, Any], updates: dict[str, Any], limit: int) -> None:
    result = merge_state(current, updates, limit=limit)
    merged = {**current, **updates}
    merged_size = len(json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if merged_size <= limit:
        assert result.ok
        assert result.state == merged
        assert set(result.state) == set(current) | set(updates)
        for key, value in result.state.items():
            assert value == (updates[key] if key in updates else current[key])
        assert result.size == merged_size
    else:
        assert not result.ok
        assert result.state == current
        assert result.size == state_size(current)
    assert result.size == state_size(result.state)
