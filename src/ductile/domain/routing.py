"""Events and routing (D8, D15).

A plugin emits ``{type, payload, dedupe_key?}``; the core wraps it in an
envelope with ``source``, ``timestamp`` and ``event_id`` and gives the whole
envelope as ``event`` to a ``handle`` job on every plugin whose route matches
exactly. Ids are derived (UUIDv5) from the parent job and the event's index,
so replaying a parent's completion yields the same event ids and the same
child ids: the child identity (parent, event, plugin, command) is stable.

Every event id is derived, one scheme for all: an emitted event's from its
parent job and index, a timer's from its schedule and instant
(:func:`~ductile.domain.schedule.timer_event_id`), and an event that arrives
from outside (a webhook delivery, a manual ``handle``) from the id of the job
it arrives with (:func:`arrival_event_id`). Those arrivals are built by
:func:`webhook_envelope` and :func:`manual_envelope`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ductile.domain.job import Command, Job, SubmittedBy
from ductile.domain.protocol import EmittedEvent, iso_utc

#: Namespace of ductile's derived ids.
NAMESPACE = uuid.UUID("6f1d8e3a-5c0b-4f7e-9a51-2d3c4b5a6e70")
#: The type of a manual ``handle`` job's event when the operator or application names none.
MANUAL_EVENT_TYPE = "manual"


@attrs.frozen(kw_only=True)
class Route:
    source: str  # ``from`` in the config
    event_type: str
    target: str  # ``to`` in the config
    command: str = Command.HANDLE.value


@attrs.frozen(kw_only=True)
class Envelope:
    """An event as the core passes it on."""

    type: str
    #: A JSON value: an object for an emitted event, any JSON for a webhook's body.
    payload: Any
    source: str
    timestamp: datetime
    event_id: str
    dedupe_key: str | None = None
    #: A webhook delivery's request headers (lower-cased names); None for other events.
    headers: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "payload": self.payload}
        if self.headers is not None:
            body["headers"] = dict(self.headers)
        body["source"] = self.source
        body["timestamp"] = iso_utc(self.timestamp)
        body["event_id"] = self.event_id
        if self.dedupe_key is not None:
            body["dedupe_key"] = self.dedupe_key
        return body


@attrs.frozen(kw_only=True)
class Target:
    """What routing needs to know about a plugin that can receive events."""

    max_attempts: int


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def event_id_for(origin: str, index: int) -> str:
    """The id of the ``index``-th event emitted by ``origin`` (a job id, a timer firing)."""
    return derived_id("event", origin, str(index))


def child_job_id(parent: str, event_id: str, plugin: str, command: str) -> str:
    return derived_id("child", parent, event_id, plugin, command)


def arrival_event_id(job_id: str) -> str:
    """The id of the event that arrives from outside with job ``job_id`` (never one it emits)."""
    return event_id_for(f"arrival:{job_id}", 0)


def webhook_envelope(
    *,
    path: str,
    event_type: str,
    payload: Any,
    headers: Mapping[str, str],
    dedupe_key: str | None,
    at: datetime,
    job_id: str,
) -> Envelope:
    """The event of a verified webhook delivery to endpoint ``path``, for ``handle`` job ``job_id``."""
    return Envelope(
        type=event_type,
        payload=payload,
        headers=headers,
        source=f"webhook:{path}",
        timestamp=at,
        event_id=arrival_event_id(job_id),
        dedupe_key=dedupe_key,
    )


def manual_envelope(
    *,
    source: str,
    event_type: str | None,
    payload: Mapping[str, Any] | None,
    dedupe_key: str | None,
    at: datetime,
    job_id: str,
) -> Envelope:
    """The event of a ``handle`` job asked for by hand (``source``: ``cli``, ``api``)."""
    return Envelope(
        type=event_type or MANUAL_EVENT_TYPE,
        payload=dict(payload) if payload is not None else {},
        source=source,
        timestamp=at,
        event_id=arrival_event_id(job_id),
        dedupe_key=dedupe_key,
    )


def wrap(event: EmittedEvent, *, source: str, at: datetime, event_id: str) -> Envelope:
    return Envelope(
        type=event.type,
        payload=event.payload,
        source=source,
        timestamp=at,
        event_id=event_id,
        dedupe_key=event.dedupe_key,
    )


def matching(routes: Iterable[Route], *, source: str, event_type: str) -> list[Route]:
    """Every route whose ``from`` and ``event_type`` equal the event's exactly, in order."""
    return [r for r in routes if r.source == source and r.event_type == event_type]


@attrs.frozen(kw_only=True)
class FanOut:
    children: tuple[Job, ...]
    #: (event type, target) pairs whose route names a plugin that is not loaded.
    unroutable: tuple[tuple[str, str], ...] = ()
    #: Event types no route matched (logged at DEBUG, dropped: not an error).
    unmatched: tuple[str, ...] = ()
    #: (event type, target) pairs not routed because the chain is at ``max_depth`` already.
    too_deep: tuple[tuple[str, str], ...] = ()


def fan_out(
    envelopes: Sequence[Envelope],
    *,
    routes: Sequence[Route],
    targets: Mapping[str, Target],
    parent_job_id: str | None,
    at: datetime,
    depth: int = 0,
    max_depth: int | None = None,
) -> FanOut:
    """The ``handle`` jobs for ``envelopes``: one per (event, matching route).

    ``depth`` is the route depth of the job that emitted them (0 for a timer);
    the children are one deeper, and none is made deeper than ``max_depth``
    (a routing loop stops there: the pairs are listed in ``too_deep``).
    """
    children: list[Job] = []
    unroutable: list[tuple[str, str]] = []
    unmatched: list[str] = []
    too_deep: list[tuple[str, str]] = []
    child_depth = depth + 1
    for env in envelopes:
        hits = matching(routes, source=env.source, event_type=env.type)
        if not hits:
            unmatched.append(env.type)
        # A route written twice is one route: the same child, not a second job.
        hits = list(dict.fromkeys(hits))
        for route in hits:
            target = targets.get(route.target)
            if target is None:
                unroutable.append((env.type, route.target))
                continue
            if max_depth is not None and child_depth > max_depth:
                too_deep.append((env.type, route.target))
                continue
            origin = parent_job_id if parent_job_id is not None else env.event_id
            children.append(
                Job(
                    id=child_job_id(origin, env.event_id, route.target, route.command),
                    plugin=route.target,
                    command=route.command,
                    payload=env.to_json(),
                    max_attempts=target.max_attempts,
                    submitted_by=SubmittedBy.ROUTE,
                    dedupe_key=env.dedupe_key,
                    created_at=at,
                    parent_job_id=parent_job_id,
                    source_event_id=env.event_id,
                    route_depth=child_depth,
                )
            )
    return FanOut(
        children=tuple(children),
        unroutable=tuple(unroutable),
        unmatched=tuple(unmatched),
        too_deep=tuple(too_deep),
    )
