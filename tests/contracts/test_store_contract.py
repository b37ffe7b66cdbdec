"""The Store contract: every documented behaviour of ``ductile.ports.store.Store``.

Run against every implementation in ``conftest.store_factory``. Time is a
fixed, explicit ``now`` (aware UTC) passed to each call: nothing sleeps.
Decisions are the domain's (``settle``, ``recover``, dedupe, breaker), so
expectations are computed with the same pure functions on the same inputs
wherever a test is about *committing* a decision rather than making it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus
from ductile.domain.classify import RunEnd, Verdict, classify
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy, Transition, creation
from ductile.domain.recovery import recover as recover_job
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route, Target
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext, settle
from ductile.fakes import spawner
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import (
    Committed,
    EnqueueResult,
    Guard,
    InitRecord,
    Pruned,
    Rewound,
    RunningJob,
    StaleJobError,
    Store,
)
from tests.support import builders
from tests.support.cases import StoreFactory, StoreRunner

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
S = JobStatus


def at(seconds: float) -> datetime:
    """``T0 + seconds``."""
    return T0 + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- builders and helpers


_serial = itertools.count(1)


def next_id() -> str:
    """A UUID-shaped id that sorts *before* every id made earlier in the process.

    Made deterministic (a failure reproduces) and anti-ordered on purpose: a store
    that orders by id where it should order by ``created_at`` or insertion fails
    every time, not only when random ids happen to come out in the wrong order.
    """
    n = 0xFFFFFFFF - next(_serial)
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def make_job(
    plugin: str = "alpha",
    command: str = "poll",
    *,
    created: datetime = T0,
    job_id: str | None = None,
    **fields: Any,
) -> Job:
    """A queued job; anything else by keyword."""
    return builders.job(job_id or next_id(), plugin, command, created_at=created, **fields)


def ok(**fields: Any) -> Verdict:
    """A successful run's verdict (the store's settle takes runs classified by the engine)."""
    return classify(spawner.ok(**fields))


def error(message: str, **fields: Any) -> Verdict:
    return classify(spawner.error(message, **fields))


OK = ok()
FAIL = error("boom")  # retryable
FATAL = error("bad config", retry=False)  # not retryable: dead at once


def ctx(now: datetime, **fields: Any) -> SettleContext:
    return SettleContext(now=now, **fields)


async def add(store: Store, job: Job, *, actor: Actor = Actor.API, now: datetime | None = None) -> Job:
    """Enqueue ``job`` and insist it was created."""
    result = await store.enqueue(job, actor=actor, now=now or job.created_at, dedupe_ttl=TTL)
    assert result == EnqueueResult(job.id, True), f"expected {job.id} to be created, got {result}"
    return job


async def claim(store: Store, now: datetime, expected: Job | str) -> Job:
    """Claim the next job and insist it is ``expected``."""
    want = expected if isinstance(expected, str) else expected.id
    got = await store.claim_next(now)
    assert got is not None, f"expected to claim {want}, nothing was claimable"
    assert got.id == want, f"expected to claim {want}, claimed {got.id}"
    return got


async def finish(
    store: Store,
    job: Job,
    outcome: RunEnd = OK,
    *,
    now: datetime,
    context: SettleContext | None = None,
    actor: Actor = Actor.API,
) -> Committed:
    """Enqueue ``job``, claim it (it must be the oldest claimable) and settle it at ``now``."""
    await add(store, job, actor=actor)
    claimed = await claim(store, now, job)
    return await store.settle(
        job.id, outcome, ctx=context or ctx(now), dedupe_ttl=TTL, token=claimed.claim_token
    )


async def token_of(store: Store, job_id: str) -> int:
    """The claim token the job has now (0 for a job never claimed or not stored): what the
    claimer of its current claim presents. Tests about the fence itself use explicit tokens."""
    job = await store.get_job(job_id)
    return 0 if job is None else job.claim_token


def moves(transitions: Sequence[Transition]) -> list[tuple[JobStatus | None, JobStatus, Actor]]:
    return [(t.from_status, t.to_status, t.actor) for t in transitions]


PLUGINS = ("alpha", "beta", "gamma")
COMMANDS = ("poll", "handle", "health")


async def snapshot(store: Store, *extra_ids: str) -> dict[str, Any]:
    """Everything the port lets one observe, as one comparable value."""
    jobs = sorted(await store.list_jobs(limit=100_000), key=lambda j: j.id)
    ids = sorted({j.id for j in jobs} | set(extra_ids))
    return {
        "jobs": jobs,
        "job_by_id": {i: await store.get_job(i) for i in ids},
        "transitions": {i: await store.transitions(i) for i in ids},
        "runs": {i: await store.runs(i) for i in ids},
        "running": sorted(await store.running(), key=lambda r: r.job.id),
        "queue_depth": await store.queue_depth(),
        "next_retry_at": await store.next_retry_at(),
        "outstanding": {(p, c): await store.outstanding(p, c) for p in PLUGINS for c in COMMANDS},
        "states": {p: await store.get_state(p) for p in PLUGINS},
        "breakers": sorted(await store.breakers(), key=lambda b: (b.plugin, b.command)),
        "planned": sorted(await store.all_planned(), key=lambda r: r.key),
        "inits": {p: await store.get_init(p) for p in PLUGINS},
        "activity": await store.activity(0, limit=1_000_000),
        "last_activity_id": await store.last_activity_id(),
    }


def planned(key: str, when: datetime, *, fingerprint: str = "fp1") -> PlannedRun:
    return PlannedRun(key=key, fingerprint=fingerprint, nominal_at=when, planned_at=when, offset=timedelta(0))


ONE_FAILURE_OPENS = BreakerPolicy(threshold=1, reset_after=timedelta(minutes=30))
ROUTES = (
    Route(source="alpha", event_type="new", target="beta"),
    Route(source="alpha", event_type="new", target="gamma"),
    Route(source="alpha", event_type="other", target="beta"),
)
TARGETS = {"beta": Target(max_attempts=3), "gamma": Target(max_attempts=5)}
HANDLE = ProcessHandle(pid=4242, pgid=4242, start_time=987654)


# --------------------------------------------------------------------------- enqueue


def test_enqueue_stores_the_job_whole_with_its_creation_transition(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job(
            "alpha",
            "handle",
            created=T0 + timedelta(microseconds=123_456),
            payload={"type": "webhook", "payload": {"n": [1, 2.5, None, "ü"], "deep": {"x": True}}},
            max_attempts=7,
            submitted_by=SubmittedBy.WEBHOOK,
            dedupe_key="delivery-1",
            parent_job_id=next_id(),
            source_event_id=next_id(),
        )
        result = await store.enqueue(job, actor=Actor.WEBHOOK, now=job.created_at, dedupe_ttl=TTL)
        assert result == EnqueueResult(job.id, True)
        assert await store.get_job(job.id) == job
        assert await store.transitions(job.id) == [creation(job, actor=Actor.WEBHOOK)]
        assert await store.runs(job.id) == []
        assert await store.list_jobs() == [job]
        assert await store.queue_depth() == 1
        assert await store.outstanding("alpha", "handle") == 1

    with_store(body)


def test_a_store_that_writes_reports_no_write_fault(with_store: StoreRunner) -> None:
    """``write_fault`` is the store's own record (no I/O): None while writes work, before and after them.
    (Faults themselves need a real machine to break: tests/integration/test_sqlite_faults.py.)"""

    async def body(store: Store) -> None:
        assert store.write_fault() is None
        job = make_job("alpha")
        await store.enqueue(job, actor=Actor.API, now=job.created_at, dedupe_ttl=TTL)
        assert await store.claim_next(job.created_at) is not None
        assert store.write_fault() is None

    with_store(body)


def test_enqueue_records_the_actor_it_is_given(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        for actor in (Actor.SCHEDULER, Actor.CLI, Actor.ROUTE):
            job = await add(store, make_job(submitted_by=SubmittedBy(actor.value)), actor=actor)
            [line] = await store.transitions(job.id)
            assert (line.from_status, line.to_status, line.actor, line.at) == (None, S.QUEUED, actor, T0)

    with_store(body)


def test_enqueue_drops_a_duplicate_of_a_queued_job_and_returns_the_existing_id(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        first = await add(store, make_job(dedupe_key="k"))
        second = make_job(dedupe_key="k", created=at(5), payload={"other": 1})
        result = await store.enqueue(second, actor=Actor.WEBHOOK, now=at(5), dedupe_ttl=TTL)
        assert result == EnqueueResult(first.id, False)
        assert await store.get_job(second.id) is None
        assert await store.transitions(second.id) == []
        assert await store.list_jobs() == [first]
        assert await store.queue_depth() == 1

    with_store(body)


def test_dedupe_identity_is_plugin_command_and_key(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await add(store, make_job("alpha", "handle", dedupe_key="k"))
        # same key, another plugin or another command: distinct jobs (fan-out never collapses)
        await add(store, make_job("beta", "handle", dedupe_key="k"))
        await add(store, make_job("alpha", "poll", dedupe_key="k"))
        # another key on the same pair: distinct too
        await add(store, make_job("alpha", "handle", dedupe_key="k2"))
        assert await store.queue_depth() == 4

    with_store(body)


def test_jobs_without_a_dedupe_key_never_dedupe(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        for _ in range(3):
            await add(store, make_job("alpha", "poll"))
        assert await store.queue_depth() == 3

    with_store(body)


def test_a_success_blocks_its_identity_within_the_ttl_and_not_after(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        done_at = at(60)
        first = make_job(dedupe_key="k")
        await finish(store, first, now=done_at)
        inside = make_job(dedupe_key="k", created=done_at + TTL - timedelta(seconds=1))
        result = await store.enqueue(inside, actor=Actor.API, now=inside.created_at, dedupe_ttl=TTL)
        assert result == EnqueueResult(first.id, False)
        assert await store.get_job(inside.id) is None
        after = make_job(dedupe_key="k", created=done_at + TTL + timedelta(seconds=1))
        await add(store, after)
        # the ttl is the caller's: a shorter one lets a new job through sooner
        short = make_job("alpha", "poll", dedupe_key="k2")  # created at T0: older than "after"
        await finish(store, short, now=done_at + timedelta(seconds=1))
        again = make_job(dedupe_key="k2", created=done_at + timedelta(minutes=10))
        result = await store.enqueue(
            again, actor=Actor.API, now=again.created_at, dedupe_ttl=timedelta(minutes=5)
        )
        assert result == EnqueueResult(again.id, True)

    with_store(body)


def test_a_running_job_blocks_its_identity(with_store: StoreRunner) -> None:
    """D1 as amended: a redelivery while the first job runs returns the running job."""

    async def body(store: Store) -> None:
        first = await add(store, make_job(dedupe_key="k"))
        claimed = await claim(store, at(1), first)
        dup = make_job(dedupe_key="k", created=at(2))
        assert await store.enqueue(dup, actor=Actor.WEBHOOK, now=at(2), dedupe_ttl=TTL) == EnqueueResult(
            first.id, False
        )
        assert await store.get_job(dup.id) is None
        # once it has ended badly, the identity is free again
        await store.settle(first.id, FATAL, ctx=ctx(at(3)), dedupe_ttl=TTL, token=claimed.claim_token)
        await add(store, make_job(dedupe_key="k", created=at(4)))

    with_store(body)


def test_dead_jobs_do_not_block_their_identity(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        failed = make_job(dedupe_key="k")
        committed = await finish(store, failed, FATAL, now=at(1))
        assert committed.settlement.job.status is S.DEAD
        await add(store, make_job(dedupe_key="k", created=at(2)))
        cancelled = await add(store, make_job("beta", dedupe_key="c", created=at(3)))
        assert await store.cancel_queued("beta", reason="plugin removed", now=at(4)) == [cancelled.id]
        await add(store, make_job("beta", dedupe_key="c", created=at(5)))

    with_store(body)


def test_a_job_requeued_for_retry_blocks_its_identity(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        first = make_job(dedupe_key="k")
        committed = await finish(store, first, FAIL, now=at(1))
        assert committed.settlement.job.status is S.QUEUED
        dup = make_job(dedupe_key="k", created=at(2))
        assert await store.enqueue(dup, actor=Actor.API, now=at(2), dedupe_ttl=TTL) == EnqueueResult(
            first.id, False
        )

    with_store(body)


def test_enqueue_of_an_existing_id_creates_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        assert await store.enqueue(job, actor=Actor.API, now=at(1), dedupe_ttl=TTL) == EnqueueResult(
            job.id, False
        )
        claimed = await claim(store, at(2), job)
        # even a different job value under the same id changes nothing
        clash = make_job("beta", "handle", job_id=job.id, created=at(3))
        assert await store.enqueue(clash, actor=Actor.API, now=at(3), dedupe_ttl=TTL) == EnqueueResult(
            job.id, False
        )
        assert await store.get_job(job.id) == claimed
        assert len(await store.transitions(job.id)) == 2  # creation and claim, no second creation
        assert await store.queue_depth() == 0

    with_store(body)


# --------------------------------------------------------------------------- claim_next


def test_claim_takes_the_oldest_created_first(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        late = await add(store, make_job(created=at(2)))
        early = await add(store, make_job(created=at(1)))
        await claim(store, at(10), early)
        await claim(store, at(10), late)
        assert await store.claim_next(at(10)) is None

    with_store(body)


def test_claim_breaks_created_at_ties_by_insertion_order(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        jobs = [await add(store, make_job(created=T0)) for _ in range(6)]
        for job in jobs:
            await claim(store, at(1), job)

    with_store(body)


def test_claim_moves_the_job_to_running_in_the_same_unit(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job(payload={"a": 1}))
        claimed = await claim(store, at(7), job)
        # the claim raises the token (the fence) and takes the lowest free slot of the lane; the
        # node is the store's own (None for a store of one process)
        assert claimed == attrs.evolve(
            job, status=S.RUNNING, started_at=at(7), claim_token=1, slot=0, node=claimed.node
        )
        assert await store.get_job(job.id) == claimed
        transitions = await store.transitions(job.id)
        assert moves(transitions) == [(None, S.QUEUED, Actor.API), (S.QUEUED, S.RUNNING, Actor.DISPATCHER)]
        assert transitions[-1].at == at(7)
        assert await store.queue_depth() == 0
        assert await store.outstanding("alpha", "poll") == 1
        assert await store.running() == [RunningJob(job=claimed, process=None)]

    with_store(body)


def test_claim_returns_none_when_nothing_is_claimable(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.claim_next(T0) is None
        job = await add(store, make_job())
        await claim(store, at(1), job)
        assert await store.claim_next(at(2)) is None  # running is not claimable
        await store.settle(job.id, OK, ctx=ctx(at(3)), dedupe_ttl=TTL, token=await token_of(store, job.id))
        assert await store.claim_next(at(4)) is None  # nor is succeeded

    with_store(body)


def test_claim_respects_next_retry_at_but_keeps_fifo_by_created_at(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        first = make_job(created=T0)
        policy = RetryPolicy(backoff_base=timedelta(seconds=30))
        committed = await finish(store, first, FAIL, now=at(10), context=ctx(at(10), retry=policy, draw=0.0))
        retry_at = committed.settlement.job.next_retry_at
        assert retry_at == at(40)
        later = await add(store, make_job(created=at(20)))
        # the retry is not yet due: the younger job goes first
        await claim(store, at(21), later)
        assert await store.claim_next(retry_at - timedelta(microseconds=1)) is None
        # due (at exactly next_retry_at): the retried job, attempt 2
        again = await claim(store, retry_at, first)
        assert again.attempt == 2
        assert again.next_retry_at is None

        # both eligible: the older created_at wins, whenever it was re-queued
        older = make_job("beta", created=at(100))
        await add(store, older)
        await claim(store, at(101), older)
        await store.settle(
            older.id,
            FAIL,
            ctx=ctx(at(102), retry=policy),
            dedupe_ttl=TTL,
            token=await token_of(store, older.id),
        )
        younger = await add(store, make_job("beta", created=at(103)))
        await claim(store, at(1000), older)
        await claim(store, at(1000), younger)

    with_store(body)


def test_a_job_enqueued_with_a_future_next_retry_at_waits_for_it(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job(next_retry_at=at(60)))
        assert await store.claim_next(at(59)) is None
        assert await store.next_retry_at() == at(60)
        await claim(store, at(60), job)

    with_store(body)


def test_a_claimed_job_is_not_claimed_twice(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        got = await asyncio.gather(*(store.claim_next(at(1)) for _ in range(4)))
        claimed = [j for j in got if j is not None]
        assert [j.id for j in claimed] == [job.id], f"claimed {len(claimed)} times: {got}"
        assert await store.claim_next(at(2)) is None
        assert len(await store.transitions(job.id)) == 2

    with_store(body)


def test_claim_by_id_takes_that_job_out_of_fifo_order(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        older = await add(store, make_job("alpha", "poll", created=T0))
        init = await add(store, make_job("alpha", "init", created=at(5)))
        claimed = await store.claim(init.id, at(6))
        assert claimed == attrs.evolve(
            init, status=S.RUNNING, started_at=at(6), claim_token=1, slot=0, node=claimed.node
        )
        assert await store.get_job(init.id) == claimed
        last = (await store.transitions(init.id))[-1]
        assert (last.from_status, last.to_status, last.actor, last.at) == (
            S.QUEUED,
            S.RUNNING,
            Actor.DISPATCHER,
            at(6),
        )
        assert await store.running() == [RunningJob(job=claimed, process=None)]
        assert await store.get_job(older.id) == older  # the older job is still queued, untouched
        await claim(store, at(7), older)

    with_store(body)


def test_claim_by_id_of_a_job_that_is_not_queued_returns_none_and_changes_nothing(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        done = make_job("alpha", created=T0)
        await finish(store, done, now=at(1))
        running = await add(store, make_job("beta", created=at(2)))
        await claim(store, at(3), running)
        before = await snapshot(store, "no-such-job")
        for job_id in (done.id, running.id, "no-such-job"):
            assert await store.claim(job_id, at(4)) is None, job_id
        assert await snapshot(store, "no-such-job") == before

    with_store(body)


def test_a_job_is_claimed_once_whether_by_id_or_next(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        got = await asyncio.gather(
            store.claim(job.id, at(1)),
            store.claim_next(at(1)),
            store.claim(job.id, at(1)),
            store.claim_next(at(1)),
        )
        assert [j.id for j in got if j is not None] == [job.id], f"claimed more than once: {got}"
        assert len(await store.transitions(job.id)) == 2

    with_store(body)


# --------------------------------------------------------------------------- record_process, running


def test_record_process_makes_running_return_the_handle(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        other = await add(store, make_job("beta", created=at(1)))
        claimed = await claim(store, at(2), job)
        claimed_other = await claim(store, at(3), other)
        await store.record_process(job.id, HANDLE, token=await token_of(store, job.id))
        running = sorted(await store.running(), key=lambda r: r.job.created_at)
        assert running == [
            RunningJob(job=claimed, process=HANDLE),
            RunningJob(job=claimed_other, process=None),
        ]

    with_store(body)


def test_record_process_on_a_job_that_is_not_running_raises_stale(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        done = make_job("beta", created=T0)
        await finish(store, done, now=at(2))
        queued = await add(store, make_job(created=at(3)))
        before = await snapshot(store)
        for job_id in (queued.id, done.id, "no-such-job"):
            with pytest.raises(StaleJobError):
                await store.record_process(job_id, HANDLE, token=await token_of(store, job_id))
        assert await snapshot(store) == before
        assert await store.running() == []

    with_store(body)


def test_settled_and_recovered_jobs_leave_running(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a = await add(store, make_job())
        b = await add(store, make_job(created=at(1)))
        await claim(store, at(2), a)
        await claim(store, at(3), b)
        await store.record_process(a.id, HANDLE, token=await token_of(store, a.id))
        await store.record_process(
            b.id, attrs.evolve(HANDLE, pid=4343, pgid=4343), token=await token_of(store, b.id)
        )
        await store.settle(a.id, OK, ctx=ctx(at(4)), dedupe_ttl=TTL, token=await token_of(store, a.id))
        assert [r.job.id for r in await store.running()] == [b.id]
        await store.recover(at(5))
        assert await store.running() == []

    with_store(body)


# --------------------------------------------------------------------------- settle


def test_settle_commits_the_domain_settlement_of_a_success(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        claimed = await claim(store, at(1), job)
        outcome = ok(state_updates={"cursor": 5, "token": {"v": "x"}}, logs=[{"message": "hi"}])
        context = ctx(at(9))
        expected = settle(claimed, outcome, ctx=context, state={}, breaker=None)
        committed = await store.settle(
            job.id, outcome, ctx=context, dedupe_ttl=TTL, token=await token_of(store, job.id)
        )
        assert committed.settlement == expected
        assert committed.children == ()
        stored = await store.get_job(job.id)
        assert stored == expected.job
        assert stored is not None
        assert (stored.status, stored.completed_at) == (S.SUCCEEDED, at(9))
        assert moves(await store.transitions(job.id)) == [
            (None, S.QUEUED, Actor.API),
            (S.QUEUED, S.RUNNING, Actor.DISPATCHER),
            (S.RUNNING, S.SUCCEEDED, Actor.DISPATCHER),
        ]
        assert (await store.transitions(job.id))[2:] == list(expected.transitions)
        assert await store.runs(job.id) == [expected.run]
        assert await store.get_state("alpha") == {"cursor": 5, "token": {"v": "x"}}
        assert await store.outstanding("alpha", "poll") == 0

    with_store(body)


def test_settle_commits_a_retryable_failure_as_failed_then_queued(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        claimed = await claim(store, at(1), job)
        context = ctx(at(5), draw=0.5)
        expected = settle(claimed, FAIL, ctx=context)
        committed = await store.settle(
            job.id, FAIL, ctx=context, dedupe_ttl=TTL, token=await token_of(store, job.id)
        )
        assert committed.settlement == expected
        stored = await store.get_job(job.id)
        assert stored == expected.job
        assert stored is not None
        assert (stored.status, stored.attempt, stored.last_error) == (S.QUEUED, 2, "boom")
        assert stored.next_retry_at == at(5) + timedelta(seconds=30 + 15)
        assert moves((await store.transitions(job.id))[2:]) == [
            (S.RUNNING, S.FAILED, Actor.DISPATCHER),
            (S.FAILED, S.QUEUED, Actor.RETRY),
        ]
        assert await store.runs(job.id) == [expected.run]
        assert await store.queue_depth() == 1
        assert await store.next_retry_at() == stored.next_retry_at

    with_store(body)


def test_settle_buries_a_job_out_of_attempts(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job(max_attempts=1)
        committed = await finish(store, job, FAIL, now=at(3))
        stored = await store.get_job(job.id)
        assert stored == committed.settlement.job
        assert stored is not None
        assert (stored.status, stored.completed_at) == (S.DEAD, at(3))
        assert moves((await store.transitions(job.id))[2:]) == [
            (S.RUNNING, S.FAILED, Actor.DISPATCHER),
            (S.FAILED, S.DEAD, Actor.DISPATCHER),
        ]

    with_store(body)


def test_each_run_appends_a_run_record(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job()
        first = await finish(store, job, FAIL, now=at(1))
        second_claim = await claim(store, at(1000), job)
        assert second_claim.attempt == 2
        second = await store.settle(
            job.id, OK, ctx=ctx(at(1001)), dedupe_ttl=TTL, token=await token_of(store, job.id)
        )
        runs = await store.runs(job.id)
        assert runs == [first.settlement.run, second.settlement.run]
        assert [r.attempt for r in runs] == [1, 2]

    with_store(body)


def test_recent_runs_are_newest_finished_first_with_their_jobs_and_filter_by_plugin(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        a1 = make_job("alpha", created=at(0))
        b1 = make_job("beta", created=at(0))
        first = await finish(store, a1, FAIL, now=at(10))  # alpha attempt 1 at t=10
        await finish(store, b1, OK, now=at(20))
        await claim(store, at(1000), a1)  # its retry, finished last although created first
        await store.settle(a1.id, OK, ctx=ctx(at(1001)), dedupe_ttl=TTL, token=await token_of(store, a1.id))
        a2 = make_job("alpha", created=at(5))
        await finish(store, a2, OK, now=at(1001))  # same instant as a1's retry, recorded after

        views = await store.recent_runs(limit=10)
        assert [(v.job.id, v.run.attempt, v.run.finished_at) for v in views] == [
            (a2.id, 1, at(1001)),
            (a1.id, 2, at(1001)),
            (b1.id, 1, at(20)),
            (a1.id, 1, at(10)),
        ]
        assert views[1].job.status is S.SUCCEEDED  # the job as it is now
        assert views[3].run == first.settlement.run
        assert [v.job.id for v in await store.recent_runs(plugin="beta")] == [b1.id]
        assert [(v.job.id, v.run.attempt) for v in await store.recent_runs(plugin="alpha", limit=2)] == [
            (a2.id, 1),
            (a1.id, 2),
        ]
        assert await store.recent_runs(plugin="nobody") == []

    with_store(body)


def test_state_is_shallow_merged_over_settles_and_a_failure_leaves_it(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.get_state("alpha") == {}
        await finish(store, make_job(), ok(state_updates={"a": 1, "b": {"x": 1}}), now=at(1))
        await finish(store, make_job(created=at(2)), ok(state_updates={"b": 2, "c": [3]}), now=at(3))
        assert await store.get_state("alpha") == {"a": 1, "b": 2, "c": [3]}
        await finish(store, make_job(created=at(4)), FATAL, now=at(5))
        await finish(store, make_job(created=at(6)), OK, now=at(7))  # ok without updates
        assert await store.get_state("alpha") == {"a": 1, "b": 2, "c": [3]}
        assert await store.get_state("beta") == {}

    with_store(body)


def test_get_state_returns_a_copy(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await finish(store, make_job(), ok(state_updates={"nested": {"n": 1}, "list": [1]}), now=at(1))
        got = await store.get_state("alpha")
        got["nested"]["n"] = 99
        got["list"].append(2)
        got["new"] = True
        assert await store.get_state("alpha") == {"nested": {"n": 1}, "list": [1]}
        empty = await store.get_state("beta")
        empty["x"] = 1
        assert await store.get_state("beta") == {}

    with_store(body)


def test_settle_creates_routed_children_in_order_with_route_creations(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        parent = await add(store, make_job())
        claimed = await claim(store, at(1), parent)
        outcome = ok(events=[{"type": "new", "payload": {"n": 1}, "dedupe_key": "e1"}, {"type": "other"}])
        context = ctx(at(2), routes=ROUTES, targets=TARGETS)
        expected = settle(claimed, outcome, ctx=context)
        assert [(c.plugin, c.dedupe_key) for c in expected.children] == [
            ("beta", "e1"),
            ("gamma", "e1"),
            ("beta", None),
        ]
        committed = await store.settle(
            parent.id, outcome, ctx=context, dedupe_ttl=TTL, token=await token_of(store, parent.id)
        )
        assert committed.children == tuple(EnqueueResult(c.id, True) for c in expected.children)
        for child in expected.children:
            assert await store.get_job(child.id) == child
            assert await store.transitions(child.id) == [creation(child, actor=Actor.ROUTE)]
        assert await store.queue_depth() == 3
        # FIFO among siblings created at the same instant follows their order
        for child in expected.children:
            await claim(store, at(3), child)

    with_store(body)


def test_settle_dedupes_children_against_existing_jobs(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        # beta/handle/"e1" is already queued; gamma's copy of the event is not a duplicate of it
        waiting = await add(store, make_job("beta", "handle", dedupe_key="e1", created=at(100)))
        parent = await add(store, make_job(created=T0))
        claimed = await claim(store, at(1), parent)
        outcome = ok(events=[{"type": "new", "dedupe_key": "e1"}])
        context = ctx(at(2), routes=ROUTES, targets=TARGETS)
        expected = settle(claimed, outcome, ctx=context)
        beta_child, gamma_child = expected.children
        committed = await store.settle(
            parent.id, outcome, ctx=context, dedupe_ttl=TTL, token=await token_of(store, parent.id)
        )
        assert committed.children == (EnqueueResult(waiting.id, False), EnqueueResult(gamma_child.id, True))
        assert await store.get_job(beta_child.id) is None
        assert await store.outstanding("beta", "handle") == 1
        assert await store.outstanding("gamma", "handle") == 1

    with_store(body)


def test_settle_dedupes_children_against_a_recent_success(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        done = make_job("beta", "handle", dedupe_key="e1", created=T0)
        await finish(store, done, now=at(1))
        parent = await add(store, make_job(created=at(2)))
        await claim(store, at(3), parent)
        outcome = ok(events=[{"type": "other", "dedupe_key": "e1"}])
        committed = await store.settle(
            parent.id,
            outcome,
            ctx=ctx(at(4), routes=ROUTES, targets=TARGETS),
            dedupe_ttl=TTL,
            token=await token_of(store, parent.id),
        )
        assert committed.children == (EnqueueResult(done.id, False),)
        assert await store.queue_depth() == 0

    with_store(body)


def test_child_creation_is_idempotent_for_the_same_parent_event_and_target(
    with_store: StoreRunner,
) -> None:
    """D8: one (parent, source event, plugin, command) yields at most one job, even when
    the parent's completion is replayed. A replay is simulated by enqueuing, before the
    settle, the very child the settle will produce (same id), and a job of the same child
    identity under another id."""

    async def body(store: Store) -> None:
        parent = await add(store, make_job(created=T0))
        claimed = await claim(store, at(1), parent)
        outcome = ok(events=[{"type": "new"}])  # no dedupe key: only child identity can catch it
        context = ctx(at(2), routes=ROUTES, targets=TARGETS)
        beta_child, gamma_child = settle(claimed, outcome, ctx=context).children
        await add(store, beta_child, actor=Actor.ROUTE)
        gamma_twin = attrs.evolve(gamma_child, id=next_id())
        await add(store, gamma_twin, actor=Actor.ROUTE)
        before = {i: await store.transitions(i) for i in (beta_child.id, gamma_twin.id)}

        committed = await store.settle(
            parent.id, outcome, ctx=context, dedupe_ttl=TTL, token=await token_of(store, parent.id)
        )

        assert committed.children == (
            EnqueueResult(beta_child.id, False),
            EnqueueResult(gamma_twin.id, False),
        )
        assert await store.get_job(gamma_child.id) is None
        assert {i: await store.transitions(i) for i in before} == before
        assert await store.queue_depth() == 2

    with_store(body)


def test_settle_updates_the_breaker_of_scheduler_jobs_only(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        context = ctx(at(1), breaker=ONE_FAILURE_OPENS)
        api = make_job("alpha", "poll", max_attempts=1)
        await finish(store, api, FAIL, now=at(1), context=context)
        assert await store.get_breaker("alpha", "poll") is None

        scheduled = make_job("alpha", "poll", created=at(2), submitted_by=SubmittedBy.SCHEDULER)
        committed = await finish(
            store, scheduled, FAIL, now=at(3), context=ctx(at(3), breaker=ONE_FAILURE_OPENS)
        )
        breaker = await store.get_breaker("alpha", "poll")
        assert breaker == committed.settlement.breaker
        assert breaker == Breaker(
            plugin="alpha", command="poll", status=BreakerStatus.OPEN, failures=1, opened_at=at(3)
        )
        assert await store.breakers() == [breaker]

        # queued jobs still run, and a success closes the breaker
        again = await claim(store, at(1000), scheduled)
        await store.settle(
            again.id, OK, ctx=ctx(at(1001)), dedupe_ttl=TTL, token=await token_of(store, again.id)
        )
        closed = await store.get_breaker("alpha", "poll")
        assert closed is not None
        assert (closed.status, closed.failures) == (BreakerStatus.CLOSED, 0)

    with_store(body)


def test_settle_of_a_job_that_is_not_running_raises_stale_and_changes_nothing(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        done = make_job(created=T0)
        await finish(store, done, ok(events=[{"type": "new"}]), now=at(1), context=ctx(at(1)))
        queued = await add(store, make_job("beta", created=at(2)))
        before = await snapshot(store, "no-such-job")
        context = ctx(at(3), routes=ROUTES, targets=TARGETS)
        for job_id in (queued.id, done.id, "no-such-job"):
            with pytest.raises(StaleJobError):
                await store.settle(
                    job_id,
                    ok(events=[{"type": "new"}]),
                    ctx=context,
                    dedupe_ttl=TTL,
                    token=await token_of(store, job_id),
                )
        assert await snapshot(store, "no-such-job") == before

    with_store(body)


# --------------------------------------------------------------------------- recover


def test_recover_requeues_or_buries_every_running_job_and_nothing_else(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        retryable = await add(store, make_job("alpha", created=T0))
        exhausted = await add(store, make_job("beta", created=at(1), max_attempts=1))
        done = make_job("gamma", created=at(2))
        await claim(store, at(3), retryable)
        await claim(store, at(3), exhausted)
        await finish(store, done, now=at(4))
        waiting = await add(store, make_job("alpha", "health", created=at(5)))
        await store.record_process(retryable.id, HANDLE, token=await token_of(store, retryable.id))
        running_before = {r.job.id: r.job for r in await store.running()}
        untouched = {j: await store.get_job(j) for j in (done.id, waiting.id)}
        untouched_history = {j: await store.transitions(j) for j in (done.id, waiting.id)}

        settlements = await store.recover(at(10))

        expected = {i: recover_job(job, now=at(10)) for i, job in running_before.items()}
        assert {s.job.id: s for s in settlements} == expected
        requeued = await store.get_job(retryable.id)
        assert requeued == expected[retryable.id].job
        assert requeued is not None
        assert (requeued.status, requeued.attempt, requeued.next_retry_at) == (S.QUEUED, 2, None)
        assert moves((await store.transitions(retryable.id))[-1:]) == [(S.RUNNING, S.QUEUED, Actor.RECOVERY)]
        buried = await store.get_job(exhausted.id)
        assert buried == expected[exhausted.id].job
        assert buried is not None
        assert (buried.status, buried.completed_at) == (S.DEAD, at(10))
        assert moves((await store.transitions(exhausted.id))[-1:]) == [(S.RUNNING, S.DEAD, Actor.RECOVERY)]
        assert await store.runs(retryable.id) == [expected[retryable.id].run]
        assert {j: await store.get_job(j) for j in untouched} == untouched
        assert {j: await store.transitions(j) for j in untouched} == untouched_history
        assert await store.running() == []

    with_store(body)


def test_recover_is_idempotent(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        await claim(store, at(1), job)
        assert len(await store.recover(at(2))) == 1
        after_first = await snapshot(store)
        assert await store.recover(at(3)) == []
        assert await snapshot(store) == after_first

    with_store(body)


def test_recover_with_nothing_running_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await add(store, make_job())
        await finish(store, make_job("beta", created=at(-1)), now=at(1))
        before = await snapshot(store)
        assert await store.recover(at(2)) == []
        assert await snapshot(store) == before

    with_store(body)


# --------------------------------------------------------------------------- cancel_queued


def test_cancel_queued_buries_only_that_plugins_queued_jobs(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        running = await add(store, make_job("alpha", created=T0))
        await claim(store, at(1), running)
        q1 = await add(store, make_job("alpha", "poll", created=at(2)))
        q2 = await add(store, make_job("alpha", "handle", created=at(3), next_retry_at=at(500)))
        other = await add(store, make_job("beta", created=at(4)))
        keep = {j: await store.get_job(j) for j in (running.id, other.id)}

        cancelled = await store.cancel_queued("alpha", reason="plugin removed", now=at(10))

        assert sorted(cancelled) == sorted([q1.id, q2.id])
        for job in (q1, q2):
            stored = await store.get_job(job.id)
            assert stored is not None
            assert (stored.status, stored.completed_at, stored.last_error) == (
                S.DEAD,
                at(10),
                "plugin removed",
            )
            last = (await store.transitions(job.id))[-1]
            assert (last.from_status, last.to_status, last.actor, last.reason, last.at) == (
                S.QUEUED,
                S.DEAD,
                Actor.RELOAD,
                "plugin removed",
                at(10),
            )
        assert {j: await store.get_job(j) for j in keep} == keep
        assert await store.queue_depth() == 1
        assert await store.cancel_queued("alpha", reason="plugin removed", now=at(11)) == []
        assert await store.cancel_queued("nobody", reason="plugin disabled", now=at(11)) == []

    with_store(body)


# --------------------------------------------------------------------------- delete_finished


def test_delete_finished_removes_old_terminal_jobs_with_their_history(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        old_ok = make_job("alpha", created=T0)
        await finish(store, old_ok, now=at(10))
        old_dead = make_job("beta", created=at(11), max_attempts=1)
        await finish(store, old_dead, FAIL, now=at(20))
        boundary = make_job("gamma", created=at(21))
        await finish(store, boundary, now=at(30))  # completed exactly at the cutoff: kept
        recent = make_job("alpha", created=at(31))
        await finish(store, recent, now=at(40))
        running = await add(store, make_job("beta", created=at(41)))
        await claim(store, at(42), running)
        queued = await add(store, make_job("gamma", created=at(-100)))  # old, but not finished

        assert await store.delete_finished(at(30)) == Pruned(jobs=2, done=True)

        for gone in (old_ok, old_dead):
            assert await store.get_job(gone.id) is None
            assert await store.transitions(gone.id) == []
            assert await store.runs(gone.id) == []
        for kept in (boundary, recent, running, queued):
            assert await store.get_job(kept.id) is not None
            assert await store.transitions(kept.id) != []
        assert {j.id for j in await store.list_jobs()} == {boundary.id, recent.id, running.id, queued.id}
        assert await store.delete_finished(at(30)) == Pruned(jobs=0, done=True)

    with_store(body)


def test_deleted_jobs_no_longer_block_their_dedupe_identity(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        done = make_job(dedupe_key="k")
        await finish(store, done, now=at(1))
        assert await store.delete_finished(at(2)) == Pruned(jobs=1, done=True)
        fresh = make_job(dedupe_key="k", created=at(3))
        result = await store.enqueue(fresh, actor=Actor.API, now=at(3), dedupe_ttl=timedelta(days=365))
        assert result == EnqueueResult(fresh.id, True)

    with_store(body)


# --------------------------------------------------------------------------- queries


def test_list_jobs_is_newest_first_with_filters_and_limit(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a = await add(store, make_job("alpha", created=at(2)))
        b = await add(store, make_job("beta", created=at(1)))
        c = await add(store, make_job("alpha", created=at(3)))
        d = await add(store, make_job("beta", created=at(3)))  # ties c: inserted later, so newer
        e = await add(store, make_job("gamma", created=at(0)))
        await claim(store, at(5), e)
        assert [j.id for j in await store.list_jobs()] == [d.id, c.id, a.id, b.id, e.id]
        assert [j.id for j in await store.list_jobs(limit=2)] == [d.id, c.id]
        assert [j.id for j in await store.list_jobs(plugin="alpha")] == [c.id, a.id]
        assert [j.id for j in await store.list_jobs(statuses=[S.RUNNING])] == [e.id]
        assert [j.id for j in await store.list_jobs(statuses=[S.QUEUED], plugin="beta")] == [d.id, b.id]
        assert [j.id for j in await store.list_jobs(statuses=[S.QUEUED, S.RUNNING], limit=3)] == [
            d.id,
            c.id,
            a.id,
        ]
        assert await store.list_jobs(statuses=[S.SUCCEEDED]) == []
        assert await store.list_jobs(statuses=[]) == []
        assert await store.list_jobs(plugin="nobody") == []

    with_store(body)


def test_queue_depth_and_outstanding_count_what_they_say(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.queue_depth() == 0
        assert await store.outstanding("alpha", "poll") == 0
        running = await add(store, make_job("alpha", "poll", created=T0))
        await claim(store, at(1), running)
        await add(store, make_job("alpha", "poll", created=at(2)))
        await add(store, make_job("alpha", "poll", created=at(3), next_retry_at=at(999)))
        await add(store, make_job("alpha", "handle", created=at(4)))
        done = make_job("beta", "poll", created=at(-10))
        await finish(store, done, now=at(5))
        assert await store.queue_depth() == 3  # waiting for a retry time still counts
        assert await store.outstanding("alpha", "poll") == 3
        assert await store.outstanding("alpha", "handle") == 1
        assert await store.outstanding("beta", "poll") == 0

    with_store(body)


def test_next_retry_at_is_the_earliest_among_queued_jobs(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.next_retry_at() is None
        plain = await add(store, make_job(created=T0))
        assert await store.next_retry_at() is None
        late = await add(store, make_job(created=at(1), next_retry_at=at(300)))
        early = await add(store, make_job("beta", created=at(2), next_retry_at=at(200)))
        assert await store.next_retry_at() == at(200)
        await claim(store, at(3), plain)
        assert await store.next_retry_at() == at(200)
        await claim(store, at(200), early)
        assert await store.next_retry_at() == at(300)
        await claim(store, at(300), late)
        assert await store.next_retry_at() is None

    with_store(body)


# --------------------------------------------------------------------------- breakers


def test_reset_breakers_closes_the_plugins_breakers_and_returns_the_open_ones(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        def scheduled(plugin: str, command: str, seconds: float) -> Job:
            return make_job(
                plugin, command, created=at(seconds), max_attempts=1, submitted_by=SubmittedBy.SCHEDULER
            )

        three = BreakerPolicy(threshold=3)
        await finish(store, scheduled("alpha", "poll", 0), FAIL, now=at(1), context=ctx(at(1), breaker=three))
        await finish(
            store,
            scheduled("alpha", "health", 2),
            FAIL,
            now=at(3),
            context=ctx(at(3), breaker=ONE_FAILURE_OPENS),
        )
        await finish(
            store,
            scheduled("beta", "poll", 4),
            FAIL,
            now=at(5),
            context=ctx(at(5), breaker=ONE_FAILURE_OPENS),
        )
        alpha_health = await store.get_breaker("alpha", "health")
        beta_poll = await store.get_breaker("beta", "poll")
        assert alpha_health is not None
        assert alpha_health.is_open
        assert beta_poll is not None
        assert beta_poll.is_open
        before_alpha_poll = await store.get_breaker("alpha", "poll")
        assert before_alpha_poll is not None
        assert (before_alpha_poll.status, before_alpha_poll.failures) == (BreakerStatus.CLOSED, 1)

        assert await store.reset_breakers("alpha") == [alpha_health]

        for command in ("poll", "health"):
            after = await store.get_breaker("alpha", command)
            assert after is None or (after.status, after.failures) == (BreakerStatus.CLOSED, 0), after
        assert await store.get_breaker("beta", "poll") == beta_poll
        assert [b for b in await store.breakers() if b.is_open] == [beta_poll]
        assert await store.reset_breakers("alpha") == []
        assert await store.reset_breakers("nobody") == []

    with_store(body)


def test_breakers_lists_every_stored_breaker(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.breakers() == []
        assert await store.get_breaker("alpha", "poll") is None
        for i, plugin in enumerate(("beta", "alpha")):
            job = make_job(plugin, created=at(i), max_attempts=1, submitted_by=SubmittedBy.SCHEDULER)
            await finish(store, job, FAIL, now=at(10 + i), context=ctx(at(10 + i), breaker=ONE_FAILURE_OPENS))
        listed = sorted(await store.breakers(), key=lambda b: (b.plugin, b.command))
        assert listed == [await store.get_breaker("alpha", "poll"), await store.get_breaker("beta", "poll")]

    with_store(body)


# --------------------------------------------------------------------------- schedule index


def test_planned_runs_are_put_read_replaced_and_deleted(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.planned("alpha:poll") is None
        assert await store.all_planned() == []
        run = attrs.evolve(planned("alpha:poll", at(60)), offset=timedelta(seconds=-7.5), snapped=True)
        other = planned("beta:poll", at(30))
        await store.put_planned(run)
        await store.put_planned(other)
        assert await store.planned("alpha:poll") == run
        assert sorted(await store.all_planned(), key=lambda r: r.key) == [run, other]
        replaced = planned("alpha:poll", at(120), fingerprint="fp2")
        await store.put_planned(replaced)
        assert await store.planned("alpha:poll") == replaced
        assert len(await store.all_planned()) == 2
        await store.delete_planned("alpha:poll")
        assert await store.planned("alpha:poll") is None
        await store.delete_planned("alpha:poll")  # deleting what is not there is fine
        assert await store.all_planned() == [other]

    with_store(body)


def test_rewind_moves_plans_retries_and_open_breakers_back_in_one_unit(with_store: StoreRunner) -> None:
    """ADR 0045: the wall clock stepped back; each pending instant keeps its remaining real time."""
    step = timedelta(hours=1)

    async def body(store: Store) -> None:
        stored = planned("alpha:poll", at(300))
        moved = planned("alpha:poll", at(300) - step)
        stale = planned("beta:poll", at(600))  # replaced by a firing in between: left alone
        await store.put_planned(stored)
        await store.put_planned(attrs.evolve(stale, planned_at=at(660)))
        retrying = make_job(dedupe_key="r")
        failed = await finish(store, retrying, FAIL, now=at(1))
        retry_at = failed.settlement.job.next_retry_at
        assert retry_at is not None
        tripped = make_job("gamma", submitted_by=SubmittedBy.SCHEDULER, created=at(3))
        await finish(store, tripped, FATAL, now=at(4), context=ctx(at(4), breaker=ONE_FAILURE_OPENS))
        [opened] = [b for b in await store.breakers() if b.plugin == "gamma"]
        assert opened.status is BreakerStatus.OPEN
        waiting = await add(store, make_job("beta", created=at(5)))  # no retry time: untouched

        done = await store.rewind(step=step, plans=[(stored, moved), (stale, planned("beta:poll", at(0)))])

        assert done == Rewound(plans=1, retries=1, breakers=1)
        assert await store.planned("alpha:poll") == moved
        assert (await store.planned("beta:poll")) == attrs.evolve(stale, planned_at=at(660))
        job = await store.get_job(retrying.id)
        assert job is not None
        assert job.next_retry_at == retry_at - step
        assert job.status is S.QUEUED
        assert await store.get_job(waiting.id) == waiting
        [after] = [b for b in await store.breakers() if b.plugin == "gamma"]
        assert after == attrs.evolve(opened, opened_at=at(4) - step)
        assert await store.next_retry_at() == retry_at - step

    with_store(body)


def test_due_is_half_open_and_earliest_first(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        runs = [planned(f"k{i}", at(60 * i)) for i in range(5)]
        for run in (runs[3], runs[0], runs[4], runs[1], runs[2]):
            await store.put_planned(run)
        assert await store.due(at(60), at(180)) == [runs[1], runs[2]]
        assert await store.due(at(0), at(10_000)) == runs
        assert await store.due(at(61), at(120)) == []
        assert await store.due(at(120), at(120)) == []

    with_store(body)


def test_fire_enqueues_and_advances_when_due_is_current(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        due, nxt = planned("alpha:poll", at(60)), planned("alpha:poll", at(120))
        await store.put_planned(due)
        job = make_job(created=at(61), submitted_by=SubmittedBy.SCHEDULER)
        result = await store.fire(
            due=due, next_run=nxt, jobs=[job], guard=None, actor=Actor.SCHEDULER, now=at(61), dedupe_ttl=TTL
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (EnqueueResult(job.id, True),), None)
        assert await store.planned("alpha:poll") == nxt
        assert await store.get_job(job.id) == job
        assert await store.transitions(job.id) == [creation(job, actor=Actor.SCHEDULER)]

    with_store(body)


def test_fire_with_a_stale_due_does_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        due, nxt = planned("alpha:poll", at(60)), planned("alpha:poll", at(120))
        await store.put_planned(due)
        first = make_job(created=at(61))
        await store.fire(
            due=due, next_run=nxt, jobs=[first], guard=None, actor=Actor.SCHEDULER, now=at(61), dedupe_ttl=TTL
        )
        before = await snapshot(store)
        second = make_job("beta", created=at(62))
        later = planned("alpha:poll", at(180))
        result = await store.fire(
            due=due,
            next_run=later,
            jobs=[second],
            guard=None,
            actor=Actor.SCHEDULER,
            now=at(62),
            dedupe_ttl=TTL,
        )
        assert (result.fired, result.jobs, result.blocked) == (False, (), None)
        assert await store.get_job(second.id) is None
        assert await snapshot(store) == before
        # a key with no planned run at all is stale too
        ghost = planned("ghost", at(60))
        result = await store.fire(
            due=ghost,
            next_run=planned("ghost", at(120)),
            jobs=[second],
            guard=None,
            actor=Actor.SCHEDULER,
            now=at(62),
            dedupe_ttl=TTL,
        )
        assert result.fired is False
        assert await snapshot(store) == before

    with_store(body)


def test_fire_blocked_by_the_poll_guard_still_advances(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await add(store, make_job("alpha", "poll", created=T0))
        await add(store, make_job("alpha", "health", created=T0))  # another command does not count
        due, nxt = planned("alpha:poll", at(60)), planned("alpha:poll", at(120))
        await store.put_planned(due)
        job = make_job("alpha", "poll", created=at(61))
        guard = Guard(plugin="alpha", command="poll", max_outstanding=1)
        result = await store.fire(
            due=due, next_run=nxt, jobs=[job], guard=guard, actor=Actor.SCHEDULER, now=at(61), dedupe_ttl=TTL
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (), "poll_guard")
        assert await store.planned("alpha:poll") == nxt
        assert await store.get_job(job.id) is None
        assert await store.outstanding("alpha", "poll") == 1

        # below the limit the guard lets it through
        roomy = Guard(plugin="alpha", command="poll", max_outstanding=2)
        result = await store.fire(
            due=nxt,
            next_run=planned("alpha:poll", at(180)),
            jobs=[job],
            guard=roomy,
            actor=Actor.SCHEDULER,
            now=at(121),
            dedupe_ttl=TTL,
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (EnqueueResult(job.id, True),), None)

    with_store(body)


def test_fire_poll_guard_counts_running_jobs(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        running = await add(store, make_job("alpha", "poll", created=T0))
        await claim(store, at(1), running)
        due, nxt = planned("alpha:poll", at(60)), planned("alpha:poll", at(120))
        await store.put_planned(due)
        job = make_job("alpha", "poll", created=at(61))
        result = await store.fire(
            due=due,
            next_run=nxt,
            jobs=[job],
            guard=Guard(plugin="alpha", command="poll", max_outstanding=1),
            actor=Actor.SCHEDULER,
            now=at(61),
            dedupe_ttl=TTL,
        )
        assert result.blocked == "poll_guard"
        assert await store.get_job(job.id) is None

    with_store(body)


def test_fire_consults_and_advances_the_breaker(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        failing = make_job("alpha", "poll", max_attempts=1, submitted_by=SubmittedBy.SCHEDULER)
        await finish(store, failing, FAIL, now=at(10), context=ctx(at(10), breaker=ONE_FAILURE_OPENS))
        opened = await store.get_breaker("alpha", "poll")
        assert opened is not None
        assert opened.status is BreakerStatus.OPEN
        guard = Guard(plugin="alpha", command="poll", breaker=ONE_FAILURE_OPENS)

        due, nxt = planned("alpha:poll", at(60)), planned("alpha:poll", at(120))
        await store.put_planned(due)
        blocked_job = make_job("alpha", "poll", created=at(70))
        result = await store.fire(
            due=due,
            next_run=nxt,
            jobs=[blocked_job],
            guard=guard,
            actor=Actor.SCHEDULER,
            now=at(70),
            dedupe_ttl=TTL,
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (), "breaker_open")
        assert await store.planned("alpha:poll") == nxt
        assert await store.get_job(blocked_job.id) is None
        assert await store.get_breaker("alpha", "poll") == opened

        # after reset_after the breaker admits one probe and becomes half-open
        probe_at = at(10) + ONE_FAILURE_OPENS.reset_after
        probe = make_job("alpha", "poll", created=probe_at)
        result = await store.fire(
            due=nxt,
            next_run=planned("alpha:poll", probe_at + timedelta(minutes=1)),
            jobs=[probe],
            guard=guard,
            actor=Actor.SCHEDULER,
            now=probe_at,
            dedupe_ttl=TTL,
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (EnqueueResult(probe.id, True),), None)
        half_open = await store.get_breaker("alpha", "poll")
        assert half_open is not None
        assert (half_open.status, half_open.probe_at) == (BreakerStatus.HALF_OPEN, probe_at)

    with_store(body)


def test_fire_without_jobs_just_advances(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        due, nxt = planned("timer", at(60)), planned("timer", at(120))
        await store.put_planned(due)
        result = await store.fire(
            due=due, next_run=nxt, jobs=[], guard=None, actor=Actor.SCHEDULER, now=at(61), dedupe_ttl=TTL
        )
        assert (result.fired, result.jobs, result.blocked) == (True, (), None)
        assert await store.planned("timer") == nxt
        assert await store.list_jobs() == []

    with_store(body)


def test_fire_dedupes_its_jobs_against_the_store_and_each_other(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        existing = await add(store, make_job("beta", "handle", dedupe_key="k"))
        due, nxt = planned("timer", at(60)), planned("timer", at(120))
        await store.put_planned(due)
        dup_of_existing = make_job("beta", "handle", dedupe_key="k", created=at(61))
        new = make_job("gamma", "handle", dedupe_key="k", created=at(61))
        dup_of_new = make_job("gamma", "handle", dedupe_key="k", created=at(61))
        result = await store.fire(
            due=due,
            next_run=nxt,
            jobs=[dup_of_existing, new, dup_of_new],
            guard=None,
            actor=Actor.SCHEDULER,
            now=at(61),
            dedupe_ttl=TTL,
        )
        assert result.jobs == (
            EnqueueResult(existing.id, False),
            EnqueueResult(new.id, True),
            EnqueueResult(new.id, False),
        )
        assert await store.queue_depth() == 2

    with_store(body)


# --------------------------------------------------------------------------- init records


def test_init_records_are_put_and_read(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.get_init("alpha") is None
        first = InitRecord(plugin="alpha", fingerprint="f1", ok=False, error="no token", at=at(1))
        await store.put_init(first)
        assert await store.get_init("alpha") == first
        second = InitRecord(plugin="alpha", fingerprint="f2", ok=True, error=None, at=at(2))
        await store.put_init(second)
        assert await store.get_init("alpha") == second
        assert await store.get_init("beta") is None

    with_store(body)


# --------------------------------------------------------------------------- atomicity


async def populate(store: Store) -> dict[str, Job]:
    """A store with a bit of everything in it."""
    done = make_job("alpha", created=T0, dedupe_key="d")
    await finish(store, done, ok(state_updates={"cursor": 1}), now=at(1))
    retried = make_job("beta", created=at(2), submitted_by=SubmittedBy.SCHEDULER)
    await finish(store, retried, FAIL, now=at(3), context=ctx(at(3), breaker=ONE_FAILURE_OPENS))
    queued = await add(store, make_job("gamma", created=at(4)))
    await claim(store, at(1000), retried)  # the oldest claimable: the retried one, now running again
    await store.record_process(retried.id, HANDLE, token=await token_of(store, retried.id))
    await store.put_planned(planned("alpha:poll", at(60)))
    await store.put_init(InitRecord(plugin="alpha", fingerprint="f", ok=True, error=None, at=at(0)))
    return {"done": done, "running": retried, "queued": queued}


def test_settle_of_an_unknown_job_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await populate(store)
        before = await snapshot(store, "no-such-job")
        with pytest.raises(StaleJobError):
            await store.settle(
                "no-such-job",
                OK,
                ctx=ctx(at(2000)),
                dedupe_ttl=TTL,
                token=await token_of(store, "no-such-job"),
            )
        assert await snapshot(store, "no-such-job") == before

    with_store(body)


def test_enqueue_of_a_job_that_is_not_queued_raises_and_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await populate(store)
        bad = make_job("alpha", created=at(5), status=S.RUNNING, started_at=at(5))
        before = await snapshot(store, bad.id)
        with pytest.raises(ValueError, match="queued"):
            await store.enqueue(bad, actor=Actor.API, now=at(5), dedupe_ttl=TTL)
        assert await snapshot(store, bad.id) == before

    with_store(body)


def test_fire_that_raises_midway_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await populate(store)
        due = planned("alpha:poll", at(60))
        good = make_job("alpha", "poll", created=at(61))
        bad = make_job("beta", "poll", created=at(61), status=S.SUCCEEDED, completed_at=at(61))
        before = await snapshot(store, good.id, bad.id)
        with pytest.raises(ValueError, match="queued"):
            await store.fire(
                due=due,
                next_run=planned("alpha:poll", at(120)),
                jobs=[good, bad],
                guard=Guard(plugin="alpha", command="poll", max_outstanding=5, breaker=BreakerPolicy()),
                actor=Actor.SCHEDULER,
                now=at(61),
                dedupe_ttl=TTL,
            )
        assert await snapshot(store, good.id, bad.id) == before

    with_store(body)


def test_fire_with_a_next_run_of_another_key_raises_and_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await populate(store)
        job = make_job("alpha", "poll", created=at(61))
        before = await snapshot(store, job.id)
        with pytest.raises(ValueError, match="key"):
            await store.fire(
                due=planned("alpha:poll", at(60)),
                next_run=planned("beta:poll", at(120)),
                jobs=[job],
                guard=None,
                actor=Actor.SCHEDULER,
                now=at(61),
                dedupe_ttl=TTL,
            )
        assert await snapshot(store, job.id) == before

    with_store(body)


# --------------------------------------------------------------------------- invariants over random histories


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    plugin = st.sampled_from(("alpha", "beta"))
    command = st.sampled_from(("poll", "handle"))
    key = st.sampled_from((None, "k1", "k2"))
    ops = st.one_of(
        st.tuples(st.just("enqueue"), plugin, command, key, st.integers(1, 3), st.booleans()),
        st.tuples(st.just("claim")),
        st.tuples(st.just("settle"), st.integers(0, 9), st.sampled_from(("ok", "fail", "fatal", "emit"))),
        st.tuples(st.just("recover")),
        st.tuples(st.just("cancel"), plugin),
        st.tuples(st.just("delete")),
        st.tuples(st.just("wait"), st.integers(1, 400)),
    )
    return draw(st.lists(ops, min_size=1, max_size=25))


async def check_invariants(store: Store) -> None:
    jobs = await store.list_jobs(limit=100_000)
    by_status: dict[JobStatus, list[Job]] = {s: [] for s in JobStatus}
    for job in jobs:
        by_status[job.status].append(job)
        history = await store.transitions(job.id)
        assert history, f"{job.id} has no history"
        assert history[0].from_status is None
        assert history[0].to_status is S.QUEUED
        for prev, nxt in itertools.pairwise(history):
            assert nxt.from_status is prev.to_status, f"{job.id}: history breaks at {nxt}"
            assert nxt.at >= prev.at
        assert history[-1].to_status is job.status, f"{job.id}: row says {job.status}, history {history}"
        assert job.status not in (S.FAILED, S.TIMED_OUT), "a row never rests in a transient state"
        assert (job.completed_at is not None) == job.terminal, job
        if job.status is S.RUNNING:
            assert job.started_at is not None, job
        if job.status is S.QUEUED:
            assert job.started_at is None, job
        assert len(await store.runs(job.id)) <= job.attempt
    assert not by_status[S.FAILED]
    assert await store.queue_depth() == len(by_status[S.QUEUED])
    for plugin in ("alpha", "beta", "gamma"):
        for command in ("poll", "handle"):
            expected = sum(
                1
                for j in by_status[S.QUEUED] + by_status[S.RUNNING]
                if (j.plugin, j.command) == (plugin, command)
            )
            assert await store.outstanding(plugin, command) == expected
    assert sorted(r.job.id for r in await store.running()) == sorted(j.id for j in by_status[S.RUNNING])
    retry_times = [j.next_retry_at for j in by_status[S.QUEUED] if j.next_retry_at is not None]
    assert await store.next_retry_at() == (min(retry_times) if retry_times else None)


#: The routes and targets the random histories settle with ("emit" fans out from alpha to beta).
HISTORY_ROUTES = (Route(source="alpha", event_type="new", target="beta"),)
HISTORY_TARGETS = {"beta": Target(max_attempts=2)}


async def enqueue_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    """Enqueue; the answer names a job that exists: the new one, or the duplicate's original."""
    _, plugin, command, key, attempts, later = op
    job = make_job(
        plugin,
        command,
        created=now,
        dedupe_key=key,
        max_attempts=attempts,
        next_retry_at=now + timedelta(seconds=30) if later else None,
    )
    result = await store.enqueue(job, actor=Actor.API, now=now, dedupe_ttl=TTL)
    existing = await store.get_job(result.job_id)
    assert existing is not None, f"{result} names a job that does not exist"
    if result.created:
        assert existing == job
    else:
        assert key is not None
        assert (existing.plugin, existing.command, existing.dedupe_key) == (plugin, command, key)


