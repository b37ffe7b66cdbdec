"""The Store contract, continued: lifecycle events (issue 15) committed with the change.

A job's death, a recovery, a breaker's change, a skipped run, a refused
plugin: each unit that makes the change inserts the ``handle`` jobs of the
routes ``from: ductile`` in the same transaction, with ids derived from what
the event is about, so a replay finds them. A job made from a lifecycle event
never makes one about itself (only a counter moves). Run against every store
in ``conftest.store_factory``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ductile.domain import lifecycle
from ductile.domain.activity import Activity, Kind, SkipReason
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy
from ductile.domain.lifecycle import Alerts
from ductile.domain.outcome import Interrupted
from ductile.domain.routing import Route, Target
from ductile.domain.schedule import schedule_key
from ductile.ports.store import StaleJobError, Store
from tests.contracts.test_store_contract import (
    FAIL,
    FATAL,
    TTL,
    add,
    at,
    claim,
    ctx,
    finish,
    make_job,
    planned,
    token_of,
)
from tests.support.cases import StoreRunner

S = JobStatus
ALERTS = Alerts.of(
    [
        Route(source="ductile", event_type="job.dead", target="alert"),
        Route(source="ductile", event_type="job.failed", target="alert"),
        Route(source="ductile", event_type="job.recovered", target="alert"),
        Route(source="ductile", event_type="breaker.opened", target="alert"),
        Route(source="ductile", event_type="breaker.closed", target="alert"),
        Route(source="ductile", event_type="schedule.skipped", target="alert"),
        Route(source="ductile", event_type="plugin.refused", target="alert"),
    ],
    {"alert": Target(max_attempts=2), "alpha": Target(max_attempts=3)},
    dedupe_ttl=TTL,
)


async def alert_jobs(store: Store) -> list[Job]:
    """The alert plugin's jobs, oldest first."""
    return sorted(await store.list_jobs(plugin="alert", limit=1000), key=lambda j: (j.created_at, j.id))


