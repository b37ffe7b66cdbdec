"""The engine's chained claim (ADR 0068): a settle claims the next job in its own unit.

The daemon's worker runs a claimed job with ``run_claimed(chain=True)`` and
then the job that settle claimed, until a settle finds nothing. The chained
claim obeys what a claim by ``claim_one`` obeys: never while claims are paused
(a fenced or disagreeing node), never while a tick or a reload holds the
engine's lock, never once the daemon stops, and the next job runs under the
runtime current at its claim (D13), not the one the job before it ran under.
"""

from __future__ import annotations

import asyncio

from ductile.app.engine import Claimed
from ductile.domain.job import JobStatus
from ductile.fakes.spawner import ok
from tests.support.builders import two_plugins
from tests.support.rigs import Rig, async_test


async def _first_claimed() -> tuple[Rig, Claimed, str]:
    """A started engine with an alpha job claimed (its run will succeed) and a beta job queued
    behind it: the rig, the claim, the beta job's id."""
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    rig.script("beta", ok())
    await rig.engine.start()
    first = await rig.engine.enqueue("alpha")
    second = await rig.engine.enqueue("beta")
    claimed = await rig.engine.claim_one()
    assert claimed is not None
    assert claimed.job.id == first.job_id
    return rig, claimed, second.job_id


@async_test
async def test_a_chained_settle_claims_the_next_job_which_then_runs() -> None:
    rig, claimed, second = await _first_claimed()
    following = await rig.engine.run_claimed(claimed, chain=True)
    assert following is not None
    assert following.job.id == second
    assert (await rig.job(second)).status is JobStatus.RUNNING
    assert following.runtime is rig.engine.runtime
    assert await rig.engine.run_claimed(following, chain=True) is None  # nothing left
    assert (await rig.job(second)).status is JobStatus.SUCCEEDED


@async_test
async def test_without_chain_the_settle_claims_nothing() -> None:
    rig, claimed, second = await _first_claimed()
    assert await rig.engine.run_claimed(claimed) is None
    assert (await rig.job(second)).status is JobStatus.QUEUED


@async_test
async def test_while_claims_are_paused_the_settle_claims_nothing() -> None:
    rig, claimed, second = await _first_claimed()
    rig.engine.claiming = False  # a fenced node, or one whose config differs from the leader's
    assert await rig.engine.run_claimed(claimed, chain=True) is None
    assert (await rig.job(second)).status is JobStatus.QUEUED


@async_test
async def test_a_tick_or_reload_holding_the_lock_is_never_waited_for_and_no_claim_overlaps_it() -> None:
    rig, claimed, second = await _first_claimed()
    lock = rig.engine._lock
    await lock.acquire()  # as a tick or a reload would, for as long as it runs
    try:
        following = await asyncio.wait_for(rig.engine.run_claimed(claimed, chain=True), 5)
    finally:
        lock.release()
    assert following is None
    assert (await rig.job(claimed.job.id)).status is JobStatus.SUCCEEDED
    assert (await rig.job(second)).status is JobStatus.QUEUED


@async_test
async def test_once_the_daemon_stops_a_settle_claims_nothing() -> None:
    rig, claimed, second = await _first_claimed()
    rig.engine.halt()
    assert await rig.engine.run_claimed(claimed, chain=True) is None
    assert (await rig.job(second)).status is JobStatus.QUEUED
