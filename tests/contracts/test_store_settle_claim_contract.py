"""The Store contract, continued: a settle that claims the next job in its own unit (ADR 0068).

Run against every implementation in ``conftest.store_factory``. ``settle(...,
then_claim=lanes)`` commits the end of one job and claims the next in one
unit: the job claimed is exactly the one ``claim_next(ctx.now, lanes=lanes)``
would claim just after a plain settle (the lane room this end gave back
included, a routed child made by this very settle included), and a settle the
fence refuses claims nothing.
"""

from __future__ import annotations

import pytest

from ductile.domain.job import JobStatus
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.routing import Route, Target
from ductile.ports.store import StaleJobError, Store
from tests.contracts.test_store_contract import OK, TTL, add, at, claim, ctx, make_job, ok, snapshot
from tests.support.cases import StoreRunner

S = JobStatus
ONE_EACH = Lanes(default_width=1)


def test_the_settle_claims_the_job_claim_next_would_claim(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        first = await add(store, make_job("alpha", created=at(1)))
        second = await add(store, make_job("beta", created=at(2)))
        await add(store, make_job("beta", created=at(3)))
        running = await claim(store, at(10), first)
        committed = await store.settle(
            first.id, OK, ctx=ctx(at(11)), dedupe_ttl=TTL, token=running.claim_token, then_claim=UNLIMITED
        )
        assert committed.settlement.job.status is S.SUCCEEDED
        following = committed.next_job
        assert following is not None
        assert following.id == second.id
        assert following.status is S.RUNNING
        assert following.started_at == at(11)
        assert following.claim_token > 0
        assert await store.get_job(second.id) == following
        assert (await store.get_job(first.id)).status is S.SUCCEEDED  # type: ignore[union-attr]
        assert await store.queue_depth() == 1

    with_store(body)


def test_the_lane_this_end_frees_is_room_for_the_next_job(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a1 = await add(store, make_job("alpha", created=at(1)))
        a2 = await add(store, make_job("alpha", created=at(2)))
        running = await store.claim_next(at(10), lanes=ONE_EACH)
        assert running is not None
        assert running.id == a1.id
        assert await store.claim_next(at(10), lanes=ONE_EACH) is None  # alpha's one slot is taken
        committed = await store.settle(
            a1.id, OK, ctx=ctx(at(11)), dedupe_ttl=TTL, token=running.claim_token, then_claim=ONE_EACH
        )
        assert committed.next_job is not None
        assert (committed.next_job.id, committed.next_job.slot) == (a2.id, 0)

    with_store(body)


def test_a_child_this_settle_routes_can_be_the_job_it_claims(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        parent = await add(store, make_job("alpha", created=at(1)))
        running = await claim(store, at(10), parent)
        routes = (Route(source="alpha", event_type="new", target="beta"),)
        context = ctx(at(11), routes=routes, targets={"beta": Target(max_attempts=3)})
        committed = await store.settle(
            parent.id,
            ok(events=[{"type": "new", "payload": {"n": 1}}]),
            ctx=context,
            dedupe_ttl=TTL,
            token=running.claim_token,
            then_claim=UNLIMITED,
        )
        (child,) = committed.children
        assert child.created
        assert committed.next_job is not None
        assert committed.next_job.id == child.job_id
        assert committed.next_job.status is S.RUNNING

    with_store(body)


def test_nothing_runnable_claims_nothing_and_without_then_claim_nothing_is_claimed(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        a1 = await add(store, make_job("alpha", created=at(1)))
        running = await claim(store, at(10), a1)
        committed = await store.settle(
            a1.id, OK, ctx=ctx(at(11)), dedupe_ttl=TTL, token=running.claim_token, then_claim=UNLIMITED
        )
        assert committed.next_job is None
        a2 = await add(store, make_job("alpha", created=at(12)))
        again = await claim(store, at(13), a2)
        await add(store, make_job("alpha", created=at(14)))
        plain = await store.settle(a2.id, OK, ctx=ctx(at(15)), dedupe_ttl=TTL, token=again.claim_token)
        assert plain.next_job is None
        assert await store.queue_depth() == 1  # the third job is still queued

    with_store(body)


def test_a_settle_the_fence_refuses_claims_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a1 = await add(store, make_job("alpha", created=at(1)))
        await add(store, make_job("beta", created=at(2)))
        running = await claim(store, at(10), a1)
        before = await snapshot(store)
        with pytest.raises(StaleJobError):
            await store.settle(
                a1.id,
                OK,
                ctx=ctx(at(11)),
                dedupe_ttl=TTL,
                token=running.claim_token + 1,
                then_claim=UNLIMITED,
            )
        assert await snapshot(store) == before
        assert await store.queue_depth() == 1

    with_store(body)
