"""The cluster contract of the PostgreSQL store: several nodes on one database, concurrently.

PostgreSQL only (the other stores have one writer). Each test opens two or
more :class:`PostgresStore` nodes on a fresh database of the session's
throwaway cluster and drives them concurrently (asyncio tasks; each unit runs
on a thread of its store's pool). Leases and deadlines are moved on the
database's clock by direct statements, so nothing here waits for a lease to
run out.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import psycopg
import pytest

from ductile.adapters.postgres.cluster import PgCluster
from ductile.adapters.postgres.errors import StoreBusyError
from ductile.adapters.postgres.inbox import PgInbox
from ductile.adapters.postgres.store import Node, PostgresStore
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job, JobStatus
from ductile.domain.lanes import Lanes
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext
from ductile.fakes import spawner
from ductile.ports.store import EnqueueResult, StaleJobError
from tests.support import builders

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")

TTL = timedelta(hours=24)
OK = classify(spawner.ok())
LONG = timedelta(days=1)

Body = Callable[[str], Awaitable[None]]


def run(url: str, body: Body) -> None:
    asyncio.run(body(url))


async def node(url: str, name: str, *, instance: str | None = None, margin: float = 2.0) -> PostgresStore:
    store = await PostgresStore.open(
        url,
        instance=instance or f"{name}:/state",
        node=Node(id=name, host=name, pid=os.getpid()),
        lease=LONG,
        pool_size=8,
        margin=timedelta(seconds=margin),
    )
    return store


def sql(url: str, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def expire(url: str, node_id: str) -> None:
    """The node's lease ran out (on the database's clock)."""
    sql(url, "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE id = %s", (node_id,))


def past_deadline(url: str, job_id: str) -> None:
    sql(url, "UPDATE jobs SET deadline_at = now() - interval '1 hour' WHERE id = %s", (job_id,))


def job(n: int, plugin: str = "alpha", **fields: Any) -> Job:
    return builders.job(f"job-{n:05d}", plugin, created_at=T0 + timedelta(microseconds=n), **fields)


async def closing(*stores: PostgresStore) -> None:
    for store in stores:
        await store.close()


# --------------------------------------------------------------------------- claims


def test_concurrent_claims_of_four_nodes_take_each_job_once_and_keep_lanes_one_wide(pg_url: str) -> None:
    lanes = Lanes(default_width=1)

    async def body(url: str) -> None:
        nodes = [await node(url, f"n{i}") for i in range(4)]
        plugins = ("a", "b", "c")
        for n in range(150):
            await nodes[0].enqueue(job(n, plugins[n % 3]), actor=Actor.API, now=T0, dedupe_ttl=TTL)
        claimed: list[str] = []
        overlaps: list[str] = []
        running: Counter[str] = Counter()

        async def worker(store: PostgresStore) -> None:
            while True:
                # four claimers on one lane set may meet each other more often than a unit retries
                # (a loaded machine): StoreBusyError wrote nothing, and the daemon claims again
                got = await busy_again(lambda: store.claim_next(T0 + timedelta(seconds=1), lanes=lanes))
                if got is None:
                    if await store.queue_depth() == 0:
                        return
                    await asyncio.sleep(0.005)
                    continue
                running[got.plugin] += 1
                if running[got.plugin] > 1:
                    overlaps.append(got.plugin)
                claimed.append(got.id)
                await asyncio.sleep(0)
                running[got.plugin] -= 1
                settle = partial(store.settle, got.id, OK, ctx=SettleContext(now=T0), dedupe_ttl=TTL)
                await busy_again(partial(settle, token=got.claim_token))

        try:
            await asyncio.wait_for(asyncio.gather(*(worker(s) for s in nodes)), 120)
            assert sorted(claimed) == sorted(f"job-{n:05d}" for n in range(150))  # each once
            assert not overlaps
            tokens = sql(url, "SELECT DISTINCT claim_token, status FROM jobs")
            assert tokens == [(1, "succeeded")]
            by_node = Counter(r[0] for r in sql(url, "SELECT node FROM jobs"))
            assert len(by_node) >= 2, by_node  # the work was shared
        finally:
            await closing(*nodes)

    run(pg_url, body)


async def busy_again(unit: Callable[[], Awaitable[T]]) -> T:
    """``unit()``, run again (at most 20 times) while it fails with :class:`StoreBusyError`, as the
    daemon's dispatcher does: a unit that gave up on concurrent writers wrote nothing."""
    for _ in range(20):
        try:
            return await unit()
        except StoreBusyError:
            await asyncio.sleep(0.05)
    return await unit()


