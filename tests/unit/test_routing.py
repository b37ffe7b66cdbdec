"""Events and routing (D8, D15): exact-match fan-out, envelopes, replay-safe child ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.job import Job, JobStatus, SubmittedBy
from ductile.domain.protocol import EmittedEvent
from ductile.domain.routing import (
    Envelope,
    FanOut,
    Route,
    Target,
    arrival_event_id,
    child_job_id,
    event_id_for,
    fan_out,
    manual_envelope,
    matching,
    webhook_envelope,
    wrap,
)

AT = datetime(2026, 3, 1, 7, 30, 15, 250_000, tzinfo=UTC)
PARENT = "11111111-1111-4111-8111-111111111111"


def env(
    type_: str = "new_data",
    *,
    source: str = "withings",
    event_id: str = "e-1",
    payload: dict[str, object] | None = None,
    dedupe_key: str | None = None,
) -> Envelope:
    return Envelope(
        type=type_,
        payload=payload if payload is not None else {"n": 1},
        source=source,
        timestamp=AT,
        event_id=event_id,
        dedupe_key=dedupe_key,
    )


def route(target: str, *, source: str = "withings", event_type: str = "new_data") -> Route:
    return Route(source=source, event_type=event_type, target=target)


TARGETS = {"analyzer": Target(max_attempts=7), "notifier": Target(max_attempts=2)}


# --- envelopes ----------------------------------------------------------------------


def test_wrap_adds_source_timestamp_and_id() -> None:
    emitted = EmittedEvent(type="t", payload={"a": [1]}, dedupe_key="k")
    assert wrap(emitted, source="src", at=AT, event_id="eid") == Envelope(
        type="t", payload={"a": [1]}, source="src", timestamp=AT, event_id="eid", dedupe_key="k"
    )


def test_envelope_json_fields() -> None:
    assert env(dedupe_key="k").to_json() == {
        "type": "new_data",
        "payload": {"n": 1},
        "source": "withings",
        "timestamp": "2026-03-01T07:30:15.250Z",
        "event_id": "e-1",
        "dedupe_key": "k",
    }
    assert "dedupe_key" not in env().to_json()


# --- matching --------------------------------------------------------------------------


def test_matching_is_exact_and_keeps_order() -> None:
    routes = [
        route("b"),
        route("x", event_type="new_data_v2"),
        route("y", event_type="New_Data"),
        route("z", source="Withings"),
        route("w", event_type="new"),
        route("a"),
    ]
    assert [r.target for r in matching(routes, source="withings", event_type="new_data")] == ["b", "a"]
    assert matching(routes, source="withings", event_type="other") == []


def test_route_defaults_to_handle() -> None:
    assert route("a").command == "handle"


# --- fan_out ---------------------------------------------------------------------------


def test_every_matching_route_fires_in_order() -> None:
    out = fan_out(
        [env()],
        routes=[route("notifier"), route("analyzer")],
        targets=TARGETS,
        parent_job_id=PARENT,
        at=AT,
    )
    assert [c.plugin for c in out.children] == ["notifier", "analyzer"]
    assert out.unmatched == ()
    assert out.unroutable == ()


def test_no_match_is_unmatched_not_an_error() -> None:
    out = fan_out(
        [env("ignored"), env("new_data", event_id="e-2")],
        routes=[route("analyzer")],
        targets=TARGETS,
        parent_job_id=PARENT,
        at=AT,
    )
    assert out.unmatched == ("ignored",)
    assert [c.source_event_id for c in out.children] == ["e-2"]


def test_route_to_missing_plugin_is_unroutable_and_others_still_fire() -> None:
    out = fan_out(
        [env()],
        routes=[route("gone"), route("analyzer")],
        targets=TARGETS,
        parent_job_id=PARENT,
        at=AT,
    )
    assert out.unroutable == (("new_data", "gone"),)
    assert [c.plugin for c in out.children] == ["analyzer"]
    assert out.unmatched == ()


def test_nothing_in_nothing_out() -> None:
    assert fan_out([], routes=[route("analyzer")], targets=TARGETS, parent_job_id=PARENT, at=AT) == FanOut(
        children=()
    )


def test_child_job_fields() -> None:
    e = env(dedupe_key="delivery-9", payload={"weight": 71.5})
    (child,) = fan_out([e], routes=[route("analyzer")], targets=TARGETS, parent_job_id=PARENT, at=AT).children
    assert isinstance(child, Job)
    assert child.plugin == "analyzer"
    assert child.command == "handle"
    assert child.payload == e.to_json()
    assert child.payload["timestamp"] == "2026-03-01T07:30:15.250Z"
    assert child.max_attempts == 7
    assert child.submitted_by is SubmittedBy.ROUTE
    assert child.dedupe_key == "delivery-9"
    assert child.created_at == AT
    assert child.parent_job_id == PARENT
    assert child.source_event_id == "e-1"
    assert child.status is JobStatus.QUEUED
    assert child.attempt == 1
    assert child.id == child_job_id(PARENT, "e-1", "analyzer", "handle")
    assert uuid.UUID(child.id).version == 5


def test_each_child_takes_its_own_targets_max_attempts() -> None:
    out = fan_out(
        [env()], routes=[route("analyzer"), route("notifier")], targets=TARGETS, parent_job_id=PARENT, at=AT
    )
    assert [(c.plugin, c.max_attempts) for c in out.children] == [("analyzer", 7), ("notifier", 2)]


def test_timer_event_without_parent() -> None:
    (child,) = fan_out(
        [env(event_id="timer-e")], routes=[route("analyzer")], targets=TARGETS, parent_job_id=None, at=AT
    ).children
    assert child.parent_job_id is None
    assert child.source_event_id == "timer-e"
    again = fan_out(
        [env(event_id="timer-e")], routes=[route("analyzer")], targets=TARGETS, parent_job_id=None, at=AT
    ).children[0]
    assert again.id == child.id


def test_replay_yields_the_same_ids() -> None:
    def run() -> tuple[str, ...]:
        envelopes = [
            wrap(EmittedEvent(type="new_data"), source="withings", at=AT, event_id=event_id_for(PARENT, i))
            for i in range(3)
        ]
        out = fan_out(
            envelopes,
            routes=[route("analyzer"), route("notifier")],
            targets=TARGETS,
            parent_job_id=PARENT,
            at=AT,
        )
        return tuple(c.id for c in out.children)

    first = run()
    assert first == run()
    assert len(set(first)) == 6


# --- derived ids ---------------------------------------------------------------------------


def test_event_ids_are_deterministic_uuids() -> None:
    assert event_id_for(PARENT, 0) == event_id_for(PARENT, 0)
    assert event_id_for(PARENT, 0) != event_id_for(PARENT, 1)
    assert event_id_for(PARENT, 0) != event_id_for("other", 0)
    assert uuid.UUID(event_id_for(PARENT, 0)).version == 5


ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=10)
commands = st.sampled_from(["handle", "poll", "health", "init"])


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(ids, ids, names, commands), b=st.tuples(ids, ids, names, commands))
def test_child_ids_equal_exactly_when_inputs_equal(
    a: tuple[str, str, str, str], b: tuple[str, str, str, str]
) -> None:
    assert (child_job_id(*a) == child_job_id(*b)) == (a == b)
    assert child_job_id(*a) == child_job_id(*a)


@settings(max_examples=200, deadline=None)
@given(origin=ids, other=ids, i=st.integers(0, 1000), j=st.integers(0, 1000))
def test_event_ids_equal_exactly_when_inputs_equal(origin: str, other: str, i: int, j: int) -> None:
    assert (event_id_for(origin, i) == event_id_for(other, j)) == ((origin, i) == (other, j))


SOURCES = ["s1", "s2"]
TYPES = ["t1", "t2", "t3"]
PLUGINS = ["p1", "p2", "p3"]

routes_strategy = st.lists(
    st.builds(
        lambda s, t, p: Route(source=s, event_type=t, target=p),
        st.sampled_from(SOURCES),
        st.sampled_from(TYPES),
        st.sampled_from(PLUGINS),
    ),
    max_size=6,
    unique=True,
)


@settings(max_examples=200, deadline=None)
@given(
    routes=routes_strategy,
    loaded=st.sets(st.sampled_from(PLUGINS)),
    events=st.lists(st.tuples(st.sampled_from(SOURCES), st.sampled_from(TYPES)), max_size=5),
    parent=st.none() | ids,
)
def test_fan_out_model(
    routes: list[Route], loaded: set[str], events: list[tuple[str, str]], parent: str | None
) -> None:
    envelopes = [env(t, source=s, event_id=f"ev-{i}") for i, (s, t) in enumerate(events)]
    targets = {p: Target(max_attempts=3) for p in loaded}
    out = fan_out(envelopes, routes=routes, targets=targets, parent_job_id=parent, at=AT)

    expected_children: list[tuple[str, str]] = []
    expected_unroutable: list[tuple[str, str]] = []
    expected_unmatched: list[str] = []
    for e in envelopes:
        hits = [r for r in routes if (r.source, r.event_type) == (e.source, e.type)]
        if not hits:
            expected_unmatched.append(e.type)
        for r in hits:
            if r.target in loaded:
                expected_children.append((e.event_id, r.target))
            else:
                expected_unroutable.append((e.type, r.target))

    assert [(c.source_event_id, c.plugin) for c in out.children] == expected_children
    assert list(out.unroutable) == expected_unroutable
    assert list(out.unmatched) == expected_unmatched
    assert len({c.id for c in out.children}) == len(out.children), "distinct routes gave colliding ids"
    for c in out.children:
        assert c.parent_job_id == parent
        assert c.submitted_by is SubmittedBy.ROUTE
        assert c.command == "handle"
    # replay: same inputs, same ids
    again = fan_out(envelopes, routes=routes, targets=targets, parent_job_id=parent, at=AT)
    assert [c.id for c in again.children] == [c.id for c in out.children]


@pytest.mark.parametrize(
    "changed",
    [
        {"parent": "22222222-2222-4222-8222-222222222222"},
        {"event_id": "e-2"},
        {"target": "notifier"},
    ],
)
def test_changing_parent_event_or_target_changes_the_id(changed: dict[str, str]) -> None:
    def child_id(parent: str = PARENT, event_id: str = "e-1", target: str = "analyzer") -> str:
        out = fan_out(
            [env(event_id=event_id)], routes=[route(target)], targets=TARGETS, parent_job_id=parent, at=AT
        )
        return out.children[0].id

    assert child_id(**changed) != child_id()


def test_a_route_written_twice_yields_one_child() -> None:
    from datetime import UTC, datetime

    from ductile.domain.routing import Envelope, Route, Target, fan_out

    at = datetime(2026, 1, 1, tzinfo=UTC)
    env = Envelope(type="t", payload={}, source="a", timestamp=at, event_id="e1")
    route = Route(source="a", event_type="t", target="b")
    out = fan_out(
        [env], routes=[route, route], targets={"b": Target(max_attempts=4)}, parent_job_id="p", at=at
    )
    assert len(out.children) == 1


# --------------------------------------------------------------------------- arrivals from outside


def test_a_webhook_envelope_keeps_the_body_and_headers_and_derives_its_id_from_the_job() -> None:
    body = [1, {"x": None}, "three"]  # any JSON value: the shape is preserved
    envelope = webhook_envelope(
        path="/hook/gh",
        event_type="github.push",
        payload=body,
        headers={"x-github-event": "push"},
        dedupe_key="d-1",
        at=AT,
        job_id=PARENT,
    )
    assert list(envelope.to_json().items()) == [
        ("type", "github.push"),
        ("payload", body),
        ("headers", {"x-github-event": "push"}),
        ("source", "webhook:/hook/gh"),
        ("timestamp", "2026-03-01T07:30:15.250Z"),
        ("event_id", arrival_event_id(PARENT)),
        ("dedupe_key", "d-1"),
    ]


def test_a_manual_envelope_defaults_its_type_and_payload_and_has_no_headers() -> None:
    envelope = manual_envelope(
        source="cli",
        event_type=None,
        payload=None,
        dedupe_key=None,
        at=AT.replace(microsecond=0),
        job_id=PARENT,
    )
    assert envelope.to_json() == {
        "type": "manual",
        "payload": {},
        "source": "cli",
        "timestamp": "2026-03-01T07:30:15Z",
        "event_id": arrival_event_id(PARENT),
    }


def test_an_arriving_events_id_is_derived_and_never_one_its_job_would_emit() -> None:
    """One scheme for every event id (derived); an arrival's cannot clash with the first event
    its own job emits, whose id is derived from the same job id."""
    assert arrival_event_id(PARENT) == arrival_event_id(PARENT)
    assert uuid.UUID(arrival_event_id(PARENT)).version == 5
    assert arrival_event_id(PARENT) != event_id_for(PARENT, 0)
    assert arrival_event_id(PARENT) != arrival_event_id("22222222-2222-4222-8222-222222222222")
