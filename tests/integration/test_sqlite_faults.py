"""SqliteStore under faults of the machine: a full disk (a real tmpfs), a lock held by another
process, a corrupt page, a deleted write-ahead log.

What must hold (issue 19, items 1, 2 and 5): a failed write is a typed error
(transient or permanent) with one clear line; a fault starts an *episode*,
logged once when it begins and once when it ends; ``write_fault()`` says why
writes fail while they do; the store heals itself as soon as the machine
allows (a full disk: once the space the error names is free, without any
write being asked); and nothing committed is lost when a ``-wal`` file is
deleted under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.errors import StoreBusyError, StoreCorruptError, StoreError, StoreFullError
from ductile.domain.classify import RunEnd, classify
from ductile.domain.job import Actor
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.retry import RetryPolicy
from ductile.domain.settle import SettleContext
from ductile.ports.store import PermanentStoreError, TransientStoreError
from tests.support.builders import job
from tests.support.disks import fill, give_back, tmpfs

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
#: A payload that makes each job's row take about a page.
BIG = {"blob": "x" * 3000}
#: Bound of every wait on the store's own upkeep (it runs about once a second).
HEAL_TIMEOUT = 15.0


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def enqueue(store: SqliteStore, job_id: str, **fields: Any) -> str:
    result = await store.enqueue(job(job_id, **fields), actor=Actor.API, now=T0, dedupe_ttl=TTL)
    return result.job_id


async def eventually(condition: Callable[[], bool], what: str, timeout: float = HEAL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def ok() -> RunEnd:
    return classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.1))


def context() -> SettleContext:
    return SettleContext(now=T0, draw=0.5, retry=RetryPolicy())


def store_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage() and getattr(r, "component", "") == "store"]


def wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_fails_writes_clearly_and_heals_once_the_named_space_is_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills during enqueues: each failed write is a StoreFullError naming the space it
    needs; freeing exactly that much is enough, and the store heals without being asked to write."""
    caplog.set_level(logging.INFO, logger="ductile")
    with tmpfs(tmp_path / "disk", 4 * 1024 * 1024) as disk:
        path = disk / "ductile.db"

        async def main() -> None:
            store = await SqliteStore.open(path)
            try:
                for i in range(200):  # the log grows to ~1 MiB, far below the autocheckpoint
                    await enqueue(store, f"a{i}", payload=BIG)
                filler = fill(disk)
                acknowledged = 200
                for i in range(1000):  # the log may still have room for a few rows
                    try:
                        await enqueue(store, f"b{i}", payload=BIG)
                    except StoreFullError:
                        break
                    acknowledged += 1
                else:
                    raise AssertionError("the disk never filled")
                for i in range(4):  # once full, every write fails until space is freed
                    with pytest.raises(StoreFullError) as caught:
                        await enqueue(store, f"c{i}", payload=BIG)
                error = caught.value
                assert isinstance(error, TransientStoreError)
                assert error.needed is not None
                assert f"{path}: enqueue failed: the disk is full" in str(error)
                assert "Free at least" in str(error)
                fault = store.write_fault()
                assert fault is not None
                assert (fault.kind, fault.transient) == ("full", True)
                # One line for the whole episode, however many writes failed.
                assert len(store_lines(caplog, "the database refuses writes")) == 1
                # The figure is enough: free exactly that, ask for nothing.
                give_back(filler, error.needed)
                await eventually(lambda: store.write_fault() is None, "the store to heal by itself")
                assert wal_size(path) < 64 * 1024, "the write-ahead log was checkpointed and truncated"
                await eventually(
                    lambda: bool(store_lines(caplog, "the database accepts writes again")),
                    "the end of the episode (once writes have worked for a few seconds)",
                )
                ended = store_lines(caplog, "the database accepts writes again")
                assert len(ended) == 1
                assert "5 write(s) failed meanwhile" in ended[0].getMessage()
                assert await enqueue(store, "d", payload=BIG) == "d"
                assert await store.queue_depth() == acknowledged + 1
            finally:
                await store.close()

        run(main())


