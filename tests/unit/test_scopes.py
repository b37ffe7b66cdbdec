"""Token scopes (``ductile.domain.scopes``): parsing, and what a set of scopes allows.

The rules: ``*`` allows everything; a scope allows only its own area; ``rw``
implies ``ro`` and never the reverse; a narrowed plugin scope allows only its
plugin. Checked on every combination the grammar produces (hypothesis).
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.scopes import (
    ACCESSES,
    EVERYTHING,
    Access,
    Area,
    Need,
    Scope,
    ScopeError,
    allows,
    grants,
    parse_scope,
)

plugins = st.sampled_from(["feeds", "notify", "a.b-c_d"])
scopes = st.one_of(
    st.just(EVERYTHING),
    st.sampled_from([(a, x) for a, xs in ACCESSES.items() for x in xs]).map(lambda p: Scope(p[0], p[1])),
    st.tuples(st.sampled_from(list(Access)), plugins).map(lambda p: Scope(Area.PLUGIN, p[0], p[1])),
)
needs = st.builds(Need, st.sampled_from(list(Area)), st.sampled_from(list(Access)), st.none() | plugins)


@given(scopes)
def test_a_scope_reads_back_from_its_text(scope: Scope) -> None:
    assert parse_scope(str(scope)) == scope


@given(needs)
def test_everything_allows_every_need(need: Need) -> None:
    assert grants(EVERYTHING, need)


@given(scopes, needs)
def test_rw_implies_ro_and_ro_never_implies_rw(scope: Scope, need: Need) -> None:
    if grants(scope, need) and need.access is Access.RW:
        assert grants(scope, Need(need.area, Access.RO, need.plugin))
    if scope.area is not None and scope.access is Access.RO:
        assert not grants(scope, Need(need.area, Access.RW, need.plugin))


@given(scopes, needs)
def test_a_scope_allows_only_its_own_area(scope: Scope, need: Need) -> None:
    if scope.area is not None and scope.area is not need.area:
        assert not grants(scope, need)


@given(st.sampled_from(list(Access)), plugins, needs)
def test_a_narrowed_scope_allows_its_plugin_only(access: Access, plugin: str, need: Need) -> None:
    narrowed = Scope(Area.PLUGIN, access, plugin)
    if grants(narrowed, need):
        assert need.plugin == plugin
    assert grants(narrowed, Need(Area.PLUGIN, Access.RO, plugin))


@given(st.lists(scopes, max_size=4), needs)
def test_a_set_allows_what_one_of_its_scopes_grants(granted: list[Scope], need: Need) -> None:
    assert allows(granted, need) == any(grants(s, need) for s in granted)


def test_the_issues_examples() -> None:
    phone = [parse_scope("plugin:rw")]
    assert allows(phone, Need(Area.PLUGIN, Access.RO, "feeds"))
    assert not allows(phone, Need(Area.JOBS, Access.RO))
    feeds = [parse_scope("plugin:rw:feeds")]
    assert allows(feeds, Need(Area.PLUGIN, Access.RW, "feeds"))
    assert not allows(feeds, Need(Area.PLUGIN, Access.RW, "other"))
    assert not allows(feeds, Need(Area.PLUGIN, Access.RO))  # GET /plugins: every plugin


@pytest.mark.parametrize(
    "text", ["", "plugin", "plugin:admin", "events:rw", "system:ro", "jobs:ro:feeds", "plugin:rw:../x", "**"]
)
def test_bad_scopes_are_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


@given(st.text(max_size=30))
def test_parsing_never_raises_anything_but_a_scope_error(text: str) -> None:
    with contextlib.suppress(ScopeError):
        parse_scope(text)