async def claim_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    """Claim the oldest eligible job, or nothing when none is eligible."""
    queued = await store.list_jobs(statuses=[S.QUEUED], limit=100_000)
    eligible = [j for j in queued if j.next_retry_at is None or j.next_retry_at <= now]
    got = await store.claim_next(now)
    if not eligible:
        assert got is None
    else:
        oldest = min(j.created_at for j in eligible)
        assert got is not None
        assert got.created_at == oldest
        assert got.status is S.RUNNING


async def settle_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    """Settle one running job (if any): the row is the settlement's, every child exists."""
    running = sorted(await store.running(), key=lambda r: r.job.id)
    if not running:
        return
    target = running[op[1] % len(running)].job
    outcome: Verdict = {
        "ok": OK,
        "fail": FAIL,
        "fatal": FATAL,
        "emit": ok(events=[{"type": "new", "dedupe_key": "k1"}]),
    }[op[2]]
    committed = await store.settle(
        target.id,
        outcome,
        ctx=ctx(now, routes=HISTORY_ROUTES, targets=HISTORY_TARGETS),
        dedupe_ttl=TTL,
        token=target.claim_token,
    )
    assert await store.get_job(target.id) == committed.settlement.job
    for result in committed.children:
        assert await store.get_job(result.job_id) is not None