def test_a_disk_that_fills_while_the_log_waits_for_its_checkpoint_needs_only_what_the_error_says(
    tmp_path: Path,
) -> None:
    """The log holds pages the database file does not have yet; the disk fills: the checkpoint
    itself cannot run. The error names the space the database must grow by (plus a margin), not
    the log's whole size; once that is free the log is moved in and truncated."""
    with tmpfs(tmp_path / "disk", 12 * 1024 * 1024) as disk:
        path = disk / "ductile.db"

        async def main() -> None:
            store = await SqliteStore.open(path)
            try:
                for batch in range(6):  # ~2.4 MiB of new pages in a few group commits: all in the log
                    await asyncio.gather(*(enqueue(store, f"a{batch}-{i}", payload=BIG) for i in range(100)))
                assert path.stat().st_size < 256 * 1024 < 2 * 1024 * 1024 < wal_size(path)
                filler = fill(disk)
                with pytest.raises(StoreFullError) as caught:
                    await enqueue(store, "b", payload=BIG)
                needed = caught.value.needed
                assert needed is not None
                assert needed < wal_size(path) + 1024 * 1024
                # Half of it is not enough: still refused, in the same episode.
                give_back(filler, needed // 4)
                await asyncio.sleep(2.5)  # two upkeep rounds: each tries the checkpoint and fails
                assert store.write_fault() is not None
                give_back(filler, needed)
                await eventually(lambda: store.write_fault() is None, "the checkpoint to go through")
                assert wal_size(path) < 64 * 1024
                assert await enqueue(store, "c") == "c"
            finally:
                await store.close()
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (601,)
            conn.close()

        run(main())


def test_with_little_space_left_the_log_is_kept_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    with tmpfs(tmp_path / "disk", 6 * 1024 * 1024) as disk:
        path = disk / "ductile.db"

        async def main() -> None:
            store = await SqliteStore.open(path)
            try:
                await eventually(
                    lambda: bool(store_lines(caplog, "checkpointed every 64 pages")),
                    "the store to notice the space is low",
                )
                for i in range(400):  # 1.6 MiB of rows: with SQLite's 1000 pages the log would hold it all
                    await enqueue(store, f"a{i}", payload=BIG)
                assert wal_size(path) < 600 * 1024
            finally:
                await store.close()

        run(main())


# --------------------------------------------------------------------------- a held lock


def hold_exclusive(path: Path) -> subprocess.Popen[str]:
    """Another process that takes the write lock (``BEGIN EXCLUSIVE``) and holds it until its stdin closes."""
    code = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
        "c.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_held_by_another_process_is_a_transient_fault_that_ends_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    path = tmp_path / "ductile.db"

    async def main() -> None:
        store = await SqliteStore.open(path, busy_timeout=0.3)
        try:
            holder = hold_exclusive(path)
            try:
                for i in range(3):
                    with pytest.raises(StoreBusyError):
                        await enqueue(store, f"a{i}")
                fault = store.write_fault()
                assert fault is not None
                assert (fault.kind, fault.transient) == ("busy", True)
                assert len(store_lines(caplog, "the database refuses writes")) == 1
            finally:
                assert holder.stdin is not None
                holder.stdin.close()
                holder.wait(10)
            await eventually(lambda: store.write_fault() is None, "the store to notice the lock is free")
            await eventually(
                lambda: bool(store_lines(caplog, "the database accepts writes again")), "the episode's end"
            )
            assert len(store_lines(caplog, "the database refuses writes")) == 1
        finally:
            await store.close()

    run(main())


# --------------------------------------------------------------------------- a corrupt page


def _corrupt_table(path: Path, table: str) -> None:
    """Overwrite ``table``'s root page with garbage, in the file (everything checkpointed first)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(os.urandom(size))


def test_a_corrupt_page_met_by_a_write_is_permanent_and_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    path = tmp_path / "ductile.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        await enqueue(store, "a")
        running = await store.claim_next(T0)
        assert running is not None
        await store.close()
        _corrupt_table(path, "runs")  # only a settle writes there
        store = await SqliteStore.open(path)  # no integrity check asked: as if it broke at run time
        try:
            with pytest.raises(StoreCorruptError) as caught:
                await store.settle("a", ok(), ctx=context(), dedupe_ttl=TTL, token=running.claim_token)
            assert isinstance(caught.value, PermanentStoreError)
            assert "restore the database from a backup" in str(caught.value)
            assert "ductile selfcheck" in str(caught.value)
            # Another write works (other pages), but the store still says it is damaged.
            assert await enqueue(store, "b") == "b"
            fault = store.write_fault()
            assert fault is not None
            assert (fault.kind, fault.transient) == ("corrupt", False)
            await asyncio.sleep(1.5)  # an upkeep round: a permanent fault is not "healed"
            assert store.write_fault() == fault
            assert len(store_lines(caplog, "refuses writes until it is repaired")) == 1
        finally:
            await store.close()

    run(main())


# --------------------------------------------------------------------------- opening: whole, or refused


def test_a_new_database_appears_whole_and_a_killed_creators_leftovers_are_swept(tmp_path: Path) -> None:
    dead_pid = subprocess.Popen(["true"])  # a pid that has just ended
    dead_pid.wait()
    leftover = tmp_path / f".ductile.db.new-{dead_pid.pid}-0badc0de"
    leftover.write_bytes(b"half a database")
    alive = tmp_path / f".ductile.db.new-{os.getpid()}-0badc0de"  # a creator still at work: kept
    alive.write_bytes(b"")
    path = tmp_path / "ductile.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    run(main())
    assert path.stat().st_size > 0
    assert not leftover.exists()
    assert alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ductile.db")) == ["ductile.db"]


@pytest.mark.parametrize("case", ["empty", "link", "wal without database"])
def test_what_opening_refuses_it_leaves_as_it_was(tmp_path: Path, case: str) -> None:
    path = tmp_path / "ductile.db"
    target = tmp_path / "elsewhere.db"
    if case == "empty":
        path.write_bytes(b"")
        expected, words = StoreCorruptError, r"is empty \(0 bytes\)"
    elif case == "link":
        path.symlink_to(target)
        expected, words = StoreError, "is a symbolic link"
    else:
        Path(f"{path}-wal").write_bytes(b"x" * 4096)
        expected, words = StoreCorruptError, "is missing but its write-ahead log"
    before = sorted((p.name, p.lstat().st_size) for p in tmp_path.iterdir())
    with pytest.raises(expected, match=words):
        run(SqliteStore.open(path))
    assert sorted((p.name, p.lstat().st_size) for p in tmp_path.iterdir()) == before
    assert not target.exists()
