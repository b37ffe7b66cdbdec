"""ductile.plugin, the plugin author's helper: the pure parts (D7-D10).

Requests are parsed from what the core's own ``build_request`` writes, and
every answer is judged by the core's own ``parse_response`` and ``classify``:
the helper and the core cannot drift apart unnoticed. Real processes (run(),
stdout redirection, signals) are in tests/integration/test_plugin_helper.py.
"""

from __future__ import annotations

import ast
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile import plugin
from ductile.domain.classify import classify
from ductile.domain.job import JobEvent
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import build_request, iso_utc, parse_response
from ductile.domain.routing import Envelope

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(seconds=60)
PLUGIN_SOURCE = Path(plugin.__file__)


def request_bytes(command: str = "poll", **fields: Any) -> bytes:
    base: dict[str, Any] = {
        "job_id": "job-1",
        "command": command,
        "config": {},
        "state": {},
        "deadline_at": DEADLINE,
    }
    if command == "handle":
        base["event"] = {"type": "thing.happened", "payload": {}, "source": "up", "event_id": "e1"}
    base.update(fields)
    return build_request(**base)


def answer(handler: object, request: bytes | dict[str, Any] | None = None) -> plugin.Reply:
    return plugin.respond(handler, request if request is not None else request_bytes(), stderr=io.StringIO())


def core_view(reply: plugin.Reply) -> Any:
    """What the core makes of the reply: it must always be a valid response."""
    return parse_response(reply.body)


# --------------------------------------------------------------------------- self-contained


