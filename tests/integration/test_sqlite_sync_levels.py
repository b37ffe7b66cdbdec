"""SqliteStore's sync level per unit (ADR 0010): which writes may skip the fsync.

Claims, process records, settles and retention steps are *relaxed* units (ADR 0010's amendment,
ADR 0068, ADR 0064): a batch made only of them
commits at ``synchronous=NORMAL``; any other write is *durable* and pulls its
whole batch up to the store's level (FULL by default). The level a unit
reaches the database with is observed from inside the transaction
(``PRAGMA synchronous``) by a probe unit placed in the same batch as the write
under test: the probe sees NORMAL only if every unit of its batch is relaxed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.worker import SYNCHRONOUS_MODES, relaxed_level
from ductile.domain.classify import classify
from ductile.domain.job import Actor, JobStatus
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext
from ductile.ports.spawner import ProcessHandle
from tests.support import builders

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
#: ``PRAGMA synchronous`` answers with a number.
LEVEL = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.1))


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def level_inside(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


class Gate:
    """Holds the writer thread until released, so the units queued meanwhile form one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def unit(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("gate never released")

    async def hold(self, store: SqliteStore) -> asyncio.Task[None]:
        task = asyncio.ensure_future(store._write("gate", self.unit))
        assert await asyncio.to_thread(self.entered.wait, 10), "the writer never picked up the gate"
        return task


async def batch_level(store: SqliteStore, write: Callable[[], Awaitable[Any]]) -> int:
    """The level a relaxed probe sees when it shares one batch with ``write()``."""
    gate = Gate()
    held = await gate.hold(store)
    probe = asyncio.ensure_future(store._write("probe", level_inside, durable=False))
    other = asyncio.ensure_future(write())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store._writer.queued() == 2, "the probe and the write must wait in the queue together"
    commits = store.stats.commits
    gate.release.set()
    await held
    level = await probe
    await other
    # The gate's batch, then one more: the probe and the write together.
    assert store.stats.commits == commits + 2, "the probe and the write were not one batch"
    return level


@pytest.mark.parametrize("mode", SYNCHRONOUS_MODES)
def test_relaxed_level_is_normal_at_most_and_never_above_the_store(mode: str) -> None:
    relaxed = relaxed_level(mode)
    assert LEVEL[relaxed] <= LEVEL["NORMAL"]
    assert LEVEL[relaxed] <= LEVEL[mode]
    assert relaxed == (mode if LEVEL[mode] <= LEVEL["NORMAL"] else "NORMAL")


@pytest.mark.parametrize("mode", SYNCHRONOUS_MODES)
def test_probes_alone_and_mixed_see_the_level_of_their_batch(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.db", synchronous=mode)
        try:
            assert await store._write("durable", level_inside) == LEVEL[mode]
            assert await store._write("relaxed", level_inside, durable=False) == LEVEL[relaxed_level(mode)]
            # Back and forth: the level follows each batch, it does not stick.
            assert await store._write("durable", level_inside) == LEVEL[mode]
            mixed = await batch_level(store, lambda: store._write("durable", level_inside))
            assert mixed == LEVEL[mode], "one durable unit makes the whole batch durable"
            alone = await batch_level(store, lambda: store._write("relaxed", level_inside, durable=False))
            assert alone == LEVEL[relaxed_level(mode)]
        finally:
            await store.close()

    run(main())


def test_claims_process_records_and_settles_are_relaxed_every_other_write_is_durable(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.db")  # the default: FULL
        try:
            full, normal = LEVEL["FULL"], LEVEL["NORMAL"]
            await store.enqueue(builders.job("a"), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            assert await batch_level(store, lambda: store.claim_next(T0)) == normal
            handle = ProcessHandle(pid=123, pgid=123, start_time=1)
            assert await batch_level(store, lambda: store.record_process("a", handle, token=1)) == normal
            ctx = SettleContext(now=T0 + timedelta(seconds=1))
            # A settle too (ADR 0068): lost to a power cut, the job runs once more.
            assert (
                await batch_level(store, lambda: store.settle("a", OK, ctx=ctx, dedupe_ttl=TTL, token=1))
                == normal
            )
            enqueue_b = lambda: store.enqueue(builders.job("b"), actor=Actor.API, now=T0, dedupe_ttl=TTL)  # noqa: E731
            assert await batch_level(store, enqueue_b) == full
            assert await batch_level(store, lambda: store.claim("b", T0)) == normal
            assert await batch_level(store, lambda: store.recover(T0)) == full
            assert await batch_level(store, lambda: store.cancel_queued("p", reason="r", now=T0)) == full
            # A retention step lost to a power cut is taken again by the next one (ADR 0064).
            assert await batch_level(store, lambda: store.delete_finished(T0)) == normal
            assert await batch_level(store, lambda: store.reset_breakers("p")) == full
            # The relaxed writes were committed and are read back like any other.
            job = await store.get_job("a")
            assert job is not None
            assert job.status is JobStatus.SUCCEEDED
        finally:
            await store.close()

    run(main())


def test_stats_count_the_relaxed_commits(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.db")
        try:
            await store.enqueue(builders.job("a"), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            before = store.stats
            claimed = await store.claim_next(T0)
            assert claimed is not None
            await store.record_process("a", ProcessHandle(pid=5, pgid=5, start_time=7), token=1)
            await store.settle("a", OK, ctx=SettleContext(now=T0), dedupe_ttl=TTL, token=1)
            after = store.stats
            assert after.commits - before.commits == 3
            assert after.relaxed_commits - before.relaxed_commits == 3
        finally:
            await store.close()

    run(main())


CHILD = """
import asyncio, os, signal, sys
from datetime import UTC, datetime, timedelta
from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job
from ductile.ports.spawner import ProcessHandle

async def main():
    store = await SqliteStore.open(sys.argv[1])
    now = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(int(sys.argv[2])):
        job = Job(id=f"j{n}", plugin="p", command="poll", created_at=now)
        await store.enqueue(job, actor=Actor.API, now=now, dedupe_ttl=timedelta(hours=1))
        assert (await store.claim_next(now)).id == job.id
        await store.record_process(job.id, ProcessHandle(pid=1000 + n, pgid=1000 + n, start_time=n), token=1)
    print("acknowledged", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_process_kill_loses_no_relaxed_commit(tmp_path: Path) -> None:
    """Relaxed means "may be lost to a power cut", never to a crash: the kernel keeps the WAL."""
    db = tmp_path / f"{uuid.uuid4().hex}.db"
    n = 20
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(n)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "acknowledged", done.stderr
    assert done.returncode == -9

    async def main() -> list[Any]:
        store = await SqliteStore.open(db)
        try:
            running = await store.running()
        finally:
            await store.close()
        return [(r.job.id, r.job.status, r.process) for r in running]

    found = run(main())
    assert found == [
        (f"j{i}", JobStatus.RUNNING, ProcessHandle(pid=1000 + i, pgid=1000 + i, start_time=i))
        for i in range(n)
    ], json.dumps([str(f) for f in found])