def test_the_lane_constraint_refuses_a_second_running_job_of_a_lane_whatever_a_claimer_believes(
    pg_url: str,
) -> None:
    async def body(url: str) -> None:
        a = await node(url, "a")
        try:
            for n in range(2):
                await a.enqueue(job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            first = await a.claim_next(T0, lanes=Lanes(default_width=1))
            assert first is not None
            with pytest.raises(psycopg.errors.UniqueViolation):
                sql(url, "UPDATE jobs SET status = 'running', slot = 0 WHERE id = 'job-00001'")
        finally:
            await a.close()

    run(pg_url, body)


# --------------------------------------------------------------------------- the fence and recovery


def test_a_late_settle_from_a_node_presumed_dead_is_refused_and_the_peers_run_stands(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b", margin=0)
        try:
            await a.enqueue(job(1), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            first = await a.claim_next(T0, lanes=Lanes(default_hold=timedelta(seconds=30)))
            assert first is not None
            assert first.deadline_at is not None
            assert await b.recover_peers(T0) == []  # a is live: its claim stands
            expire(url, "a")
            assert await b.recover_peers(T0) == []  # dead, but its plugin may run until the deadline
            past_deadline(url, first.id)
            [settled] = await b.recover_peers(T0 + timedelta(seconds=1))
            assert settled.job.status is JobStatus.QUEUED
            second = await b.claim_next(T0 + timedelta(seconds=2))
            assert second is not None
            assert (second.id, second.claim_token, second.node) == (first.id, 2, "b")
            with pytest.raises(StaleJobError):
                await a.settle(
                    first.id, OK, ctx=SettleContext(now=T0), dedupe_ttl=TTL, token=first.claim_token
                )
            await b.settle(second.id, OK, ctx=SettleContext(now=T0), dedupe_ttl=TTL, token=2)
            final = await b.get_job(first.id)
            assert final is not None
            assert (final.status, final.attempt, final.node) == (JobStatus.SUCCEEDED, 2, "b")
        finally:
            await closing(a, b)

    run(pg_url, body)


def test_an_expired_node_claims_nothing_and_its_renewal_fails(pg_url: str) -> None:
    async def body(url: str) -> None:
        a = await node(url, "a")
        cluster = PgCluster(a, url, lease=timedelta(seconds=30))
        try:
            await a.enqueue(job(1), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            assert (await cluster.beat("fp")).alive
            expire(url, "a")
            assert await a.claim_next(T0) is None  # only while the lease is valid
            beat = await cluster.beat("fp")
            assert not beat.alive  # an expired lease is never revived
            new_id = await cluster.rejoin("fp")
            assert new_id != "a"
            assert cluster.node == new_id
            got = await a.claim_next(T0)
            assert got is not None
            assert got.node == new_id
        finally:
            await cluster.close()
            await a.close()

    run(pg_url, body)


def test_own_instance_recovery_is_immediate_and_peer_recovery_waits(pg_url: str) -> None:
    async def body(url: str) -> None:
        old = await node(url, "old", instance="host1:/state")
        peer = await node(url, "peer", margin=0)
        try:
            for n in range(2):
                await old.enqueue(job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            lanes = Lanes(default_hold=timedelta(hours=1))
            for _ in range(2):
                assert await old.claim_next(T0, lanes=lanes) is not None
            await old.close()
            expire(url, "old")
            assert await peer.recover_peers(T0) == []  # the deadlines are an hour away
            # the same instance restarts (its flock proves "old" dead): its claims are re-queued at once
            again = await node(url, "new", instance="host1:/state")
            try:
                settled = await again.recover(T0 + timedelta(seconds=5))
                assert sorted(s.job.id for s in settled) == ["job-00000", "job-00001"]
                assert all(s.job.status is JobStatus.QUEUED for s in settled)
            finally:
                await again.close()
        finally:
            await peer.close()

    run(pg_url, body)


def test_deleting_dead_node_rows_never_hides_their_jobs(pg_url: str) -> None:
    """procrastinate #1518: jobs of a node whose row was pruned stayed running forever."""

    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b", margin=0)
        try:
            await a.enqueue(job(1), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            got = await a.claim_next(T0)
            assert got is not None
            sql(url, "DELETE FROM nodes WHERE id = 'a'")
            [settled] = await b.recover_peers(T0)  # no deadline recorded: recovered at once
            assert settled.job.id == got.id
        finally:
            await closing(a, b)

    run(pg_url, body)


# --------------------------------------------------------------------------- dedupe, children, state


def test_concurrent_enqueues_of_one_identity_make_one_job(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        try:
            jobs = [job(n, "alpha", command="handle", dedupe_key="delivery-7") for n in range(40)]
            results: list[EnqueueResult] = await asyncio.gather(
                *(
                    (a if n % 2 else b).enqueue(j, actor=Actor.WEBHOOK, now=T0, dedupe_ttl=TTL)
                    for n, j in enumerate(jobs)
                )
            )
            created = [r for r in results if r.created]
            assert len(created) == 1
            assert {r.job_id for r in results} == {created[0].job_id}
        finally:
            await closing(a, b)

    run(pg_url, body)


def test_concurrent_settles_of_one_plugin_lose_no_state_update(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        try:
            for n in range(24):
                await a.enqueue(job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            claims = [await (a if n % 2 else b).claim_next(T0) for n in range(24)]

            async def finish(n: int, claimed: Job | None) -> None:
                assert claimed is not None
                store = a if claimed.node == "a" else b
                end = classify(spawner.ok(state_updates={f"k{n}": n}))
                await store.settle(
                    claimed.id, end, ctx=SettleContext(now=T0), dedupe_ttl=TTL, token=claimed.claim_token
                )

            await asyncio.gather(*(finish(n, c) for n, c in enumerate(claims)))
            assert await a.get_state("alpha") == {f"k{n}": n for n in range(24)}
        finally:
            await closing(a, b)

    run(pg_url, body)


def test_two_leaders_firing_one_planned_run_enqueue_it_once(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        try:
            due = PlannedRun(key="alpha", fingerprint="f", nominal_at=T0, planned_at=T0, offset=timedelta(0))
            nxt = PlannedRun(
                key="alpha", fingerprint="f", nominal_at=T0 + LONG, planned_at=T0 + LONG, offset=timedelta(0)
            )
            await a.put_planned(due)
            results = await asyncio.gather(
                *(
                    store.fire(
                        due=due,
                        next_run=nxt,
                        jobs=[job(n)],
                        guard=None,
                        actor=Actor.SCHEDULER,
                        now=T0,
                        dedupe_ttl=TTL,
                    )
                    for n, store in enumerate((a, b, a, b))
                )
            )
            assert sorted(r.fired for r in results) == [False, False, False, True]
            assert await a.queue_depth() == 1
            assert await a.planned("alpha") == nxt
        finally:
            await closing(a, b)

    run(pg_url, body)


# --------------------------------------------------------------------------- leadership


def test_leadership_is_elected_kept_refused_taken_over_after_expiry_and_resigned(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        ca, cb = (
            PgCluster(a, url, lease=timedelta(seconds=30)),
            PgCluster(b, url, lease=timedelta(seconds=30)),
        )
        try:
            assert (await ca.beat("fp")).leading
            assert (await ca.beat("fp")).leading  # re-elected by its own renewal
            other = await cb.beat("fp")
            assert (other.alive, other.leading, other.leader) == (True, False, "a")
            assert not (await cb.beat("other-fp")).agreed  # its config differs from the leader's
            sql(url, "UPDATE leadership SET expires_at = now() - interval '1 second'")
            assert (await cb.beat("fp")).leading  # the term ran out: b takes over
            assert not (await ca.beat("fp")).leading
            await cb.leave()
            assert (await ca.beat("fp")).leading  # b resigned: a leads at its next beat
        finally:
            await ca.close()
            await cb.close()
            await closing(a, b)

    run(pg_url, body)


# --------------------------------------------------------------------------- wake-ups


def test_an_enqueue_on_one_node_wakes_the_other_and_a_lost_listener_still_finds_it(pg_url: str) -> None:
    async def body(url: str) -> None:
        a = await node(url, "a")
        inbox = PgInbox(url)
        inbox.start()
        try:
            await asyncio.wait_for(_connected(inbox, 1), 10)
            assert await inbox.wait(0.5)  # the wake-up after connecting
            await a.enqueue(job(1), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            assert await inbox.wait(1.5)  # heard through NOTIFY
            sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'")
            await a.enqueue(job(2), actor=Actor.API, now=T0, dedupe_ttl=TTL)  # maybe sent while away
            await asyncio.wait_for(_connected(inbox, 2), 15)
            assert await inbox.wait(1.5)  # reconnected: it looks again
        finally:
            await inbox.close()
            await a.close()

    run(pg_url, body)


async def _connected(inbox: PgInbox, times: int) -> None:
    while inbox.connects < times:  # noqa: ASYNC110 - the listener's own counter; bounded by wait_for
        await asyncio.sleep(0.02)


def test_a_claim_whose_commit_went_unheard_is_given_back_by_its_own_node(pg_url: str) -> None:
    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        cluster = PgCluster(a, url, lease=timedelta(seconds=30))
        try:
            for n in range(3):
                await a.enqueue(job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            held = await a.claim_next(T0)
            lost = await a.claim_next(T0)  # as if its commit's answer never reached the node
            other = await b.claim_next(T0)  # b's claim is b's business
            assert held is not None
            assert lost is not None
            assert other is not None
            assert await cluster.strays(T0 + timedelta(seconds=2), keep={held.id}) == []  # too young
            [given_back] = await cluster.strays(T0 + timedelta(seconds=10), keep={held.id})
            assert (given_back.job.id, given_back.job.status) == (lost.id, JobStatus.QUEUED)
            still = {j.id for j in await a.list_jobs(statuses=[JobStatus.RUNNING])}
            assert still == {held.id, other.id}
        finally:
            await cluster.close()
            await closing(a, b)

    run(pg_url, body)


def test_a_reader_following_the_activity_log_of_two_busy_nodes_misses_no_entry(pg_url: str) -> None:
    """Ids become visible in order (ADR 0033): a follower that always resumes after the largest
    id it saw, while two nodes enqueue and claim concurrently, reads every entry exactly once."""

    async def body(url: str) -> None:
        a, b = await node(url, "a"), await node(url, "b")
        seen: list[int] = []
        done = asyncio.Event()

        async def follow() -> None:
            while True:
                finished = done.is_set()
                seen.extend(e.id for e in await a.activity(seen[-1] if seen else 0))
                if finished:
                    return
                await asyncio.sleep(0)

        async def work(store: PostgresStore, first: int) -> None:
            for n in range(first, first + 30):
                await store.enqueue(job(n, f"p{n % 5}"), actor=Actor.CLI, now=T0, dedupe_ttl=TTL)
                await store.claim_next(T0 + timedelta(seconds=1), lanes=Lanes(default_width=5))

        try:
            follower = asyncio.create_task(follow())
            await asyncio.gather(*(work(s, k * 1000) for k, s in enumerate((a, b, a, b))))
            done.set()
            await follower
            total = await b.last_activity_id()
            assert total == 4 * 30 + 5 * 5  # every enqueue; claims until the five lanes are full
            assert seen == list(range(1, total + 1))
        finally:
            await closing(a, b)

    run(pg_url, body)
