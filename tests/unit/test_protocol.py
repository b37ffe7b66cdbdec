"""Plugin protocol v1 (D7): the request we write, every bad response shape, and the key property.

The key property: for ANY byte string, ``parse_response`` returns a ``Response``
or raises ``ProtocolError`` -- never any other exception.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ductile.domain.errors import DuctileError, ProtocolError
from ductile.domain.protocol import (
    LOG_LEVELS,
    MAX_DEPTH,
    EmittedEvent,
    LogLine,
    Response,
    build_request,
    decode_json_object,
    iso_utc,
    parse_response,
)
from ductile.domain.state import serialize_state

DEADLINE = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)


def body(**fields: Any) -> bytes:
    return json.dumps({"status": "ok", **fields}).encode()


def kind_of(raw: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_response(raw)
    assert isinstance(info.value, DuctileError)
    assert str(info.value), "a protocol error needs a human message"
    return info.value.kind


# --- build_request ----------------------------------------------------------------


def test_handle_request_carries_the_event() -> None:
    event = {"type": "t", "payload": {"a": 1}}
    raw = build_request(
        job_id="j1", command="handle", config={"c": 1}, state={"s": 2}, deadline_at=DEADLINE, event=event
    )
    assert json.loads(raw) == {
        "protocol": 1,
        "job_id": "j1",
        "command": "handle",
        "config": {"c": 1},
        "state": {"s": 2},
        "event": event,
        "deadline_at": "2026-11-23T07:30:00Z",
    }


def test_handle_request_without_event_gets_an_empty_one() -> None:
    raw = build_request(job_id="j", command="handle", config={}, state={}, deadline_at=DEADLINE)
    assert json.loads(raw)["event"] == {}


@pytest.mark.parametrize("command", ["poll", "health", "init"])
def test_other_commands_get_no_event(command: str) -> None:
    raw = build_request(
        job_id="j", command=command, config={}, state={}, deadline_at=DEADLINE, event={"type": "x"}
    )
    decoded = json.loads(raw)
    assert "event" not in decoded
    assert decoded["command"] == command
    assert decoded["protocol"] == 1


def test_request_is_compact_utf8() -> None:
    raw = build_request(job_id="j", command="poll", config={"name": "Zoë"}, state={}, deadline_at=DEADLINE)
    assert b" " not in raw
    assert "Zoë".encode() in raw


def test_request_refuses_nan_rather_than_writing_invalid_json() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        build_request(job_id="j", command="poll", config={"x": float("nan")}, state={}, deadline_at=DEADLINE)


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (DEADLINE, "2026-11-23T07:30:00Z"),
        (DEADLINE.replace(microsecond=123_456), "2026-11-23T07:30:00.123Z"),
        (DEADLINE.replace(microsecond=999), "2026-11-23T07:30:00.000Z"),
        (datetime(2026, 11, 23, 8, 30, tzinfo=timezone(timedelta(hours=1))), "2026-11-23T07:30:00Z"),
        (
            datetime(2026, 11, 23, 2, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2026-11-23T07:30:00Z",
        ),
    ],
)
def test_deadline_is_iso_utc_with_z(at: datetime, text: str) -> None:
    assert iso_utc(at) == text
    raw = build_request(job_id="j", command="poll", config={}, state={}, deadline_at=at)
    assert json.loads(raw)["deadline_at"] == text


def aware_datetimes(*, since: datetime) -> st.SearchStrategy[datetime]:
    """Instants from ``since`` on, in UTC and in two zones either side of it (one off the hour)."""
    return st.datetimes(
        min_value=since,
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-8))]
        ),
    )


@settings(max_examples=200, deadline=None)
@given(aware_datetimes(since=datetime(1970, 1, 2)))
def test_iso_utc_reads_back_to_the_same_millisecond(at: datetime) -> None:
    text = iso_utc(at)
    assert text.endswith("Z")
    back = datetime.fromisoformat(text)
    truncated = at.astimezone(UTC).replace(microsecond=at.microsecond // 1000 * 1000)
    assert back == truncated
    assert back.utcoffset() == timedelta(0)


# --- parse_response: good shapes ------------------------------------------------------


def test_minimal_ok_response() -> None:
    assert parse_response(b'{"status": "ok"}') == Response(status="ok")
    response = parse_response(b'{"status": "ok"}')
    assert response.ok
    assert response.retry is True
    assert response.events == ()
    assert response.state_updates == {}
    assert response.logs == ()


def test_full_response() -> None:
    raw = body(
        status="error",
        error="token expired",
        retry=False,
        events=[
            {"type": "new_data", "payload": {"n": 1}, "dedupe_key": "d1"},
            {"type": "bare"},
        ],
        state_updates={"cursor": 5, "token": {"a": "b"}},
        logs=[{"level": "warn", "message": "slow"}, {"message": "default level"}],
        protocol=1,
    )
    assert parse_response(raw) == Response(
        status="error",
        error="token expired",
        retry=False,
        events=(
            EmittedEvent(type="new_data", payload={"n": 1}, dedupe_key="d1"),
            EmittedEvent(type="bare", payload={}, dedupe_key=None),
        ),
        state_updates={"cursor": 5, "token": {"a": "b"}},
        logs=(LogLine(level="warn", message="slow"), LogLine(level="info", message="default level")),
    )
    assert not parse_response(raw).ok


def test_null_optional_fields_are_absent() -> None:
    raw = body(error=None, retry=None, events=None, state_updates=None, logs=None, protocol=None)
    assert parse_response(raw) == Response(status="ok")
    event = body(events=[{"type": "t", "payload": None, "dedupe_key": None}])
    assert parse_response(event).events == (EmittedEvent(type="t"),)


def test_unknown_fields_are_ignored() -> None:
    raw = body(future_field={"x": [1, 2]}, another=3, events=[{"type": "t", "extra": True}])
    assert parse_response(raw) == Response(status="ok", events=(EmittedEvent(type="t"),))


def test_protocol_one_is_accepted() -> None:
    assert parse_response(body(protocol=1)) == Response(status="ok")


@pytest.mark.parametrize(
    "raw",
    [
        b'  \n\t{"status":"ok"}\r\n  ',
        b'{"status":"ok"}\n',
        b'{"status":"ok","status":"error"}'.replace(b"error", b"ok"),
        '{"status":"ok","error":"Zoë \u2603"}'.encode(),
        b'{"status":"ok","state_updates":{"k":"\\u00e9\\ud83d\\ude00"}}',  # a valid surrogate pair
        b'{"status":"ok","state_updates":{"big":' + b"9" * 4000 + b"}}",
    ],
)
def test_acceptable_variants(raw: bytes) -> None:
    assert parse_response(raw).status == "ok"


# --- parse_response: every bad shape and its kind -----------------------------------


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty"),
        (b"   \n\t\r ", "empty"),
        (b'{"status": "ok"', "not_json"),
        (b'{"status": "o', "not_json"),
        (b"{", "not_json"),
        (b"hello", "not_json"),
        (b"{'status': 'ok'}", "not_json"),
        (b'{"status":"ok",}', "not_json"),
        (b"\xef\xbb\xbf" + b'{"status":"ok"}', "not_json"),  # a BOM is not JSON whitespace
        (b'{"status":"ok"}{"status":"ok"}', "trailing_data"),
        (b'{"status":"ok"}\n{"status":"error"}', "trailing_data"),
        (b'{"status":"ok"} x', "trailing_data"),
        (b'{"status":"ok"}]', "trailing_data"),
        (b"[]", "not_object"),
        (b'[{"status":"ok"}]', "not_object"),
        (b'"ok"', "not_object"),
        (b"42", "not_object"),
        (b"-1.5e3", "not_object"),
        (b"null", "not_object"),
        (b"true", "not_object"),
        (b'{"status":"ok","x":"\xff"}', "encoding"),
        (b"\xff\xfe{}", "encoding"),
        (b'{"status":"ok","x":"\xc3"}', "encoding"),  # truncated multi-byte sequence
        (b'{"status":"ok","x":"\\ud800"}', "encoding"),
        (b'{"status":"ok","\\udfff":1}', "encoding"),
        (b'{"status":"ok","x":NaN}', "non_finite"),
        (b'{"status":"ok","x":Infinity}', "non_finite"),
        (b'{"status":"ok","x":-Infinity}', "non_finite"),
        (b'{"status":"ok","x":[1, NaN]}', "non_finite"),
        (b'{"status":"ok","x":1e400}', "non_finite"),
        (b'{"status":"ok","x":-1e400}', "non_finite"),
        (b'{"status":"ok","x":' + b"1" * 5000 + b"}", "not_json"),
    ],
)
def test_bad_documents(raw: bytes, kind: str) -> None:
    assert kind_of(raw) == kind


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 50, 2000, 100_000])
def test_deep_nesting_is_refused(depth: int) -> None:
    # depth counts the outer object, so this nests depth+1 levels
    raw = b'{"status":"ok","x":' + b"[" * depth + b"]" * depth + b"}"
    assert kind_of(raw) == "too_deep"


def test_deep_nesting_without_closing_is_refused() -> None:
    assert kind_of(b"[" * 100_000) in {"too_deep", "not_json"}
    assert kind_of(b'{"a":' * 100_000) in {"too_deep", "not_json"}


def test_nesting_up_to_the_limit_is_accepted() -> None:
    depth = MAX_DEPTH - 1  # the outer object is the first level
    raw = b'{"status":"ok","x":' + b"[" * depth + b"]" * depth + b"}"
    response = parse_response(raw)
    # what is accepted can be re-encoded, also wrapped into a child's request
    build_request(
        job_id="j",
        command="handle",
        config={},
        state={},
        deadline_at=DEADLINE,
        event={"payload": {"x": json.loads(raw)}},
    )
    assert response.ok


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"status": None}, "'status'"),
        ({"status": "OK"}, "'status'"),
        ({"status": "fail"}, "'status'"),
        ({"status": 1}, "'status'"),
        ({"status": ["ok"]}, "'status'"),
        ({"error": 5}, "'error' must be a string, not number"),
        ({"error": {"m": "x"}}, "'error' must be a string, not object"),
        ({"retry": "false"}, "'retry' must be true or false, not string"),
        ({"retry": 0}, "'retry' must be true or false, not number"),
        ({"retry": 1}, "'retry' must be true or false, not number"),
        ({"retry": []}, "'retry' must be true or false, not array"),
        ({"events": {}}, "'events' must be an array, not object"),
        ({"events": "x"}, "'events' must be an array, not string"),
        ({"events": [1]}, "'events[0]' must be an object, not number"),
        ({"events": [{"type": "ok"}, None]}, "'events[1]' must be an object, not null"),
        ({"events": [{"payload": {}}]}, "'events[0].type' must be a non-empty string"),
        ({"events": [{"type": ""}]}, "'events[0].type' must be a non-empty string"),
        ({"events": [{"type": 3}]}, "'events[0].type' must be a non-empty string"),
        ({"events": [{"type": "t", "payload": []}]}, "'events[0].payload' must be an object, not array"),
        ({"events": [{"type": "t", "payload": "p"}]}, "'events[0].payload' must be an object, not string"),
        ({"events": [{"type": "t", "dedupe_key": ""}]}, "'events[0].dedupe_key' must be a non-empty string"),
        ({"events": [{"type": "t", "dedupe_key": 7}]}, "'events[0].dedupe_key' must be a non-empty string"),
        ({"state_updates": []}, "'state_updates' must be an object, not array"),
        ({"state_updates": "x"}, "'state_updates' must be an object, not string"),
        ({"state_updates": True}, "'state_updates' must be an object, not boolean"),
        ({"logs": {}}, "'logs' must be an array, not object"),
        ({"logs": ["text"]}, "'logs[0]' must be an object, not string"),
        (
            {"logs": [{"level": 5, "message": "m"}]},
            "'logs[0].level' must be text (debug, info, warn or error)",
        ),
        ({"logs": [{"level": ["info"], "message": "m"}]}, "'logs[0].level' must be text"),
        ({"logs": [{"level": "info"}]}, "'logs[0].message' must be a string, not null"),
        ({"logs": [{"level": "info", "message": 5}]}, "'logs[0].message' must be a string, not number"),
    ],
)
def test_wrong_field_types(fields: dict[str, Any], needle: str) -> None:
    raw = json.dumps({"status": "ok", **fields}).encode()
    with pytest.raises(ProtocolError) as info:
        parse_response(raw)
    assert info.value.kind == "bad_field"
    assert needle in str(info.value)


def test_missing_status() -> None:
    assert kind_of(b'{"error": "x"}') == "bad_field"
    assert kind_of(b"{}") == "bad_field"


@pytest.mark.parametrize("version", [2, 0, -1, "1", True, False, 1.0, 1.5, [1], {"v": 1}])
def test_protocol_mismatch(version: object) -> None:
    raw = json.dumps({"status": "ok", "protocol": version}).encode()
    with pytest.raises(ProtocolError) as info:
        parse_response(raw)
    assert info.value.kind == "protocol_mismatch"
    assert "its manifest says protocol 1" in str(info.value)


def test_decode_json_object_names_what_it_reads() -> None:
    with pytest.raises(ProtocolError, match="webhook body is empty"):
        decode_json_object(b"", what="webhook body")
    assert decode_json_object(b'{"a": [1]}') == {"a": [1]}


# --- the key property: any bytes -> Response or ProtocolError ---------------------------


def parse_or_error(raw: bytes) -> Response | ProtocolError:
    try:
        return parse_response(raw)
    except ProtocolError as e:
        return e


def check_total(raw: bytes) -> None:
    """The property itself, plus: whatever is accepted is well-typed and re-encodable."""
    response = parse_or_error(raw)
    if isinstance(response, ProtocolError):
        assert response.kind in {
            "empty",
            "not_json",
            "encoding",
            "non_finite",
            "too_deep",
            "trailing_data",
            "not_object",
            "bad_field",
            "protocol_mismatch",
        }
        assert str(response)
        return
    assert isinstance(response, Response)
    assert response.status in ("ok", "error")
    assert response.error is None or isinstance(response.error, str)
    assert isinstance(response.retry, bool)
    assert isinstance(response.state_updates, dict)
    for event in response.events:
        assert isinstance(event.type, str)
        assert event.type
        assert isinstance(event.payload, dict)
        assert event.dedupe_key is None or (isinstance(event.dedupe_key, str) and event.dedupe_key)
    for line in response.logs:
        assert line.level in LOG_LEVELS
        assert isinstance(line.message, str)
    # settle stores these: they must serialize in the store's form without error
    serialize_state(response.state_updates)
    for event in response.events:
        serialize_state(event.payload)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_response_or_protocol_error(raw: bytes) -> None:
    check_total(raw)


JSON_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\n",
    '"status"',
    '"ok"',
    '"error"',
    '"retry"',
    '"events"',
    '"logs"',
    '"state_updates"',
    '"protocol"',
    '"type"',
    '"payload"',
    '"dedupe_key"',
    '"level"',
    '"message"',
    '"info"',
    '"debug"',
    '"x"',
    '""',
    '"\\ud800"',
    '"\\udc00"',
    '"\\u0000"',
    '"\\"',
    "true",
    "false",
    "null",
    "0",
    "1",
    "2",
    "-0",
    "1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "9" * 30,
    "\xff",
    "é",
]
jsonish_texts = st.lists(st.sampled_from(JSON_TOKENS), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(jsonish_texts)
def test_jsonish_texts_give_response_or_protocol_error(text: str) -> None:
    check_total(text.encode("utf-8", "surrogatepass"))


#: Literal JSON texts json.dumps cannot produce, spliced in where a leaf value goes.
RAW_LEAVES = ["1e400", "-1e400", "1e-400", "-0", "NaN", "-Infinity", "9" * 5000, '"\\ud800"', '"\\udfff x"']
RAW_MARK = re.compile(r'"@@raw(\d+)@@"')

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # includes NaN and infinities: json.dumps writes NaN/Infinity
    st.text(max_size=10),
    st.sampled_from(["ok", "error", "info", "warn", "debug", "", "\ud800"]),
    st.integers(0, len(RAW_LEAVES) - 1).map(lambda i: f"@@raw{i}@@"),
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
event_like = st.one_of(
    json_any,
    st.fixed_dictionaries(
        {"type": st.one_of(st.text(max_size=6), json_any)},
        optional={"payload": json_any, "dedupe_key": st.one_of(st.text(max_size=4), json_any)},
    ),
)
log_like = st.one_of(
    json_any,
    st.fixed_dictionaries(
        {},
        optional={
            "level": st.one_of(st.sampled_from(["info", "warn", "error", "debug"]), json_any),
            "message": st.one_of(st.text(max_size=8), json_any),
        },
    ),
)
response_like = st.fixed_dictionaries(
    {"status": st.one_of(st.sampled_from(["ok", "error"]), json_any)},
    optional={
        "error": st.one_of(st.text(max_size=8), json_any),
        "retry": st.one_of(st.booleans(), json_any),
        "events": st.one_of(st.lists(event_like, max_size=3), json_any),
        "state_updates": st.one_of(st.dictionaries(st.text(max_size=5), json_any, max_size=3), json_any),
        "logs": st.one_of(st.lists(log_like, max_size=3), json_any),
        "protocol": st.one_of(st.just(1), json_any),
        "unknown": json_any,
    },
)


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    doc = draw(response_like)
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 1])))
    text = RAW_MARK.sub(lambda m: RAW_LEAVES[int(m.group(1))], text)
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif op == "cut":
            raw = raw[:i]
        elif op == "insert":
            raw = (
                raw[:i]
                + draw(st.sampled_from([b"{", b"]", b",", b'"', b"\\", b"\x00", b"\xc3", b"NaN"]))
                + raw[i:]
            )
        elif op == "delete":
            raw = raw[:i] + raw[i + 1 :]
        else:
            raw = raw + raw
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_responses())
@example(b'{"status": "ok", "logs": [{"level": "debug", "message": ""}]}')  # found by CI: debug is a level
def test_mutated_responses_give_response_or_protocol_error(raw: bytes) -> None:
    check_total(raw)


valid_event = st.builds(
    EmittedEvent,
    type=st.text(min_size=1, max_size=8),
    payload=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    dedupe_key=st.none() | st.text(min_size=1, max_size=5),
)
valid_log = st.builds(LogLine, level=st.sampled_from(LOG_LEVELS), message=st.text(max_size=10))


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from(["ok", "error"]),
    error=st.none() | st.text(max_size=10),
    retry=st.booleans(),
    events=st.lists(valid_event, max_size=3),
    updates=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.none(), max_size=3),
    logs=st.lists(valid_log, max_size=3),
)
def test_valid_responses_round_trip(
    *,
    status: str,
    error: str | None,
    retry: bool,
    events: list[EmittedEvent],
    updates: dict[str, Any],
    logs: list[LogLine],
) -> None:
    doc = {
        "status": status,
        "error": error,
        "retry": retry,
        "events": [{"type": e.type, "payload": e.payload, "dedupe_key": e.dedupe_key} for e in events],
        "state_updates": updates,
        "logs": [{"level": line.level, "message": line.message} for line in logs],
        "protocol": 1,
    }
    assert parse_response(json.dumps(doc).encode()) == Response(
        status=status,  # type: ignore[arg-type]
        error=error,
        retry=retry,
        events=tuple(events),
        state_updates=updates,
        logs=tuple(logs),
    )


def test_a_lone_surrogate_in_a_response_is_named_by_its_key_path() -> None:
    """Issue 19, item 8: plugin output is validated at its boundary, and the error says where."""
    with pytest.raises(ProtocolError) as caught:
        parse_response(b'{"status":"ok","state_updates":{"tokens":[1,"\\ud83d"]}}')
    assert caught.value.kind == "encoding"
    assert "lone surrogate escape at state_updates.tokens[1]" in str(caught.value)


def _iso_utc_by_strftime(at: datetime) -> str:
    """iso_utc as it was first written (strftime): the fast form must give the same text."""
    at = at.astimezone(UTC)
    if at.microsecond:
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(max_examples=300, deadline=None)
@given(
    aware_datetimes(since=datetime(1, 1, 2))
    | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
)
def test_iso_utc_writes_what_strftime_wrote(at: datetime) -> None:
    assert iso_utc(at) == _iso_utc_by_strftime(at)