def test_a_death_makes_one_routed_job_dead_in_the_same_commit(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job("alpha", "poll", max_attempts=1)
        committed = await finish(store, job, FATAL, now=at(5), context=ctx(at(5), alerts=ALERTS))
        assert committed.settlement.job.status is S.DEAD
        [told] = committed.alerts
        assert told.created
        [alert] = await alert_jobs(store)
        assert alert.id == told.job_id
        assert (alert.command, alert.submitted_by, alert.route_depth) == ("handle", SubmittedBy.ROUTE, 1)
        event = alert.payload
        assert (event["source"], event["type"]) == ("ductile", "job.dead")
        payload = event["payload"]
        assert payload["job_id"] == job.id
        assert (payload["plugin"], payload["command"], payload["attempt"]) == ("alpha", "poll", 1)
        assert payload["last_error"] == "bad config"
        assert event["dedupe_key"] == f"job.dead:{job.id}:1"

    with_store(body)


def test_a_retried_failure_is_news_only_for_a_plugin_that_asked(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        quiet = make_job("alpha", "poll", max_attempts=3)
        committed = await finish(store, quiet, FAIL, now=at(5), context=ctx(at(5), alerts=ALERTS))
        assert committed.settlement.job.status is S.QUEUED
        assert committed.alerts == ()
        loud_alerts = Alerts.of(ALERTS.routes, ALERTS.targets, on_failed_attempt=["beta"], dedupe_ttl=TTL)
        loud = make_job("beta", "poll", max_attempts=3, created=at(6))
        committed = await finish(store, loud, FAIL, now=at(7), context=ctx(at(7), alerts=loud_alerts))
        assert len(committed.alerts) == 1
        [alert] = await alert_jobs(store)
        assert alert.payload["type"] == "job.failed"
        payload = alert.payload["payload"]
        assert (payload["job_id"], payload["attempt"]) == (loud.id, 1)
        assert payload["next_retry_at"] is not None

    with_store(body)


def test_a_notifiers_own_death_makes_no_event_only_a_count(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await finish(
            store, make_job("alpha", max_attempts=1), FATAL, now=at(1), context=ctx(at(1), alerts=ALERTS)
        )
        [alert] = await alert_jobs(store)
        claimed = await claim(store, at(2), alert)
        committed = await store.settle(
            alert.id, FATAL, ctx=ctx(at(3), alerts=ALERTS), dedupe_ttl=TTL, token=claimed.claim_token
        )
        assert committed.settlement.job.status is S.DEAD
        assert committed.alerts == ()
        assert len(await alert_jobs(store)) == 1
        assert (await store.counts()).get(lifecycle.SUPPRESSED_COUNT) == 1

    with_store(body)


def test_recovery_tells_of_requeued_and_dead_orphans_once_even_when_replayed(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        again = await add(store, make_job("alpha", max_attempts=2))
        await claim(store, at(1), again)
        last = await add(store, make_job("alpha", max_attempts=1, created=at(2)))
        await claim(store, at(3), last)
        settlements = await store.recover(at(10), alerts=ALERTS)
        assert {s.job.id: s.job.status for s in settlements} == {again.id: S.QUEUED, last.id: S.DEAD}
        kinds = {j.payload["payload"]["job_id"]: j.payload["type"] for j in await alert_jobs(store)}
        assert kinds == {again.id: "job.recovered", last.id: "job.dead"}
        assert await store.recover(at(11), alerts=ALERTS) == []
        assert len(await alert_jobs(store)) == 2

    with_store(body)


def test_a_death_settled_again_is_refused_and_told_once(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job("alpha", max_attempts=1)
        await finish(store, job, Interrupted(), now=at(5), context=ctx(at(5), alerts=ALERTS))
        with pytest.raises(StaleJobError):
            await store.settle(
                job.id,
                FATAL,
                ctx=ctx(at(6), alerts=ALERTS),
                dedupe_ttl=TTL,
                token=await token_of(store, job.id),
            )
        [alert] = await alert_jobs(store)
        assert alert.payload["payload"]["job_id"] == job.id

    with_store(body)


def test_a_cancelled_queued_job_is_a_death(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job("alpha"))
        await store.cancel_job(job.id, reason="cancelled by me", actor=Actor.CLI, now=at(1), alerts=ALERTS)
        gone = await add(store, make_job("gamma", created=at(2)))
        await store.cancel_queued("gamma", reason="plugin removed", now=at(3), alerts=ALERTS)
        told = {
            j.payload["payload"]["job_id"]: j.payload["payload"]["reason"] for j in await alert_jobs(store)
        }
        assert told == {job.id: "cancelled by me", gone.id: "plugin removed"}

    with_store(body)


def test_a_breaker_opening_and_closing_are_events(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        policy = BreakerPolicy(threshold=1, reset_after=timedelta(minutes=30))
        job = make_job("alpha", submitted_by=SubmittedBy.SCHEDULER, max_attempts=1)
        await finish(store, job, FAIL, now=at(5), context=ctx(at(5), alerts=ALERTS, breaker=policy))
        await store.reset_breakers("alpha", now=at(6), alerts=ALERTS)
        events = [(j.payload["type"], j.payload["payload"]) for j in await alert_jobs(store)]
        kinds = sorted(kind for kind, _ in events)
        assert kinds == ["breaker.closed", "breaker.opened", "job.dead"]
        opened = next(p for kind, p in events if kind == "breaker.opened")
        assert (opened["plugin"], opened["command"], opened["failures"]) == ("alpha", "poll", 1)
        assert opened["reopens_at"] == "2026-03-01T12:30:05Z"

    with_store(body)


def test_a_skipped_run_is_an_event(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        key = schedule_key("alpha", "default")
        due, nxt = planned(key, at(10)), planned(key, at(70))
        await store.put_planned(due)
        result = await store.fire(
            due=due,
            next_run=nxt,
            jobs=[],
            guard=None,
            actor=Actor.SCHEDULER,
            now=at(10),
            dedupe_ttl=TTL,
            skipped=SkipReason.MISSED,
            alerts=ALERTS,
        )
        [told] = result.alerts
        [alert] = await alert_jobs(store)
        assert alert.id == told.job_id
        assert alert.payload["type"] == "schedule.skipped"
        assert alert.payload["payload"]["reason"] == "missed"
        assert alert.payload["payload"]["schedule"] == key

    with_store(body)


def test_the_same_refusal_is_told_once_within_the_dedupe_window(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        for seconds in (0, 60, 120):
            entry = Activity(
                kind=Kind.PLUGIN_REFUSED, at=at(seconds), plugin="broken", data={"reason": "no manifest"}
            )
            await store.note(entry, alerts=ALERTS)
        [alert] = await alert_jobs(store)
        assert alert.payload["payload"] == {"plugin": "broken", "reason": "no manifest"}
        refusals = [e for e in await store.activity(0) if e.activity.kind is Kind.PLUGIN_REFUSED]
        assert len(refusals) == 3

    with_store(body)


def test_without_routes_from_ductile_nothing_is_added(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        none = Alerts.of([Route(source="alpha", event_type="job.dead", target="alert")], ALERTS.targets)
        committed = await finish(
            store, make_job("alpha", max_attempts=1), FATAL, now=at(1), context=ctx(at(1), alerts=none)
        )
        assert committed.alerts == ()
        assert await alert_jobs(store) == []

    with_store(body)
