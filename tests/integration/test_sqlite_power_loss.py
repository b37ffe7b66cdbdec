"""A power cut after relaxed commits (ADR 0068): what the disk may hold, and what recovery makes of it.

A relaxed commit (a claim, a process record, a settle) is written to the
write-ahead log without an fsync: after a power cut the log on disk may end
anywhere after the last durable commit, even in the middle of a frame. These
tests build every such disk from a real store: the database file and the log
as they were, the log cut at every position past the last durable commit.
SQLite ignores a torn or unsealed tail (frame checksums), so each disk must
hold one of the whole states the store went through, never a part of one: a
settled job with its state and its routed children, or a job still running
with none of them (which recovery queues again: it runs once more, as D1
allows). And the idle writer fsyncs relaxed commits within a second.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.classify import classify
from ductile.domain.job import Actor, JobStatus
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.routing import Route, Target
from ductile.domain.settle import SettleContext
from tests.support import builders

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
ROUTES = (Route(source="p", event_type="new", target="q"),)
TARGETS = {"q": Target(max_attempts=3)}
ANSWER = b'{"status": "ok", "state_updates": {"cursor": 2}, "events": [{"type": "new", "payload": {"n": 1}}]}'
OK = classify(SpawnOutcome(exit_code=0, stdout=ANSWER, duration=0.1), timedelta(seconds=60))


def wal(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


async def _history(db: Path) -> tuple[int, bytes, bytes]:
    """Enqueue (durable), claim and settle (relaxed): the log's length after the durable enqueue,
    then the database file and the log as they are after the settle (nothing checkpointed)."""
    store = await SqliteStore.open(db)
    try:
        await store.enqueue(builders.job("a"), actor=Actor.API, now=T0, dedupe_ttl=TTL)
        durable_end = wal(db).stat().st_size
        claimed = await store.claim_next(T0)
        assert claimed is not None
        ctx = SettleContext(now=T0 + timedelta(seconds=1), routes=ROUTES, targets=TARGETS)
        committed = await store.settle("a", OK, ctx=ctx, dedupe_ttl=TTL, token=claimed.claim_token)
        assert len(committed.children) == 1
        assert store.stats.idle_syncs == 0, "a checkpoint ran: the log no longer holds the history"
        return durable_end, db.read_bytes(), wal(db).read_bytes()  # noqa: ASYNC240 - a test's snapshot
    finally:
        await store.close()


async def _after_restart(db: Path) -> tuple[JobStatus, dict[str, object], JobStatus | None]:
    """What a restarted daemon finds: job a's status and its plugin's state, and job a's status
    once crash recovery has run."""
    store = await SqliteStore.open(db)
    try:
        job = await store.get_job("a")
        assert job is not None, "the durable enqueue was lost"
        state = await store.get_state("p")
        await store.recover(T0 + timedelta(minutes=1))
        again = await store.get_job("a")
        return job.status, state, again.status if again is not None else None
    finally:
        await store.close()


def test_a_log_cut_anywhere_after_the_durable_commit_holds_one_whole_state(tmp_path: Path) -> None:
    db = tmp_path / "live" / "ductile.db"
    db.parent.mkdir()
    durable_end, image, log = asyncio.run(_history(db))
    assert len(log) > durable_end, "the relaxed commits wrote nothing to the log"
    seen = set()
    step = max(1, (len(log) - durable_end) // 24)  # ~25 disks: every frame boundary lies between two
    cuts = sorted({durable_end, len(log), *range(durable_end, len(log), step)})
    for cut in cuts:
        disk = tmp_path / f"cut-{cut}" / "ductile.db"
        disk.parent.mkdir()
        disk.write_bytes(image)
        wal(disk).write_bytes(log[:cut])
        status, state, recovered = asyncio.run(_after_restart(disk))
        if status is JobStatus.SUCCEEDED:
            assert state == {"cursor": 2}, f"cut at {cut}: settled without its state"
            assert recovered is JobStatus.SUCCEEDED
        else:
            assert status in (JobStatus.QUEUED, JobStatus.RUNNING), f"cut at {cut}: {status}"
            assert state == {}, f"cut at {cut}: the state of a settle that is not there"
            assert recovered is JobStatus.QUEUED, f"cut at {cut}: recovery did not queue it again"
        seen.add(status)
        shutil.rmtree(disk.parent)
    # The whole log is the settled job; the log cut at the durable commit, the queued one.
    assert seen >= {JobStatus.SUCCEEDED, JobStatus.QUEUED}


def test_children_are_never_found_without_their_parents_settle(tmp_path: Path) -> None:
    db = tmp_path / "live" / "ductile.db"
    db.parent.mkdir()
    durable_end, image, log = asyncio.run(_history(db))
    for cut in range(durable_end + 251, len(log), max(1, (len(log) - durable_end) // 24)):
        disk = tmp_path / f"cut-{cut}" / "ductile.db"
        disk.parent.mkdir()
        disk.write_bytes(image)
        wal(disk).write_bytes(log[:cut])

        async def look(disk: Path = disk) -> tuple[JobStatus, int]:
            store = await SqliteStore.open(disk)
            try:
                job = await store.get_job("a")
                assert job is not None
                return job.status, await store.queue_depth()
            finally:
                await store.close()

        status, depth = asyncio.run(look())
        # Settled: its one child is queued. Not settled: only itself may be queued (never a child).
        assert (status, depth) in ((JobStatus.SUCCEEDED, 1), (JobStatus.RUNNING, 0), (JobStatus.QUEUED, 1))
        shutil.rmtree(disk.parent)


def test_an_idle_writer_makes_relaxed_commits_durable_within_a_second(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.db")
        try:
            await store.enqueue(builders.job("a"), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            assert store.stats.idle_syncs == 0
            claimed = await store.claim_next(T0)
            assert claimed is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while store.stats.idle_syncs == 0:
                assert loop.time() < deadline, "relaxed commits were never synced"
                await asyncio.sleep(0.05)
            synced = store.stats.idle_syncs
            # Nothing relaxed since: idling on (past the writer's next idle round) does not sync again.
            await asyncio.sleep(1.5)
            assert store.stats.idle_syncs == synced
        finally:
            await store.close()

    asyncio.run(main())
