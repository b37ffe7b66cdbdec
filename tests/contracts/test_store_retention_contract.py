"""The Store contract, continued: retention in steps (D19, ADR 0064).

``delete_finished(before, limit=n)`` is one step: at most ``n`` terminal jobs
with their history (and ten times as many activity entries and facts), in one
unit of its own; the caller repeats until a step says ``done``. Every step leaves
the store whole (a job is there with all its history, or gone with all of
it), so a crash between two steps loses nothing but the rest of the work, and
a later retention finishes it. Run against every store.
"""

from __future__ import annotations

from datetime import datetime

from ductile.domain.job import Job
from ductile.domain.plugin import FactOutput
from ductile.ports.store import Pruned, Store
from tests.contracts.test_store_contract import FATAL, add, at, claim, ctx, finish, make_job, ok
from tests.support.cases import StoreRunner

RULE = FactOutput(command="poll", fact_type="feeds.snapshot")
CUT = at(1000)
EXPIRED = 7
STEP = 3


async def history(store: Store) -> tuple[list[Job], list[Job], list[Job]]:
    """Seven expired jobs (succeeded and dead, each recording a fact), then the kept ones: one
    completed at the cut-off exactly, one after it, one running, one queued since long ago."""
    expired = []
    for n in range(EXPIRED):
        job = make_job("feeds", created=at(10 * n))
        outcome = FATAL if n % 3 == 2 else ok(state_updates={"n": n})
        now = at(10 * n + 1)
        await finish(store, job, outcome, now=now, context=ctx(now, fact=RULE))
        expired.append(job)
    boundary, recent = make_job("feeds", created=at(999)), make_job("alpha", created=at(1001))
    await finish(store, boundary, now=CUT)
    await finish(store, recent, now=at(1002))
    running = await add(store, make_job("beta", created=at(1003)))
    await claim(store, at(1004), running)
    queued = await add(store, make_job("gamma", created=at(-100)))
    return expired, [boundary, recent, running, queued], [boundary, recent]


async def whole_or_gone(store: Store, jobs: list[Job]) -> set[str]:
    """The ids of ``jobs`` still stored; each of them with its history, each other one without."""
    left = set()
    for job in jobs:
        stored = await store.get_job(job.id)
        transitions, runs = await store.transitions(job.id), await store.runs(job.id)
        if stored is None:
            assert (transitions, runs) == ([], []), f"{job.id}: deleted, but its history is left"
        else:
            assert transitions, job.id
            assert runs or stored.status.value in ("queued", "running"), job.id
            left.add(job.id)
    return left


async def old_activity(store: Store, before: datetime) -> int:
    return sum(1 for e in await store.activity(0, limit=100_000) if e.activity.at < before)


def test_retention_in_steps_deletes_everything_expired_and_nothing_else(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        expired, kept, _ = await history(store)
        activity_after = [e for e in await store.activity(0, limit=100_000) if e.activity.at >= CUT]
        steps: list[Pruned] = []
        deleted = 0
        while not steps or not steps[-1].done:
            steps.append(await store.delete_finished(CUT, limit=STEP))
            assert steps[-1].jobs <= STEP
            deleted += steps[-1].jobs
            # Between two steps (where a crash may stop it), the store is whole.
            left = await whole_or_gone(store, expired)
            assert len(left) == EXPIRED - deleted
            assert await whole_or_gone(store, kept) == {j.id for j in kept}
            assert len(steps) <= 20, steps
        assert len(steps) >= 3  # 7 jobs, 3 at a time
        assert deleted == EXPIRED
        assert await whole_or_gone(store, expired) == set()
        assert await old_activity(store, CUT) == 0
        assert [e for e in await store.activity(0, limit=100_000) if e.activity.at >= CUT] == activity_after
        # The newest fact of its type stays (it is the plugin's state); every older one went.
        assert [f.body for f in await store.facts("feeds")] == [{"n": 6}]
        assert await store.delete_finished(CUT, limit=STEP) == Pruned(jobs=0, done=True)

    with_store(body)


def test_retention_stopped_between_steps_is_finished_by_the_next_one(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        expired, kept, finished_kept = await history(store)
        first = await store.delete_finished(CUT, limit=STEP)
        assert first == Pruned(jobs=STEP, done=False)
        # A crash here: the next retention (a later tick, another process) starts from scratch,
        # with a later cut-off that now takes the kept finished jobs too, and one step for all.
        later = at(5000)
        assert await store.delete_finished(later) == Pruned(
            jobs=EXPIRED - STEP + len(finished_kept), done=True
        )
        assert await whole_or_gone(store, [*expired, *finished_kept]) == set()
        assert await whole_or_gone(store, kept) == {j.id for j in kept if j not in finished_kept}
        assert await old_activity(store, later) == 0

    with_store(body)


def test_a_step_limit_of_zero_deletes_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        expired, kept, _ = await history(store)
        assert await store.delete_finished(CUT, limit=0) == Pruned(jobs=0, done=False)
        assert await whole_or_gone(store, [*expired, *kept]) == {j.id for j in [*expired, *kept]}

    with_store(body)