async def recover_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    await store.recover(now)
    assert await store.running() == []


async def cancel_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    await store.cancel_queued(op[1], reason="plugin removed", now=now)
    assert await store.list_jobs(statuses=[S.QUEUED], plugin=op[1]) == []


async def delete_step(store: Store, op: tuple[Any, ...], now: datetime) -> None:
    await store.delete_finished(now)
    assert await store.list_jobs(statuses=[S.SUCCEEDED, S.DEAD]) == []


#: One step of a random history per operation kind ("wait" only moves the time on).
HISTORY_STEPS: dict[str, Callable[[Store, tuple[Any, ...], datetime], Awaitable[None]]] = {
    "enqueue": enqueue_step,
    "claim": claim_step,
    "settle": settle_step,
    "recover": recover_step,
    "cancel": cancel_step,
    "delete": delete_step,
}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations())
def test_invariants_hold_over_random_histories(
    store_factory: StoreFactory, ops: list[tuple[Any, ...]]
) -> None:
    """Whatever sequence of units runs, the rows, their histories and every count agree."""

    async def main() -> None:
        store = await store_factory()
        try:
            now = T0
            for op in ops:
                now += timedelta(seconds=1)
                if op[0] == "wait":
                    now += timedelta(seconds=op[1])
                else:
                    await HISTORY_STEPS[op[0]](store, op, now)
                await check_invariants(store)
        finally:
            await store.close()

    asyncio.run(main())
