"""Protocol v2 beside v1: the request each protocol gets, and what v2 reads from a response.

A v1 request must stay byte for byte what it always was; a v2 request adds
``payload`` and ``context``. Both accept every log level text; v2 reads
``result`` and copies it into emitted events.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.errors import ProtocolError
from ductile.domain.protocol import (
    LOG_LEVELS,
    PROTOCOL_V1,
    PROTOCOL_V2,
    EmittedEvent,
    LogLine,
    build_request,
    parse_response,
)

DEADLINE = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _request(protocol: int, command: str = "poll", **extra: Any) -> dict[str, Any]:
    raw = build_request(
        job_id="j1",
        command=command,
        config={"c": 1},
        state={"s": 2},
        deadline_at=DEADLINE,
        protocol=protocol,
        **extra,
    )
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


# --- the request ----------------------------------------------------------------------


def test_a_v1_request_is_byte_for_byte_the_old_one_whatever_v2_fields_are_given() -> None:
    old = (
        b'{"protocol":1,"job_id":"j1","command":"poll","config":{"c":1},"state":{"s":2},'
        b'"deadline_at":"2026-11-23T07:30:00Z"}'
    )
    given_v2_fields = build_request(
        job_id="j1",
        command="poll",
        config={"c": 1},
        state={"s": 2},
        deadline_at=DEADLINE,
        payload={"scope": "daily"},
        context={"ductile_plugin": "p"},
    )
    assert given_v2_fields == old


@settings(max_examples=100, deadline=None)
@given(
    command=st.sampled_from(["poll", "handle", "health", "init", "sync"]),
    payload=st.dictionaries(st.text(max_size=5), _JSON, max_size=3),
    event=st.dictionaries(st.text(max_size=5), _JSON, max_size=3),
)
def test_v1_requests_never_carry_payload_or_context(
    command: str, payload: dict[str, Any], event: dict[str, Any]
) -> None:
    body = _request(PROTOCOL_V1, command, payload=payload, context={"ductile_plugin": "x"}, event=event)
    expected = ["protocol", "job_id", "command", "config", "state"]
    expected += ["event"] if command == "handle" else []
    assert list(body) == [*expected, "deadline_at"]


def test_a_v2_poll_gets_payload_and_context_in_order() -> None:
    body = _request(PROTOCOL_V2, payload={"scope": "daily"}, context={"ductile_plugin": "feeds"})
    assert body == {
        "protocol": 2,
        "job_id": "j1",
        "command": "poll",
        "config": {"c": 1},
        "state": {"s": 2},
        "payload": {"scope": "daily"},
        "context": {"ductile_plugin": "feeds"},
        "deadline_at": "2026-11-23T07:30:00Z",
    }
    assert list(body) == list(body.keys())  # order as written above
    assert list(body)[5:7] == ["payload", "context"]


def test_a_v2_request_leaves_an_empty_payload_out_but_always_sends_context() -> None:
    body = _request(PROTOCOL_V2, payload={})
    assert "payload" not in body
    assert body["context"] == {}


def test_a_v2_handle_gets_the_event_and_no_payload() -> None:
    event = {"type": "t", "payload": {"a": 1}, "source": "up"}
    body = _request(
        PROTOCOL_V2, "handle", event=event, payload=event, context={"ductile_upstream_plugin": "up"}
    )
    assert body["event"] == event
    assert "payload" not in body
    assert list(body)[-3:] == ["context", "event", "deadline_at"]


def test_a_v2_custom_command_is_sent_as_named() -> None:
    assert _request(PROTOCOL_V2, "sync")["command"] == "sync"


# --- the response: log levels ----------------------------------------------------------


@pytest.mark.parametrize("protocol", [PROTOCOL_V1, PROTOCOL_V2])
@pytest.mark.parametrize("level", LOG_LEVELS)
def test_every_known_level_is_accepted_by_both_protocols(protocol: int, level: str) -> None:
    raw = json.dumps({"status": "ok", "logs": [{"level": level, "message": "m"}]}).encode()
    assert parse_response(raw, protocol=protocol).logs == (LogLine(level=level, message="m"),)  # type: ignore[arg-type]


def test_a_quiet_poll_logging_at_debug_is_a_success() -> None:
    # The shape of sqlite_change's quiet poll (design note, section 5): it must not fail the job.
    raw = b'{"status":"ok","result":"no changes","logs":[{"level":"debug","message":"no new rows"}]}'
    response = parse_response(raw, protocol=PROTOCOL_V2)
    assert response.ok
    assert response.logs == (LogLine(level="debug", message="no new rows"),)


@pytest.mark.parametrize(
    ("level", "stored"),
    [
        ("INFO", LogLine(level="info", message="m")),
        (" Warn ", LogLine(level="warn", message="m")),
        (None, LogLine(level="info", message="m")),
        ("trace", LogLine(level="info", message="[level 'trace'] m")),
        ("warning", LogLine(level="info", message="[level 'warning'] m")),
        ("", LogLine(level="info", message="[level ''] m")),
    ],
)
def test_other_level_texts_are_kept_as_info_with_the_original_noted(
    level: str | None, stored: LogLine
) -> None:
    raw = json.dumps({"status": "ok", "logs": [{"level": level, "message": "m"}]}).encode()
    for protocol in (PROTOCOL_V1, PROTOCOL_V2):
        assert parse_response(raw, protocol=protocol).logs == (stored,)


# --- the response: result and protocol echo ---------------------------------------------


def test_a_v2_result_is_kept_and_copied_into_events_that_have_none() -> None:
    raw = json.dumps(
        {
            "status": "ok",
            "result": "3 new items",
            "events": [
                {"type": "a", "payload": {"url": "u"}},
                {"type": "b", "payload": {"result": "mine"}},
                {"type": "c"},
            ],
        }
    ).encode()
    response = parse_response(raw, protocol=PROTOCOL_V2)
    assert response.result == "3 new items"
    assert response.events == (
        EmittedEvent(type="a", payload={"url": "u", "result": "3 new items"}),
        EmittedEvent(type="b", payload={"result": "mine"}),
        EmittedEvent(type="c", payload={"result": "3 new items"}),
    )


def test_a_v1_result_is_kept_but_never_changes_the_events() -> None:
    raw = json.dumps({"status": "ok", "result": "r", "events": [{"type": "a"}]}).encode()
    response = parse_response(raw, protocol=PROTOCOL_V1)
    assert response.result == "r"
    assert response.events == (EmittedEvent(type="a"),)


def test_a_v1_result_of_another_type_is_ignored_as_before() -> None:
    raw = json.dumps({"status": "ok", "result": {"n": 1}}).encode()
    assert parse_response(raw, protocol=PROTOCOL_V1).result is None


@pytest.mark.parametrize("value", [5, {"n": 1}, ["a"], True])
def test_a_v2_result_must_be_text(value: object) -> None:
    raw = json.dumps({"status": "ok", "result": value}).encode()
    with pytest.raises(ProtocolError, match="'result' must be a string") as info:
        parse_response(raw, protocol=PROTOCOL_V2)
    assert info.value.kind == "bad_field"


def test_a_v2_response_without_a_result_is_accepted() -> None:
    # Upstream requires one on success; ductile is looser here on purpose (docs/plugins.md).
    assert parse_response(b'{"status":"ok"}', protocol=PROTOCOL_V2).result is None


@pytest.mark.parametrize("echo", [1, 2, "2", None, [2]])
def test_v2_ignores_the_protocol_field(echo: object) -> None:
    raw = json.dumps({"status": "ok", "protocol": echo}).encode()
    assert parse_response(raw, protocol=PROTOCOL_V2).ok


def test_v1_still_refuses_a_response_speaking_protocol_2() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_response(b'{"status":"ok","protocol":2}', protocol=PROTOCOL_V1)
    assert info.value.kind == "protocol_mismatch"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_v2_parsing_never_raises_anything_but_a_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_response(raw, protocol=PROTOCOL_V2)