def test_the_module_imports_only_the_standard_library() -> None:
    """Copying the one file next to a plugin must work: no ductile, no third-party imports."""
    tree = ast.parse(PLUGIN_SOURCE.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would break a copied file"
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    outside = sorted(m for m in imported if m not in sys.stdlib_module_names and m != "__future__")
    assert outside == []


def test_typing_is_not_imported_at_run_time() -> None:
    tree = ast.parse(PLUGIN_SOURCE.read_text(encoding="utf-8"))
    for node in tree.body:  # top level only: the TYPE_CHECKING block is an `if`
        if isinstance(node, ast.ImportFrom):
            assert node.module != "typing"
        if isinstance(node, ast.Import):
            assert all(alias.name != "typing" for alias in node.names)


# --------------------------------------------------------------------------- requests


json_scalars = st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
aware_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    command=st.sampled_from(["poll", "handle", "health", "init"]),
    config=json_objects,
    state=json_objects,
    deadline=aware_times,
    payload=json_objects,
    key=st.none() | st.text(min_size=1, max_size=8),
    stamp=aware_times,
)
def test_a_request_the_core_builds_parses_to_the_same_values(  # noqa: PLR0917 - hypothesis arguments
    command: str,
    config: dict[str, Any],
    state: dict[str, Any],
    deadline: datetime,
    payload: dict[str, Any],
    key: str | None,
    stamp: datetime,
) -> None:
    envelope = Envelope(
        type="thing.happened", payload=payload, source="up", timestamp=stamp, event_id="e-1", dedupe_key=key
    )
    raw = build_request(
        job_id="job-9",
        command=command,
        config=config,
        state=state,
        deadline_at=deadline,
        event=envelope.to_json() if command == "handle" else None,
    )
    request = plugin.parse_request(raw, environ={"DUCTILE_PLUGIN": "withings", "DUCTILE_ATTEMPT": "3"})
    assert request.command == command
    assert request.job_id == "job-9"
    assert dict(request.config) == config
    assert dict(request.state) == state
    assert request.protocol == 1
    assert request.plugin == "withings"
    assert request.attempt == 3
    # The core sends milliseconds.
    assert request.deadline_at == deadline.replace(microsecond=deadline.microsecond // 1000 * 1000)
    assert request.deadline_at is not None
    assert request.deadline_at.utcoffset() == timedelta(0)
    if command == "handle":
        event = request.require_event()
        assert event.type == "thing.happened"
        assert event.payload == payload
        assert event.source == "up"
        assert event.event_id == "e-1"
        assert event.dedupe_key == key
        assert event.timestamp == stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
        assert dict(event.headers) == {}
    else:
        assert request.event is None


def test_a_webhook_event_keeps_its_payload_shape_and_headers() -> None:
    event = {
        "type": "webhook",
        "payload": [1, {"a": None}],  # a webhook body may be any JSON
        "headers": {"x-github-event": "push"},
        "source": "webhook:/hook/github",
        "timestamp": "2026-03-01T12:00:00.250Z",
        "event_id": "e",
        "dedupe_key": "delivery-1",
    }
    request = plugin.parse_request(request_bytes("handle", event=event))
    got = request.require_event()
    assert got.payload == [1, {"a": None}]
    assert dict(got.headers) == {"x-github-event": "push"}
    assert got.timestamp == datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert got.raw["source"] == "webhook:/hook/github"


def test_a_scheduled_handle_gets_an_empty_event_not_an_error() -> None:
    request = plugin.parse_request(request_bytes("handle", event={}))
    assert request.require_event().type == ""
    assert request.require_event().payload == {}


def test_a_hand_written_request_needs_only_a_command() -> None:
    request = plugin.parse_request('{"command": "poll"}', environ={})
    assert dict(request.config) == {}
    assert dict(request.state) == {}
    assert request.deadline_at is None
    assert request.seconds_left() == float("inf")
    assert request.job_id == ""
    assert request.plugin == ""
    assert request.attempt == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object, not a list"),
        (b'{"command": "poll", "protocol": 3}', "speaks protocol 3; this module speaks 1 and 2"),
        (b'{"command": "poll", "protocol": true}', "speaks protocol True"),
        (b'{"protocol": 1}', "no 'command'"),
        (b'{"command": 5}', "no 'command'"),
        (b'{"command": "poll", "config": []}', "'config' must be an object, not a list"),
        (b'{"command": "poll", "state": "x"}', "'state' must be an object, not text"),
        (b'{"command": "poll", "job_id": 7}', "'job_id' must be text, not a number"),
        (b'{"command": "poll", "deadline_at": "soon"}', "'deadline_at' is not an ISO-8601 time"),
        (b'{"command": "poll", "deadline_at": "2026-03-01T12:00:00"}', "'deadline_at' is not an ISO-8601"),
        (b'{"command": "handle"}', "'handle' request must carry an 'event'"),
        (b'{"command": "handle", "event": []}', "'event' must be an object, not a list"),
        (b'{"command": "handle", "event": {"type": 3}}', "'event.type' must be text"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_request_is_a_non_retryable_error_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(plugin.RequestError) as caught:
        plugin.parse_request(raw)
    assert message in str(caught.value)
    assert caught.value.retry is False
    reply = answer(lambda r: plugin.ok(), raw)
    assert reply.exit_code == plugin.EX_CONFIG
    response = core_view(reply)
    assert response.status == "error"
    assert response.retry is False
    assert message in (response.error or "")


def test_requests_are_read_only() -> None:
    request = plugin.parse_request(request_bytes(config={"a": 1}, state={"b": 2}))
    with pytest.raises(AttributeError, match="read-only"):
        request.command = "handle"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.config["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        request.state["b"] = 3  # type: ignore[index]


def test_seconds_left_counts_down_to_the_deadline() -> None:
    request = plugin.parse_request(request_bytes())
    assert request.seconds_left(NOW) == 60.0
    assert request.seconds_left(DEADLINE + timedelta(seconds=2)) == -2.0
    # Without ``now``: the real clock.
    soon = plugin.parse_request(
        {"command": "poll", "deadline_at": iso_utc(datetime.now(UTC) + timedelta(hours=1))}
    )
    assert 3500 < soon.seconds_left() <= 3600


def test_offsets_are_converted_to_utc() -> None:
    request = plugin.parse_request({"command": "poll", "deadline_at": "2026-03-01T13:00:00.5+01:00"})
    assert request.deadline_at == datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert request.deadline_at is not None
    assert request.deadline_at.tzinfo is UTC  # the same object as timezone.utc


@given(aware_times)
def test_any_time_the_core_writes_parses_back(at: datetime) -> None:
    request = plugin.parse_request({"command": "poll", "deadline_at": iso_utc(at)})
    assert request.deadline_at == at.replace(microsecond=at.microsecond // 1000 * 1000)


# --------------------------------------------------------------------------- typed config


def configured(**config: Any) -> plugin.Request:
    return plugin.parse_request(
        request_bytes(config=config), environ={"DUCTILE_PLUGIN": "withings", "DUCTILE_ATTEMPT": "1"}
    )


@pytest.mark.parametrize(
    ("getter", "value", "expected"),
    [
        ("config_str", "abc", "abc"),
        ("config_str", "", ""),
        ("config_int", 42, 42),
        ("config_int", -3, -3),
        ("config_int", "8080", 8080),  # from ${PORT}
        ("config_int", " +7 ", 7),
        ("config_float", 1.5, 1.5),
        ("config_float", 2, 2.0),
        ("config_float", "0.25", 0.25),
        ("config_bool", True, True),
        ("config_bool", False, False),
        ("config_bool", "yes", True),
        ("config_bool", "OFF", False),
        ("config_bool", "1", True),
        ("config_bool", "false", False),
    ],
)
def test_typed_getters_accept_what_yaml_and_env_substitution_produce(
    getter: str, value: Any, expected: Any
) -> None:
    got = getattr(configured(key=value), getter)("key")
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("getter", "value", "expected"),
    [
        ("config_str", 12345, "must be text, not a number; write it in quotes in the YAML"),
        ("config_str", True, "must be text, not true/false; write it in quotes in the YAML"),
        ("config_str", ["a"], "must be text, not a list"),
        ("config_int", "eighty", "must be a whole number, not text"),
        ("config_int", 1.5, "must be a whole number, not a number"),
        ("config_int", True, "must be a whole number, not true/false"),
        ("config_int", "1" * 101, "must be a whole number, not text"),
        ("config_float", "nan", "must be a number, not text"),
        ("config_float", "inf", "must be a number, not text"),
        ("config_float", {}, "must be a number, not a mapping"),
        ("config_bool", "maybe", "must be true or false, not text"),
        ("config_bool", 1, "must be true or false, not a number"),
    ],
)
def test_a_wrong_type_is_a_config_error_that_never_shows_the_value(
    getter: str, value: Any, expected: str
) -> None:
    request = configured(key=value)
    with pytest.raises(plugin.ConfigError) as caught:
        getattr(request, getter)("key")
    assert str(caught.value) == f"config key 'key' {expected}"
    assert caught.value.retry is False
    if isinstance(value, str):
        assert value not in str(caught.value)  # config holds secrets; errors are logged


@pytest.mark.parametrize("getter", ["config_str", "config_int", "config_float", "config_bool"])
def test_a_missing_key_names_it_and_where_to_set_it(getter: str) -> None:
    for request in (configured(), configured(client_id=None)):  # null counts as unset, like the core
        with pytest.raises(plugin.ConfigError) as caught:
            getattr(request, getter)("client_id")
        assert str(caught.value) == (
            "config key 'client_id' is missing: set it under plugins.withings.config in the ductile config"
        )
        assert getattr(request, getter)("client_id", None) is None
        assert getattr(request, getter)("client_id", "fallback") == "fallback"


def test_a_config_error_in_a_handler_is_not_retried() -> None:
    reply = answer(lambda r: plugin.ok(logs=[r.config_str("client_id")]))
    assert reply.exit_code == 78
    response = core_view(reply)
    assert (response.status, response.retry) == ("error", False)
    assert "config key 'client_id' is missing" in (response.error or "")


# --------------------------------------------------------------------------- building answers


def test_ok_writes_protocol_events_state_and_logs() -> None:
    response = plugin.ok(
        events=[plugin.event("a.b", {"n": 1}, dedupe_key="k"), {"type": "c"}],
        state_updates={"cursor": 7},
        logs=["plain", {"level": "warn", "message": "careful"}],
    )
    assert response.to_json() == {
        "protocol": 1,
        "status": "ok",
        "events": [{"type": "a.b", "payload": {"n": 1}, "dedupe_key": "k"}, {"type": "c", "payload": {}}],
        "state_updates": {"cursor": 7},
        "logs": [{"level": "info", "message": "plain"}, {"level": "warn", "message": "careful"}],
    }
    assert plugin.ok().to_json() == {"protocol": 1, "status": "ok"}
    assert plugin.ok().exit_code == 0


def test_error_answers_say_whether_to_retry() -> None:
    assert plugin.error("down").to_json() == {
        "protocol": 1,
        "status": "error",
        "error": "down",
        "retry": True,
    }
    assert plugin.error("down").exit_code == 0
    gone = plugin.error("gone", retry=False)
    assert gone.to_json()["retry"] is False
    assert gone.exit_code == 78
    assert plugin.error("  ").error == "the plugin reported an error without a message"
    assert len(plugin.error("x" * 10_000).error or "") == plugin.MAX_ERROR_CHARS


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: plugin.event(""), "non-empty string"),
        (lambda: plugin.event("t", [1]), "payload must be a mapping"),  # type: ignore[arg-type]
        (lambda: plugin.event("t", dedupe_key=""), "dedupe_key must be a non-empty string"),
        (lambda: plugin.ok(events=[{"type": "t", "dedup_key": "k"}]), "unknown key(s) dedup_key"),
        (lambda: plugin.ok(events=["t"]), "events[0] must be a mapping"),
        (lambda: plugin.ok(events={"type": "t"}), "must be a list of events"),
        (lambda: plugin.ok(state_updates=[("a", 1)]), "state_updates must be a mapping"),  # type: ignore[arg-type]
        (lambda: plugin.ok(state_updates={1: "a"}), "keys must be text"),  # type: ignore[dict-item]
        (lambda: plugin.ok(logs="one line"), "logs must be a list"),
        (
            lambda: plugin.ok(logs=[{"level": "trace", "message": "m"}]),
            "level must be one of debug, info, warn",
        ),
        (lambda: plugin.ok(logs=[{"message": 3}]), "message must be text"),
    ],
)
def test_mistakes_in_building_an_answer_are_caught_where_they_are_made(build: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        build()
    assert message in str(caught.value)


# --------------------------------------------------------------------------- respond: dispatch


class Thing:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def poll(self, request: plugin.Request) -> plugin.Response:
        self.seen.append(request.command)
        return plugin.ok(state_updates={"polled": True})

    def health(self, request: plugin.Request) -> None:
        self.seen.append(request.command)


def test_a_function_handles_every_command() -> None:
    seen: list[str] = []

    def handler(request: plugin.Request) -> None:
        seen.append(request.command)

    for command in ("poll", "handle", "health", "init"):
        assert answer(handler, request_bytes(command)).exit_code == 0
    assert seen == ["poll", "handle", "health", "init"]


def test_a_mapping_dispatches_by_command_and_refuses_the_others() -> None:
    handlers = {"poll": lambda r: plugin.ok(state_updates={"n": 1}), "health": lambda r: None}
    assert answer(handlers, request_bytes("poll")).response["state_updates"] == {"n": 1}
    assert answer(handlers, request_bytes("health")).response == {"protocol": 1, "status": "ok"}
    refused = answer(handlers, request_bytes("init"))
    assert refused.exit_code == 78
    assert refused.response["error"] == "this plugin has no 'init' handler (it handles: health, poll)"
    assert refused.response["retry"] is False


def test_an_object_dispatches_to_its_methods() -> None:
    thing = Thing()
    assert answer(thing, request_bytes("poll")).response["state_updates"] == {"polled": True}
    assert answer(thing, request_bytes("health")).exit_code == 0
    refused = answer(thing, request_bytes("handle"))
    assert refused.exit_code == 78
    assert "no 'handle' handler (it handles: poll, health)" in refused.response["error"]
    assert thing.seen == ["poll", "health"]


def test_passing_the_class_instead_of_an_instance_is_explained() -> None:
    reply = answer(Thing, request_bytes("poll"))
    assert reply.exit_code == 1
    assert "needs an instance of Thing, not the class itself" in reply.response["error"]


def test_a_handler_that_returns_something_else_is_explained() -> None:
    reply = answer(lambda r: {"status": "ok"})
    assert reply.exit_code == 1
    assert "the poll handler returned dict; return ok(...), error(...) or None" in reply.response["error"]
    assert reply.response["retry"] is True


def test_read_inside_a_handler_returns_the_request_being_handled() -> None:
    got: list[plugin.Request] = []
    answer(lambda r: got.append(plugin.read()), request_bytes("poll", job_id="job-42"))
    assert got[0].job_id == "job-42"


# --------------------------------------------------------------------------- respond: failures


def test_fail_chooses_the_message_and_the_retry() -> None:
    def retry(request: plugin.Request) -> None:
        raise plugin.Fail("API answered 503")

    def stop(request: plugin.Request) -> None:
        raise plugin.Fail("account deleted", retry=False)

    soft = answer(retry)
    assert (soft.exit_code, soft.response["error"], soft.response["retry"]) == (0, "API answered 503", True)
    hard = answer(stop)
    assert (hard.exit_code, hard.response["error"], hard.response["retry"]) == (78, "account deleted", False)


def test_an_uncaught_exception_is_a_retryable_error_with_its_type_place_and_traceback() -> None:
    def crash(request: plugin.Request) -> None:
        {}["missing"]

    err = io.StringIO()
    reply = plugin.respond(crash, request_bytes(), stderr=err)
    assert reply.exit_code == 1
    line = crash.__code__.co_firstlineno + 1
    assert reply.response["error"] == f"KeyError: 'missing' (at test_plugin_helper.py:{line})"
    assert reply.response["retry"] is True
    assert "Traceback (most recent call last)" in err.getvalue()
    assert "KeyError: 'missing'" in err.getvalue()


def test_logs_collected_before_a_crash_are_kept_and_come_first() -> None:
    def handler(request: plugin.Request) -> plugin.Response:
        plugin.log.info("step 1")
        plugin.log.warn("step 2")
        plugin.log.warning("step 3")
        return plugin.ok(logs=["explicit"])

    assert answer(handler).response["logs"] == [
        {"level": "info", "message": "step 1"},
        {"level": "warn", "message": "step 2"},
        {"level": "warn", "message": "step 3"},
        {"level": "info", "message": "explicit"},
    ]

    def crash(request: plugin.Request) -> None:
        plugin.log.error("about to fail")
        raise RuntimeError("boom")

    reply = answer(crash)
    assert reply.response["logs"] == [{"level": "error", "message": "about to fail"}]
    # The next request starts with an empty log.
    assert "logs" not in answer(lambda r: None).response


@pytest.mark.parametrize(
    ("raised", "code", "retry", "message"),
    [
        (KeyboardInterrupt(), 130, True, "interrupted (SIGINT)"),
        (plugin.Terminated(), 143, True, "stopped by SIGTERM before the plugin answered (60.0 s before"),
        (SystemExit(0), 1, True, "the plugin called sys.exit(0) instead of answering"),
        (SystemExit(None), 1, True, "sys.exit(None)"),
        (SystemExit(3), 3, True, "sys.exit(3)"),
        (SystemExit(78), 78, False, "sys.exit(78)"),
        (SystemExit("bye"), 1, True, "sys.exit('bye')"),
        (SystemExit(256), 1, True, "sys.exit(256)"),
        (SystemExit(-1), 255, True, "sys.exit(-1)"),
        (SystemExit(78 + 256), 78, False, "sys.exit(334)"),
    ],
)
def test_interruptions_and_exits_still_get_an_answer(
    raised: BaseException, code: int, retry: bool, message: str
) -> None:
    def handler(request: plugin.Request) -> None:
        raise raised

    request = plugin.parse_request(request_bytes(deadline_at=datetime.now(UTC) + timedelta(seconds=60)))
    reply = answer(handler, request.raw)  # type: ignore[arg-type]
    assert reply.exit_code == code
    assert reply.response["retry"] is retry
    assert message in reply.response["error"]
    core_view(reply)


@pytest.mark.parametrize(
    ("updates", "why"),
    [
        ({"when": datetime(2026, 1, 1)}, "TypeError: a datetime is not JSON"),
        ({"ids": {1, 2}}, "a set is not JSON; send a list"),
        ({"x": float("nan")}, "ValueError: Out of range float values are not JSON compliant"),
        ({"x": float("inf")}, "Out of range float values"),
        ({"text": "\ud800"}, "UnicodeEncodeError"),
        ({"n": 10**5000}, "ValueError"),
        ({"deep": json.loads("[" * 250 + "]" * 250)}, "nested more than 200 levels deep"),
    ],
)
def test_a_response_that_cannot_be_sent_becomes_an_error_that_can(updates: dict[str, Any], why: str) -> None:
    def handler(request: plugin.Request) -> plugin.Response:
        plugin.log.info("fetched")
        return plugin.ok(state_updates=updates)

    reply = answer(handler)
    assert reply.exit_code == 1
    response = core_view(reply)
    assert response.status == "error"
    assert response.retry is True
    assert (response.error or "").startswith("the plugin's response could not be sent: ")
    assert why in (response.error or "")
    assert [line.message for line in response.logs] == ["fetched"]


def test_read_only_mappings_from_the_request_can_be_sent_back() -> None:
    reply = answer(lambda r: plugin.ok(state_updates={"copy": r.config}), request_bytes(config={"a": [1]}))
    assert reply.exit_code == 0
    assert core_view(reply).state_updates == {"copy": {"a": [1]}}


def test_a_response_over_the_stdout_cap_becomes_an_error() -> None:
    big = "x" * (plugin.STDOUT_LIMIT + 1)
    reply = answer(lambda r: plugin.ok(state_updates={"big": big}))
    assert reply.exit_code == 1
    assert len(reply.body) < 1000
    assert "over ductile's 10,485,760-byte stdout limit" in core_view(reply).error


def test_lone_surrogates_in_messages_are_replaced_not_fatal() -> None:
    def handler(request: plugin.Request) -> None:
        plugin.log.info("bad \udcff byte")
        raise plugin.Fail("file \udcff.txt missing")

    reply = answer(handler)
    response = core_view(reply)
    assert response.error == "file ?.txt missing"
    assert response.logs[0].message == "bad ? byte"


# --------------------------------------------------------------------------- the invariant

texts = st.text(max_size=20)
nasty_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinity included
    | st.text(max_size=10)  # lone surrogates included
    | st.builds(lambda: 10**5000)
    | st.builds(datetime.now)
    | st.frozensets(st.integers(), max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)
event_dicts = st.builds(
    plugin.event,
    st.text(min_size=1, max_size=8),
    st.none() | st.dictionaries(texts, nasty_values, max_size=2),
)
log_items = st.text(max_size=10) | st.builds(
    dict, level=st.sampled_from(plugin.LOG_LEVELS), message=st.text(max_size=10)
)


class Boom(Exception):
    pass


outcomes = st.one_of(
    st.builds(
        lambda e, s, lg: ("return", plugin.ok(events=e, state_updates=s, logs=lg)),
        st.lists(event_dicts, max_size=2),
        st.dictionaries(st.text(max_size=5), nasty_values, max_size=3),
        st.lists(log_items, max_size=2),
    ),
    st.builds(lambda m, r: ("return", plugin.error(m, retry=r)), texts, st.booleans()),
    st.builds(lambda m, r: ("raise", plugin.Fail(m, retry=r)), texts, st.booleans()),
    st.builds(lambda m: ("raise", plugin.ConfigError(m)), texts),
    st.builds(
        lambda cls, m: ("raise", cls(m)),
        st.sampled_from([ValueError, KeyError, RuntimeError, OSError, Boom, ZeroDivisionError]),
        texts,
    ),
    st.builds(lambda c: ("raise", SystemExit(c)), st.none() | st.integers(-5, 300) | texts),
    st.just(("raise", KeyboardInterrupt())),
    st.just(("raise", plugin.Terminated())),
    st.just(("raise", GeneratorExit())),
    st.builds(lambda v: ("return", v), nasty_values),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    outcome=outcomes,
    logged=st.lists(st.tuples(st.sampled_from(["info", "warn", "error"]), texts), max_size=3),
    command=st.sampled_from(["poll", "handle", "health", "init"]),
)
def test_any_handler_outcome_is_exactly_one_object_the_core_accepts(
    outcome: tuple[str, Any], logged: list[tuple[str, str]], command: str
) -> None:
    how, value = outcome

    def handler(request: plugin.Request) -> Any:
        for level, message in logged:
            getattr(plugin.log, level)(message)
        if how == "raise":
            raise value
        return value

    reply = answer(handler, request_bytes(command))
    assert 0 <= reply.exit_code <= 255
    # One line, one object; the core's own parser and classifier accept it.
    assert reply.body.endswith(b"\n")
    assert b"\n" not in reply.body[:-1]
    response = parse_response(reply.body)
    assert json.loads(reply.body) == reply.response
    verdict = classify(SpawnOutcome(exit_code=reply.exit_code, stdout=reply.body))
    assert verdict.protocol_error is None
    # The exit code and the body agree.
    if response.ok:
        assert reply.exit_code == 0
        assert verdict.event is JobEvent.SUCCEED
    else:
        assert verdict.event is JobEvent.FAIL
        assert response.error
        assert (reply.exit_code == 78) == (response.retry is False)
        assert verdict.retryable is response.retry
    # What was logged is never lost.
    assert [line.message for line in response.logs][: len(logged)] == [
        m.encode("utf-8", "replace").decode("utf-8") for _, m in logged
    ]


@settings(max_examples=200)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_request_bytes_get_an_answer(raw: bytes) -> None:
    reply = answer(lambda r: plugin.ok(), raw)
    response = parse_response(reply.body)
    assert reply.exit_code in (0, 78)
    assert response.ok == (reply.exit_code == 0)


@given(
    events=st.lists(
        st.builds(
            plugin.event,
            st.text(min_size=1, max_size=8),
            st.none() | json_objects,
            st.none() | st.text(min_size=1, max_size=8),
        ),
        max_size=3,
    ),
    updates=json_objects,
    logs=st.lists(log_items, max_size=3),
)
def test_what_ok_builds_is_what_the_core_reads(
    events: list[dict[str, Any]], updates: dict[str, Any], logs: list[Any]
) -> None:
    reply = answer(lambda r: plugin.ok(events=events, state_updates=updates, logs=logs))
    response = parse_response(reply.body)
    assert [(e.type, e.payload, e.dedupe_key) for e in response.events] == [
        (e["type"], e["payload"], e.get("dedupe_key")) for e in events
    ]
    assert response.state_updates == updates
    expected_logs = [
        ("info", item) if isinstance(item, str) else (item["level"], item["message"]) for item in logs
    ]
    assert [(line.level, line.message) for line in response.logs] == [
        (level, message.encode("utf-8", "replace").decode("utf-8")) for level, message in expected_logs
    ]


# --------------------------------------------------------------------------- OAuth (D10)


@pytest.mark.parametrize(
    ("state", "expired"),
    [
        ({}, True),
        ({"access_token": ""}, True),
        ({"access_token": "t"}, True),  # no expiry known: refresh
        ({"access_token": "t", "expires_at": None}, True),
        ({"access_token": "t", "expires_at": "garbage"}, True),
        ({"access_token": "t", "expires_at": "2026-03-01T12:01:01Z"}, False),
        ({"access_token": "t", "expires_at": "2026-03-01T12:01:00Z"}, True),  # within the 60 s skew
        ({"access_token": "t", "expires_at": "2026-03-01T13:01:01+01:00"}, False),
        ({"access_token": "t", "expires_at": NOW.timestamp() + 3600}, False),
        ({"access_token": "t", "expires_at": NOW.timestamp() + 30}, True),
        ({"access_token": "t", "expires_at": True}, True),
        ({"access_token": "t", "expires_at": 1e300}, True),
    ],
)
def test_tokens_expired(state: dict[str, Any], expired: bool) -> None:
    assert plugin.tokens_expired(state, now=NOW) is expired


def test_token_state_returns_every_field_at_once() -> None:
    fields = plugin.token_state("a2", refresh_token="r2", expires_in=3600, now=NOW, scope="read")
    assert fields == {
        "access_token": "a2",
        "refresh_token": "r2",
        "expires_at": "2026-03-01T13:00:00Z",
        "scope": "read",
    }
    # No new refresh token: the stored one stays (the key is left out of the merge);
    # no expiry: the old token's expiry must not survive.
    assert plugin.token_state("a3", refresh_token=None, expires_in=None) == {
        "access_token": "a3",
        "expires_at": None,
    }
    with pytest.raises(ValueError, match="access_token"):
        plugin.token_state("", refresh_token="r", expires_in=1)


@given(expires_in=st.integers(0, 10**6), skew=st.integers(0, 3600), later=st.integers(0, 10**6))
def test_fresh_tokens_expire_exactly_skew_before_their_expiry(expires_in: int, skew: int, later: int) -> None:
    state = plugin.token_state("a", refresh_token="r", expires_in=expires_in, now=NOW)
    assert plugin.tokens_expired(state, skew, now=NOW + timedelta(seconds=later)) is (
        later >= expires_in - skew
    )
