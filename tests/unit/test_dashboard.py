"""The dashboard's pure parts: sessions, the sign-in redirect, durations, DST marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.app.api.errors import ApiError
from ductile.app.ui import _next, schema_form
from ductile.app.ui import session as sess
from ductile.app.ui.pages import dst_changes
from ductile.app.ui.render import clip, relative, span
from ductile.domain.config import ApiToken
from ductile.domain.scopes import parse_scope

ADMIN = ApiToken(name="admin", scopes=(parse_scope("*"),), secret=b"s3cret-token")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_while_used_and_ends_when_idle() -> None:
    clock = Clock()
    sessions = sess.Sessions(idle=60.0, clock=clock)
    s = sessions.open(ADMIN)
    clock.now += 59
    assert sessions.find(s.id, (ADMIN,)) is s
    clock.now += 59  # idle measured from the last request
    assert sessions.find(s.id, (ADMIN,)) is s
    clock.now += 61
    assert sessions.find(s.id, (ADMIN,)) is None
    assert len(sessions) == 0


def test_a_session_ends_when_its_token_changes_or_goes() -> None:
    sessions = sess.Sessions()
    s = sessions.open(ADMIN)
    rotated = ApiToken(name="admin", scopes=ADMIN.scopes, secret=b"another-secret")
    assert sessions.find(s.id, (rotated,)) is None
    assert sessions.find(s.id, (ADMIN,)) is None  # gone for good
    assert sessions.find(None, (ADMIN,)) is None
    assert sessions.find("made-up", (ADMIN,)) is None


def test_sessions_are_capped_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sess, "MAX_SESSIONS", 3)
    sessions = sess.Sessions()
    first, second = sessions.open(ADMIN), sessions.open(ADMIN)
    sessions.open(ADMIN)
    assert sessions.find(first.id, (ADMIN,)) is first  # used: now the most recent
    sessions.open(ADMIN)
    assert sessions.find(second.id, (ADMIN,)) is None
    assert sessions.find(first.id, (ADMIN,)) is first


def test_csrf_is_compared_whole() -> None:
    s = sess.Sessions().open(ADMIN)
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None)
    assert not s.csrf_ok("")
    assert not s.csrf_ok(s.csrf[:-1])
    assert not s.csrf_ok("é" + s.csrf)


def test_sign_in_only_returns_to_a_dashboard_path() -> None:
    assert _next("/ui/jobs?status=dead") == "/ui/jobs?status=dead"
    for hostile in ("https://evil.example/", "//evil.example/ui/", "/ui\\..\\x", "/metrics", None, ""):
        assert _next(hostile) == "/ui/"


@given(st.floats(min_value=-1e8, max_value=1e8, allow_nan=False))
def test_span_is_short_and_never_signed(seconds: float) -> None:
    text = span(seconds)
    assert not text.startswith("-")
    assert len(text) <= 9


def test_relative_says_which_way() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert relative("2026-01-01T00:02:05.000Z", now) == "in 2m 05s"
    assert relative("2025-12-31T22:00:00.000Z", now) == "2h 00m ago"
    assert relative(None, now) == "-"


@given(st.text(max_size=300), st.integers(min_value=1, max_value=100))
def test_clip_keeps_the_tail(text: str, cap: int) -> None:
    clipped = clip(text, cap)
    assert len(clipped) == min(len(text), cap)
    assert text.endswith(clipped)


def test_dst_changes_mark_the_hour_a_zone_moves() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, tzinfo=UTC)
    marks = dst_changes({"Europe/Berlin": berlin, "UTC": ZoneInfo("UTC")}, start, start + timedelta(days=2))
    assert [(m["zone"], m["at"]) for m in marks] == [("Europe/Berlin", datetime(2026, 3, 29, 1, tzinfo=UTC))]
    assert 0 < marks[0]["x"] < 1
    assert dst_changes({"Europe/Berlin": berlin}, start + timedelta(days=2), start + timedelta(days=9)) == []


def test_ui_is_on_by_default_and_can_be_switched_off(tmp_path: Path) -> None:
    from ductile.adapters.config import parse_config

    (tmp_path / "plugins").mkdir()
    base = "plugins_dir: ./plugins\n"
    where = {"source": str(tmp_path / "d.yaml"), "base_dir": str(tmp_path), "env": {}, "local_tz": UTC}
    assert parse_config(base, **where).ui_enabled is True  # type: ignore[arg-type]
    off = parse_config(base + "ui: {enabled: false}\n", **where)  # type: ignore[arg-type]
    assert off.ui_enabled is False


def test_a_flat_object_schema_becomes_fields_and_anything_else_a_json_box() -> None:
    schema = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "limit": {"type": "integer"},
            "ratio": {"type": "number"},
            "fresh": {"type": "boolean"},
            "mode": {"enum": ["a", "b"]},
        },
    }
    fields = schema_form.fields(schema)
    assert fields is not None
    assert [(f["name"], f["type"], f["required"]) for f in fields] == [
        ("url", "string", True), ("limit", "integer", False), ("ratio", "number", False),
        ("fresh", "boolean", False), ("mode", "string", False),
    ]  # fmt: skip
    nested = {"type": "object", "properties": {"where": {"type": "object"}}}
    assert schema_form.fields(nested) is None
    assert schema_form.fields(None) is None
    assert schema_form.fields({"type": "array"}) is None


@given(
    st.text(min_size=1, max_size=20),
    st.one_of(st.none(), st.integers(min_value=-(10**9), max_value=10**9)),
    st.booleans(),
)
def test_the_form_gives_back_the_payload_it_was_filled_with(url: str, limit: int | None, fresh: bool) -> None:
    spec = [
        {"name": "url", "type": "string", "required": True},
        {"name": "limit", "type": "integer", "required": False},
        {"name": "fresh", "type": "boolean", "required": False},
    ]
    form = {"field.url": url, "field.limit": "" if limit is None else str(limit)}
    if fresh:
        form["field.fresh"] = "on"
    expected: dict[str, object] = {"url": url, "fresh": fresh}
    if limit is not None:
        expected["limit"] = limit
    assert schema_form.payload(form, spec) == expected


def test_a_field_that_is_not_a_number_is_refused_naming_it() -> None:
    spec = [{"name": "limit", "type": "integer", "required": True}]
    with pytest.raises(ApiError) as refused:
        schema_form.payload({"field.limit": "lots"}, spec)
    assert refused.value.status == 422
    assert refused.value.detail == "limit: expected a whole number"
