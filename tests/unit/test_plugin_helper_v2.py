"""ductile.plugin speaks protocol 2 too: payload, context, result, debug, custom commands.

Requests come from the core's own ``build_request`` (protocol 2), answers are
judged by the core's own ``parse_response`` under protocol 2 and ``classify``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ductile import plugin
from ductile.domain.classify import classify
from ductile.domain.job import JobEvent
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import PROTOCOL_V2, EmittedEvent, LogLine, build_request, parse_response

DEADLINE = datetime(2026, 3, 1, 12, 1, tzinfo=UTC)


def v2_request(command: str = "poll", **fields: Any) -> bytes:
    base: dict[str, Any] = {
        "job_id": "job-1",
        "command": command,
        "config": {"url": "u"},
        "state": {"n": 1},
        "deadline_at": DEADLINE,
        "protocol": PROTOCOL_V2,
        "context": {"ductile_plugin": "check", "ductile_upstream_plugin": "feeds", "ductile_route_depth": 2},
    }
    if command == "handle":
        base["event"] = {"type": "item", "payload": {"url": "x"}, "source": "feeds", "event_id": "e1"}
    base.update(fields)
    return build_request(**base)


def answer(handler: object, request: bytes) -> plugin.Reply:
    return plugin.respond(handler, request, stderr=io.StringIO())


def test_a_v2_request_gives_the_handler_its_payload_and_context() -> None:
    seen: list[plugin.Request] = []

    def poll(request: plugin.Request) -> plugin.Response:
        seen.append(request)
        return plugin.ok()

    answer(poll, v2_request(payload={"scope": "daily"}))
    [request] = seen
    assert (request.protocol, request.command) == (2, "poll")
    assert dict(request.payload) == {"scope": "daily"}
    assert request.context["ductile_upstream_plugin"] == "feeds"
    assert request.context["ductile_route_depth"] == 2
    assert request.plugin == "check"  # from the context when DUCTILE_PLUGIN is not set
    with pytest.raises(TypeError):
        request.payload["scope"] = "x"  # type: ignore[index]


def test_a_v1_request_has_an_empty_payload_and_context() -> None:
    seen: list[plugin.Request] = []
    request = build_request(job_id="j", command="poll", config={}, state={}, deadline_at=DEADLINE)
    answer(seen.append, request)
    assert (seen[0].protocol, dict(seen[0].payload), dict(seen[0].context)) == (1, {}, {})


def test_ok_with_a_result_reaches_the_core_and_its_events_under_v2() -> None:
    def poll(request: plugin.Request) -> plugin.Response:
        plugin.log.debug("no new rows")
        return plugin.ok(events=[plugin.event("item", {"url": "u"})], result="1 new item")

    reply = answer(poll, v2_request())
    assert reply.response["protocol"] == 2  # the answer is in the request's protocol
    response = parse_response(reply.body, protocol=PROTOCOL_V2)
    assert response.result == "1 new item"
    assert response.events == (EmittedEvent(type="item", payload={"url": "u", "result": "1 new item"}),)
    assert response.logs == (LogLine(level="debug", message="no new rows"),)
    verdict = classify(SpawnOutcome(exit_code=reply.exit_code, stdout=reply.body), protocol=PROTOCOL_V2)
    assert verdict.event is JobEvent.SUCCEED


def test_a_v1_answer_still_says_protocol_1() -> None:
    request = build_request(job_id="j", command="poll", config={}, state={}, deadline_at=DEADLINE)
    reply = answer(lambda r: plugin.ok(result="done"), request)
    assert reply.response["protocol"] == 1
    assert parse_response(reply.body).result == "done"


def test_a_custom_command_goes_to_its_handler_in_a_mapping_or_an_object() -> None:
    reply = answer({"sync": lambda r: plugin.ok(result=f"synced {r.command}")}, v2_request("sync"))
    assert reply.response["result"] == "synced sync"

    class Handler:
        def poll(self, request: plugin.Request) -> None:
            return None

        def sync_all(self, request: plugin.Request) -> plugin.Response:
            return plugin.ok(result="all")

    assert answer(Handler(), v2_request("sync-all")).response["result"] == "all"
    missing = answer(Handler(), v2_request("report"))
    assert missing.exit_code == plugin.EX_CONFIG
    assert "no 'report' handler" in missing.response["error"]


def test_a_result_must_be_text() -> None:
    with pytest.raises(TypeError, match="result must be text"):
        plugin.ok(result=3)  # type: ignore[arg-type]


def test_a_deadline_and_an_error_work_as_under_v1() -> None:
    reply = answer(lambda r: plugin.error("down", retry=False), v2_request())
    response = parse_response(reply.body, protocol=PROTOCOL_V2)
    assert (response.ok, response.error, response.retry, reply.exit_code) == (False, "down", False, 78)
    seen: list[float] = []
    answer(lambda r: seen.append(r.seconds_left(DEADLINE - timedelta(seconds=5))), v2_request())
    assert seen == [5.0]
