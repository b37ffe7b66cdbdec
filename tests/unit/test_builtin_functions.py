"""Properties of the pure functions inside the built-in plugins (switch, folder_watch, fetch).

The built-ins are scripts, not modules ductile imports: each is loaded here
from its file, as the spawner would run it, and its functions are checked
with hypothesis. Their behaviour through the real spawner is in
``tests/integration/test_builtins*.py``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile import plugin
from ductile.adapters.plugin_dir.shipped import BUILTINS_DIR


def _load(name: str) -> ModuleType:
    path = os.path.join(BUILTINS_DIR, name, "run.py")
    spec = importlib.util.spec_from_file_location(f"ductile_builtin_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


switch = _load("switch")
folder_watch = _load("folder_watch")
fetch = _load("fetch")

digests = st.dictionaries(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), max_size=12)


@given(digests, digests)
def test_folder_changes_applied_to_before_give_after(before: dict[str, str], after: dict[str, str]) -> None:
    state: dict[str, Any] = dict(before)
    found = folder_watch.changes(before, after)
    for kind, rel, old, new in found:
        assert old == before.get(rel)
        assert new == after.get(rel)
        assert old != new
        if kind == "removed":
            del state[rel]
        else:
            assert (kind == "created") == (rel not in before)
            state[rel] = new
    assert state == after
    assert [rel for _, rel, _, _ in found] == sorted(
        rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)
    )


@given(digests)
def test_an_unchanged_folder_has_no_changes(listing: dict[str, str]) -> None:
    assert folder_watch.changes(listing, dict(listing)) == []


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=2), values, max_size=4), st.data())
def test_switch_lookup_finds_what_is_at_a_path_and_absent_otherwise(
    envelope: dict[str, Any], data: Any
) -> None:
    path = data.draw(st.lists(st.sampled_from(["a", "b", "ab", "0", "1"]), min_size=1, max_size=3))
    expected: Any = envelope
    for part in path:
        if isinstance(expected, dict) and part in expected:
            expected = expected[part]
        elif isinstance(expected, list) and part.isdigit() and int(part) < len(expected):
            expected = expected[int(part)]
        else:
            expected = switch.ABSENT
            break
    found = switch.lookup(".".join(path), envelope)
    if expected is switch.ABSENT:
        assert found is switch.ABSENT
    else:
        assert found == expected


@given(st.text(max_size=20), st.text(max_size=5))
def test_switch_kinds_agree_with_the_str_operations(subject: str, value: str) -> None:
    def case(kind: str) -> Any:
        return switch.Case(0, {"match": kind, "value": value, "emit": "t"})

    assert case("exact").matches(subject) == (subject == value)
    assert case("prefix").matches(subject) == subject.startswith(value)
    assert case("contains").matches(subject) == (value in subject)


@given(values)
def test_switch_compares_text_as_is_and_anything_else_as_json(value: Any) -> None:
    text = switch.as_text(value)
    assert text == (value if isinstance(value, str) else json.dumps(value, sort_keys=True))


@pytest.mark.parametrize("bad", ["(", "[a-", "*x", "(?P<n>a)(?P<n>b)"])
def test_switch_names_the_case_of_a_bad_regex(bad: str) -> None:
    with pytest.raises(plugin.ConfigError, match=r"cases\[3\]\.value is not a valid regex"):
        switch.Case(3, {"match": "regex", "value": bad, "emit": "t"})


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=400))
def test_fetch_reads_at_most_its_cap_and_knows_when_it_cut(body: bytes, cap: int) -> None:
    read, cut = fetch.read_capped(io.BytesIO(body), cap, float("inf"), "u")
    assert read == body[:cap]
    assert cut == (len(body) > cap)
