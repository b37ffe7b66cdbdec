"""The Store contract, continued: lanes and the claim fence (ADR 0031, 0032).

Run against every implementation in ``conftest.store_factory``, like the rest
of the contract. A claim takes the oldest runnable job whose plugin's lane has
a free slot and whose dedupe identity is not running; it raises the job's
claim token, and only the holder of the current token may record a process or
settle the job.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ductile.domain.job import Actor, JobStatus
from ductile.domain.lanes import Lanes
from ductile.ports.store import StaleJobError, Store
from tests.contracts.test_store_contract import (
    FAIL,
    HANDLE,
    OK,
    TTL,
    add,
    at,
    claim,
    ctx,
    make_job,
    snapshot,
)
from tests.support.cases import StoreRunner

S = JobStatus
ONE_EACH = Lanes(default_width=1)


async def settle_ok(store: Store, job_id: str, token: int, seconds: float) -> None:
    await store.settle(job_id, OK, ctx=ctx(at(seconds)), dedupe_ttl=TTL, token=token)


# --------------------------------------------------------------------------- lanes


def test_a_saturated_plugin_never_holds_back_another_plugins_jobs(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        a1 = await add(store, make_job("alpha", created=at(1)))
        a2 = await add(store, make_job("alpha", created=at(2)))
        b1 = await add(store, make_job("beta", created=at(3)))
        running = await store.claim_next(at(10), lanes=ONE_EACH)
        assert running is not None
        assert running.id == a1.id
        # alpha's lane (width 1) is full: its next job waits, beta's goes past it
        nxt = await store.claim_next(at(11), lanes=ONE_EACH)
        assert nxt is not None
        assert nxt.id == b1.id
        assert await store.claim_next(at(12), lanes=ONE_EACH) is None
        await settle_ok(store, a1.id, running.claim_token, 13)
        last = await store.claim_next(at(14), lanes=ONE_EACH)
        assert last is not None
        assert last.id == a2.id

    with_store(body)


def test_a_lane_of_width_two_runs_two_in_fifo_order_and_reuses_the_freed_slot(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        lanes = Lanes(widths={"alpha": 2}, default_width=1)
        jobs = [await add(store, make_job("alpha", created=at(n))) for n in range(4)]
        first = await store.claim_next(at(10), lanes=lanes)
        second = await store.claim_next(at(10), lanes=lanes)
        assert first is not None
        assert second is not None
        assert [(first.id, first.slot), (second.id, second.slot)] == [(jobs[0].id, 0), (jobs[1].id, 1)]
        assert await store.claim_next(at(11), lanes=lanes) is None  # both slots taken
        await settle_ok(store, first.id, first.claim_token, 12)
        third = await store.claim_next(at(13), lanes=lanes)
        assert third is not None
        assert (third.id, third.slot) == (jobs[2].id, 0)  # FIFO in the lane; the lowest free slot
        assert await store.claim_next(at(14), lanes=lanes) is None

    with_store(body)


def test_without_lanes_every_claim_takes_a_slot_of_its_own(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        for n in range(3):
            await add(store, make_job("alpha", created=at(n)))
        slots = []
        for _ in range(3):
            got = await store.claim_next(at(10))
            assert got is not None
            slots.append(got.slot)
        assert slots == [0, 1, 2]

    with_store(body)


def test_a_job_whose_dedupe_identity_runs_waits_for_that_run(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        lanes = Lanes(default_width=4)
        first = await add(store, make_job("alpha", "handle", dedupe_key="d1", created=at(1)))
        running = await store.claim_next(at(2), lanes=lanes)
        assert running is not None
        assert running.id == first.id
        again = make_job("alpha", "handle", dedupe_key="d1", created=at(3))
        result = await store.enqueue(again, actor=Actor.WEBHOOK, now=at(3), dedupe_ttl=TTL)
        if not result.created:
            # D1 as amended: a redelivery during the run returns the running job
            assert result.job_id == first.id
            return
        other = await add(store, make_job("alpha", "handle", dedupe_key="d2", created=at(4)))
        taken = await store.claim_next(at(5), lanes=lanes)
        assert taken is not None
        assert taken.id == other.id  # the same identity is passed by, the lane has room
        assert await store.claim_next(at(6), lanes=lanes) is None
        await settle_ok(store, first.id, running.claim_token, 7)
        later = await store.claim_next(at(8), lanes=lanes)
        assert later is not None
        assert later.id == again.id

    with_store(body)


def test_a_claim_records_its_deadline_as_claim_plus_the_plugins_hold(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        lanes = Lanes(holds={"alpha": timedelta(seconds=67)}, default_hold=timedelta(seconds=127))
        a = await add(store, make_job("alpha", created=at(1)))
        b = await add(store, make_job("beta", created=at(2)))
        got_a = await store.claim_next(at(10), lanes=lanes)
        got_b = await store.claim_next(at(10), lanes=lanes)
        assert got_a is not None
        assert got_b is not None
        assert (got_a.id, got_b.id) == (a.id, b.id)
        if got_a.node is None:  # a store of one process keeps the engine's clock
            assert got_a.deadline_at == at(10) + timedelta(seconds=67)
            assert got_b.deadline_at == at(10) + timedelta(seconds=127)
        else:  # a shared store keeps the database's clock: the hold is what is comparable
            assert got_a.deadline_at is not None
            assert got_b.deadline_at is not None
            assert got_b.deadline_at - got_a.deadline_at == pytest.approx(
                timedelta(seconds=60), abs=timedelta(seconds=5)
            )
        assert await store.get_job(a.id) == got_a

    with_store(body)


def test_claim_by_id_ignores_the_lane_width_but_takes_a_free_slot(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        busy = await add(store, make_job("alpha", created=at(1)))
        init = await add(store, make_job("alpha", "init", created=at(2)))
        got = await store.claim_next(at(3), lanes=ONE_EACH)
        assert got is not None
        assert got.id == busy.id
        claimed = await store.claim(init.id, at(4), lanes=ONE_EACH)
        assert claimed is not None
        assert claimed.slot == 1

    with_store(body)


# --------------------------------------------------------------------------- the fence


def test_every_claim_raises_the_token(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        first = await claim(store, at(1), job)
        await store.settle(job.id, FAIL, ctx=ctx(at(2)), dedupe_ttl=TTL, token=first.claim_token)
        second = await claim(store, at(1000), job)
        assert (first.claim_token, second.claim_token) == (1, 2)
        await store.recover(at(1001))
        third = await claim(store, at(1002), job)
        assert third.claim_token == 3

    with_store(body)


def test_a_late_settle_of_a_lost_claim_is_refused_and_changes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        lost = await claim(store, at(1), job)
        await store.recover(at(2))  # the claim is given up (its node was presumed dead)
        current = await claim(store, at(3), job)
        before = await snapshot(store)
        with pytest.raises(StaleJobError):
            await store.settle(job.id, OK, ctx=ctx(at(4)), dedupe_ttl=TTL, token=lost.claim_token)
        with pytest.raises(StaleJobError):
            await store.record_process(job.id, HANDLE, token=lost.claim_token)
        assert await snapshot(store) == before
        await store.record_process(job.id, HANDLE, token=current.claim_token)
        committed = await store.settle(job.id, OK, ctx=ctx(at(5)), dedupe_ttl=TTL, token=current.claim_token)
        assert committed.settlement.job.status is S.SUCCEEDED
        stored = await store.get_job(job.id)
        assert stored is not None
        assert (stored.status, stored.attempt, stored.claim_token) == (S.SUCCEEDED, 2, 2)

    with_store(body)


def test_a_settle_with_a_token_from_the_future_is_refused_too(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = await add(store, make_job())
        got = await claim(store, at(1), job)
        before = await snapshot(store)
        with pytest.raises(StaleJobError):
            await store.settle(job.id, OK, ctx=ctx(at(2)), dedupe_ttl=TTL, token=got.claim_token + 1)
        assert await snapshot(store) == before

    with_store(body)
