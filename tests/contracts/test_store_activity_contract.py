"""The Store contract, continued: the activity log and the operator's job operations.

The activity log is appended inside the units that make each change (enqueue,
claim, settle, recover, cancel, fire, breaker resets) and by ``note``; its ids
increase and are never reused, even after retention. ``find_jobs`` pages
newest first, exactly (no job skipped or repeated while jobs arrive);
``cancel_job`` moves a queued job to dead and refuses anything else;
``job_ids_with_prefix`` answers id prefixes. Run against every store.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ductile.domain.activity import Activity, Kind, SkipReason
from ductile.domain.breaker import BreakerStatus
from ductile.domain.classify import classify
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.ports.store import Guard, JobQuery, NotQueuedError, Store
from tests.contracts.test_store_contract import (
    FAIL,
    FATAL,
    OK,
    ONE_FAILURE_OPENS,
    T0,
    TTL,
    add,
    at,
    claim,
    ctx,
    finish,
    make_job,
    planned,
    snapshot,
)
from tests.support.cases import StoreRunner

S = JobStatus


async def kinds(store: Store, after: int = 0) -> list[tuple[Kind, str | None]]:
    return [(e.activity.kind, e.activity.job_id) for e in await store.activity(after, limit=10_000)]


# --------------------------------------------------------------------------- the activity log


def test_a_job_life_is_logged_in_order_with_increasing_ids(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.last_activity_id() == 0
        assert await store.activity(0) == []
        job = make_job()
        await finish(store, job, OK, now=at(5))
        entries = await store.activity(0)
        assert [(e.activity.kind, e.activity.job_id) for e in entries] == [
            (Kind.JOB_QUEUED, job.id),
            (Kind.JOB_STARTED, job.id),
            (Kind.JOB_SUCCEEDED, job.id),
        ]
        ids = [e.id for e in entries]
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
        assert ids[0] >= 1
        assert await store.last_activity_id() == ids[-1]
        done = entries[-1].activity
        assert (done.plugin, done.command, done.at) == (job.plugin, job.command, at(5))
        assert "duration_seconds" in done.data
        assert [e.id for e in await store.activity(ids[0])] == ids[1:]
        assert [e.id for e in await store.activity(0, limit=2)] == ids[:2]

    with_store(body)


def test_a_failure_retry_and_burial_are_logged(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job(max_attempts=2)
        await finish(store, job, FAIL, now=at(1))
        retry_at = (await store.get_job(job.id)).next_retry_at  # type: ignore[union-attr]
        assert retry_at is not None
        again = await claim(store, retry_at, job)
        await store.settle(job.id, FATAL, ctx=ctx(retry_at), dedupe_ttl=TTL, token=again.claim_token)
        log = await store.activity(0)
        assert [e.activity.kind for e in log] == [
            Kind.JOB_QUEUED,
            Kind.JOB_STARTED,
            Kind.JOB_FAILED,
            Kind.JOB_RETRYING,
            Kind.JOB_STARTED,
            Kind.JOB_FAILED,
            Kind.JOB_DEAD,
        ]
        failed = log[2].activity.data
        assert failed["attempt"] == 1
        assert "boom" in failed["error"]
        assert failed["timed_out"] is False
        assert log[3].activity.data["attempt"] == 2
        assert log[3].activity.data["next_retry_at"] == retry_at.isoformat()
        assert log[5].activity.data["attempt"] == 2
        assert "bad config" in log[6].activity.data["error"]

    with_store(body)


def test_a_breaker_opening_and_a_reset_are_logged(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job(submitted_by=SubmittedBy.SCHEDULER, max_attempts=1)
        await finish(store, job, FAIL, now=at(1), context=ctx(at(1), breaker=ONE_FAILURE_OPENS))
        opened = [e.activity for e in await store.activity(0) if e.activity.kind is Kind.BREAKER_OPENED]
        assert len(opened) == 1
        assert (opened[0].plugin, opened[0].command, opened[0].data["failures"]) == ("alpha", "poll", 1)
        last = await store.last_activity_id()
        reset = await store.reset_breakers("alpha", now=at(9), actor="phone")
        assert [b.status for b in reset] == [BreakerStatus.OPEN]
        [closed] = await store.activity(last)
        assert closed.activity.kind is Kind.BREAKER_CLOSED
        assert (closed.activity.at, closed.activity.data["actor"]) == (at(9), "phone")
        assert await store.reset_breakers("alpha", now=at(10)) == []
        assert await store.activity(closed.id) == []

    with_store(body)


def test_a_fire_and_a_skip_are_logged_with_their_lag(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        due = planned("alpha", at(0))
        await store.put_planned(due)
        job = make_job(created=at(2), submitted_by=SubmittedBy.SCHEDULER)
        guard = Guard(plugin="alpha", command="poll", max_outstanding=1)
        nxt = planned("alpha", at(60))
        await store.fire(due=due, next_run=nxt, jobs=[job], guard=guard, actor=Actor.SCHEDULER,
                         now=at(2), dedupe_ttl=TTL)  # fmt: skip
        again = planned("alpha", at(120))
        blocked = await store.fire(due=nxt, next_run=again, jobs=[make_job(created=at(61))], guard=guard,
                                   actor=Actor.SCHEDULER, now=at(61), dedupe_ttl=TTL)  # fmt: skip
        assert blocked.blocked is not None
        await store.fire(due=again, next_run=planned("alpha", at(180)), jobs=[], guard=None,
                         actor=Actor.SCHEDULER, now=at(500), dedupe_ttl=TTL,
                         skipped=SkipReason.MISSED)  # fmt: skip
        fires = [e.activity for e in await store.activity(0) if e.activity.kind.value.startswith("schedule.")]
        assert [a.kind for a in fires] == [Kind.SCHEDULE_FIRED, Kind.SCHEDULE_SKIPPED, Kind.SCHEDULE_SKIPPED]
        assert fires[0].data["jobs"] == [job.id]
        assert fires[0].data["lag_seconds"] == 2.0
        assert fires[1].data["reason"] == "poll_guard"
        assert fires[1].data["lag_seconds"] == 1.0
        assert fires[2].data["reason"] == "missed"
        assert fires[2].data["lag_seconds"] == 380.0

    with_store(body)


def test_recovery_and_reload_cancellation_are_logged(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        running, queued = make_job("alpha"), make_job("beta", created=at(1))
        await add(store, running)
        await claim(store, at(1), running)
        await add(store, queued)
        last = await store.last_activity_id()
        await store.recover(at(2))
        await store.cancel_queued("beta", reason="plugin removed", now=at(3))
        assert await kinds(store, last) == [(Kind.JOB_RETRYING, running.id), (Kind.JOB_CANCELLED, queued.id)]

    with_store(body)


def test_note_appends_an_entry_the_app_decided_on(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        entry = Activity(
            kind=Kind.CONFIG_REJECTED, at=at(1), data={"error": "plugins.x: bad", "n": [1, None]}
        )
        await store.note(entry)
        [stored] = await store.activity(0)
        assert stored.activity == entry

    with_store(body)


def test_a_rolled_back_unit_logs_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job()
        await add(store, job)
        before = await snapshot(store)
        with pytest.raises(NotQueuedError):
            await store.cancel_job("no-such-job", reason="x", actor=Actor.API, now=at(1))
        await claim(store, at(1), job)
        moved = await snapshot(store)
        with pytest.raises(NotQueuedError):
            await store.cancel_job(job.id, reason="x", actor=Actor.API, now=at(2))
        assert await snapshot(store) == moved
        assert len(moved["activity"]) == len(before["activity"]) + 1

    with_store(body)


def test_retention_prunes_old_entries_and_ids_are_never_reused(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        old = make_job()
        await finish(store, old, OK, now=at(1))
        last = await store.last_activity_id()
        assert (await store.delete_finished(at(100))).jobs == 1
        assert await store.activity(0) == []
        assert await store.last_activity_id() == last
        fresh = make_job(created=at(200))
        await add(store, fresh)
        [entry] = await store.activity(0)
        assert entry.id > last
        assert entry.activity.job_id == fresh.id

    with_store(body)


# --------------------------------------------------------------------------- cancel_job


def test_cancel_job_buries_a_queued_job_with_the_reason(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job()
        await add(store, job)
        dead = await store.cancel_job(job.id, reason="cancelled by phone", actor=Actor.API, now=at(3))
        assert (dead.status, dead.last_error, dead.completed_at) == (S.DEAD, "cancelled by phone", at(3))
        assert await store.get_job(job.id) == dead
        last = (await store.transitions(job.id))[-1]
        assert (last.from_status, last.to_status, last.actor, last.reason) == (
            S.QUEUED, S.DEAD, Actor.API, "cancelled by phone")  # fmt: skip
        assert (await store.activity(0))[-1].activity.kind is Kind.JOB_CANCELLED
        with pytest.raises(NotQueuedError) as caught:
            await store.cancel_job(job.id, reason="again", actor=Actor.API, now=at(4))
        assert caught.value.status is S.DEAD

    with_store(body)


# --------------------------------------------------------------------------- find_jobs


def test_find_jobs_filters_and_pages_newest_first(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        jobs = [
            make_job("alpha" if i % 3 else "beta", "poll" if i % 2 else "handle", created=at(i // 2),
                     submitted_by=SubmittedBy.CLI if i % 4 == 0 else SubmittedBy.API)
            for i in range(40)
        ]  # fmt: skip
        for job in jobs:
            await add(store, job)
        newest_first = list(reversed(jobs))  # created_at ties: the later inserted first
        seen = []
        page = await store.find_jobs(JobQuery(limit=7))
        while True:
            seen += page.jobs
            if page.next is None:
                break
            page = await store.find_jobs(JobQuery(limit=7, after=page.next))
        assert [j.id for j in seen] == [j.id for j in newest_first]
        wanted = [j for j in newest_first if j.plugin == "alpha" and j.command == "poll"]
        found = await store.find_jobs(JobQuery(plugin="alpha", command="poll", limit=100))
        assert [j.id for j in found.jobs] == [j.id for j in wanted]
        assert found.next is None
        by_cli = await store.find_jobs(JobQuery(submitted_by="cli", limit=100))
        assert {j.id for j in by_cli.jobs} == {j.id for j in jobs if j.submitted_by is SubmittedBy.CLI}
        window = await store.find_jobs(JobQuery(since=at(5), until=at(8), limit=100))
        assert {j.id for j in window.jobs} == {j.id for j in jobs if at(5) <= j.created_at < at(8)}
        assert (await store.find_jobs(JobQuery(statuses=frozenset({S.DEAD})))).jobs == ()

    with_store(body)


def test_find_jobs_pages_stay_exact_while_jobs_arrive(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        first = [make_job(created=at(i)) for i in range(10)]
        for job in first:
            await add(store, job)
        page = await store.find_jobs(JobQuery(limit=4))
        for i in range(5):  # newer jobs arrive between pages: they belong before page one
            await add(store, make_job(created=at(100 + i)))
        rest = []
        while page.next is not None:
            page = await store.find_jobs(JobQuery(limit=4, after=page.next))
            rest += page.jobs
        assert [j.id for j in rest] == [j.id for j in reversed(first[:6])]

    with_store(body)


def test_find_jobs_text_looks_in_errors_stderr_and_output(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a = make_job(max_attempts=1)
        body = json.dumps({"status": "error", "error": "Token EXPIRED for 100%_sure", "retry": False})
        failed = SpawnOutcome(exit_code=0, stdout=body.encode(), stderr_tail=b"trace line\n")
        await finish(store, a, classify(failed), now=at(1))
        b = make_job(created=at(2))
        noisy = SpawnOutcome(
            exit_code=0, stdout=b'{"status": "ok"}', stderr_tail=b"warning: disk nearly full\n"
        )
        await finish(store, b, classify(noisy), now=at(3))
        c = make_job(created=at(4))
        await finish(store, c, classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}')), now=at(5))

        async def ids(text: str) -> set[str]:
            return {j.id for j in (await store.find_jobs(JobQuery(text=text, limit=50))).jobs}

        assert await ids("token expired") == {a.id}
        assert await ids("100%_") == {a.id}
        assert await ids("%") == {a.id}
        assert await ids("DISK nearly") == {b.id}
        assert await ids("trace line") == {a.id}
        assert await ids('"status": "ok"') == {b.id, c.id}
        assert await ids("nowhere") == set()

    with_store(body)


# --------------------------------------------------------------------------- ids by prefix


def test_job_ids_with_prefix(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        for job_id in ("abcdef01-1", "abcdef01-2", "abcdef02-1", "b"):
            await add(store, make_job(job_id=job_id))
        assert await store.job_ids_with_prefix("abcdef01") == ["abcdef01-1", "abcdef01-2"]
        assert await store.job_ids_with_prefix("abcdef0", limit=10) == [
            "abcdef01-1",
            "abcdef01-2",
            "abcdef02-1",
        ]
        assert await store.job_ids_with_prefix("abcdef02") == ["abcdef02-1"]
        assert await store.job_ids_with_prefix("abcdef03") == []
        assert await store.job_ids_with_prefix("b") == ["b"]

    with_store(body)


def test_oldest_queued_at(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.oldest_queued_at() is None
        first, second = make_job(created=at(5)), make_job(created=at(9))
        await add(store, second)
        await add(store, first)
        assert await store.oldest_queued_at() == at(5)
        await claim(store, at(10), first)
        assert await store.oldest_queued_at() == at(9)

    with_store(body)


def test_a_retried_job_keeps_its_link(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job(retry_of="an-old-job", created=T0 + timedelta(seconds=1))
        await add(store, job)
        assert (await store.get_job(job.id)) == job

    with_store(body)
