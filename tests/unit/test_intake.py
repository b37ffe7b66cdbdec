"""Intake: the one path by which a job asked for from outside is queued (webhook, CLI, API)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ductile.app import intake
from ductile.app.intake import EnqueueRefusedError, Manual, Submission, Webhook
from ductile.app.runtime import Runtime
from ductile.domain.config import Endpoint, PluginConfig
from ductile.domain.job import Actor, Job, SubmittedBy
from ductile.domain.routing import arrival_event_id
from ductile.fakes import InMemoryStore
from ductile.fakes.catalog import DictCatalog
from ductile.ports.store import EnqueueResult
from tests.support.builders import make_config, manifest
from tests.support.rigs import T0

HOOK = Endpoint(path="/hook/gh", plugin="alpha", secret="s3cr3t", event_type="github.push")


class Desk:
    """intake.enqueue with its inputs at hand: a runtime, a store, an id source, a doorbell."""

    def __init__(self) -> None:
        catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "handle"))
        catalog.refusals["beta"] = "directory is world-writable"
        config = make_config(PluginConfig(name="alpha"), PluginConfig(name="beta"))
        self.runtime = Runtime(config=config, discovery=catalog.discover(config))
        self.store = InMemoryStore()
        self.ids = (f"job-{n}" for n in itertools.count(1))
        self.drawn = 0
        self.rings = 0

    def new_id(self) -> str:
        self.drawn += 1
        return next(self.ids)

    def ring(self) -> None:
        self.rings += 1

    def enqueue(self, submission: Submission, *, bell: bool = True, at: Any = T0) -> EnqueueResult:
        notify: Callable[[], None] | None = self.ring if bell else None
        return asyncio.run(
            intake.enqueue(
                submission, runtime=self.runtime, store=self.store, now=at, new_id=self.new_id, notify=notify
            )
        )

    def job(self, job_id: str) -> Job:
        job = asyncio.run(self.store.get_job(job_id))
        assert job is not None
        return job

    def history(self, job_id: str) -> list[tuple[object, ...]]:
        return [(t.from_status, t.to_status, t.actor) for t in asyncio.run(self.store.transitions(job_id))]


@pytest.fixture
def desk() -> Desk:
    return Desk()


def test_a_webhook_delivery_becomes_a_handle_job_whose_payload_is_its_event(desk: Desk) -> None:
    body = {"ref": "main", "commits": [{"id": 1}, None]}
    delivery = Webhook(endpoint=HOOK, payload=body, headers={"x-github-event": "push"}, dedupe_key="d-1")
    result = desk.enqueue(delivery, at=T0 + timedelta(milliseconds=250))

    assert result.created
    job = desk.job(result.job_id)
    assert (job.plugin, job.command, job.submitted_by, job.dedupe_key) == (
        "alpha",
        "handle",
        SubmittedBy.WEBHOOK,
        "d-1",
    )
    assert job.payload == {
        "type": "github.push",
        "payload": body,
        "headers": {"x-github-event": "push"},
        "source": "webhook:/hook/gh",
        "timestamp": "2026-03-02T09:00:00.250Z",
        "event_id": arrival_event_id(job.id),
        "dedupe_key": "d-1",
    }
    assert desk.history(job.id) == [(None, "queued", Actor.WEBHOOK)]
    assert (desk.drawn, desk.rings) == (1, 1)  # one fresh id per arrival: the event's is derived from it


def test_a_webhook_is_kept_even_while_its_plugin_cannot_run(desk: Desk) -> None:
    refused = Webhook(endpoint=Endpoint(path="/b", plugin="beta", secret="s"), payload=[1, 2], headers={})
    absent = Webhook(endpoint=Endpoint(path="/g", plugin="ghost", secret="s"), payload="text", headers={})
    assert desk.enqueue(refused).created
    assert desk.enqueue(absent).created


def test_a_manual_handle_job_receives_its_payload_wrapped_in_an_event(desk: Desk) -> None:
    result = desk.enqueue(
        Manual(plugin="alpha", command="handle", payload={"n": 1}, submitted_by=SubmittedBy.CLI)
    )
    typed = desk.enqueue(Manual(plugin="alpha", command="handle", event_type="invoice.paid"))

    job = desk.job(result.job_id)
    assert job.payload == {
        "type": "manual",
        "payload": {"n": 1},
        "source": "cli",
        "timestamp": "2026-03-02T09:00:00Z",
        "event_id": arrival_event_id(job.id),
    }
    other = desk.job(typed.job_id).payload
    assert (other["type"], other["payload"], other["source"]) == ("invoice.paid", {}, "api")
    assert other["event_id"] != job.payload["event_id"]


def test_a_job_of_another_command_gets_no_event_and_keeps_its_payload_as_given(desk: Desk) -> None:
    result = desk.enqueue(Manual(plugin="alpha", payload={"since": "yesterday"}))
    assert desk.job(result.job_id).payload == {"since": "yesterday"}
    assert desk.job(desk.enqueue(Manual(plugin="alpha")).job_id).payload == {}


@pytest.mark.parametrize(
    ("plugin", "command", "reason"),
    [
        ("beta", "poll", "plugin 'beta' is refused: directory is world-writable"),
        ("alpha", "health", "plugin 'alpha' does not support 'health' (its manifest lists: handle, poll)"),
    ],
)
def test_a_strict_manual_job_is_refused_with_the_reason_and_nothing_is_written(
    desk: Desk, plugin: str, command: str, reason: str
) -> None:
    with pytest.raises(EnqueueRefusedError) as caught:
        desk.enqueue(Manual(plugin=plugin, command=command))
    assert str(caught.value) == reason
    assert asyncio.run(desk.store.queue_depth()) == 0
    assert (desk.drawn, desk.rings) == (0, 0)
    assert desk.enqueue(Manual(plugin=plugin, command=command, strict=False)).created


@pytest.mark.parametrize(
    ("manual", "reason"),
    [
        (
            Manual(plugin="alpha", command="handle", payload={"items": [{"name": "\ud83d"}]}),
            "payload.items[0].name holds a lone surrogate escape",
        ),
        (Manual(plugin="alpha", payload={"x": float("nan")}), "payload.x is infinity or not-a-number"),
        (Manual(plugin="alpha", payload={"x": {1, 2}}), "payload.x is a set, which JSON cannot carry"),
        (Manual(plugin="alpha", payload={"x": {3: "a"}}), "payload.x has a key that is not text (3)"),
        (Manual(plugin="alpha", dedupe_key="k\udcff"), "dedupe_key holds a lone surrogate escape"),
        (
            Manual(plugin="alpha", command="handle", event_type="\ud800", strict=False),
            "event_type holds a lone surrogate escape",
        ),
    ],
)
def test_a_manual_job_json_cannot_carry_is_refused_naming_where(
    desk: Desk, manual: Manual, reason: str
) -> None:
    """Issue 19, item 8: such a job used to be accepted and then fail at every store write."""
    with pytest.raises(EnqueueRefusedError) as caught:
        desk.enqueue(manual)
    assert str(caught.value).startswith(reason), str(caught.value)
    assert asyncio.run(desk.store.queue_depth()) == 0
    assert (desk.drawn, desk.rings) == (0, 0)


def test_without_a_dispatcher_to_wake_the_job_is_still_queued(desk: Desk) -> None:
    """`ductile run` writes to the daemon's store from another process: nothing to notify."""
    result = desk.enqueue(Manual(plugin="alpha", submitted_by=SubmittedBy.CLI), bell=False)
    assert result.created
    assert desk.history(result.job_id) == [(None, "queued", Actor.CLI)]
    assert desk.rings == 0


def test_a_duplicate_is_dropped_logged_and_wakes_nobody(desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    first = desk.enqueue(Webhook(endpoint=HOOK, payload={}, headers={}, dedupe_key="d-1"))
    again = desk.enqueue(Webhook(endpoint=HOOK, payload={}, headers={}, dedupe_key="d-1"))

    assert (again.created, again.job_id, desk.rings) == (False, first.job_id, 1)
    lines = [
        (r.getMessage(), r.__dict__.get("job_id"))
        for r in caplog.records
        if r.__dict__.get("component") == "intake"
    ]
    assert lines == [
        ("job queued (handle)", first.job_id),
        (f"duplicate dropped: dedupe_key 'd-1' matches job {first.job_id}", first.job_id),
    ]
