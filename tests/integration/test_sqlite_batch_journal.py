"""A batch of the SQLite writer keeps its savepoints' journal in memory (issue 18).

The writer runs each unit of a batch in a savepoint; SQLite keeps the pages a
savepoint changed in a *statement journal* until the transaction ends. With
the default ``temp_store``, that journal spills past 64 KiB into a temporary
file (SQLite names them ``etilqs_*`` and unlinks them at once): a few
webhook-sized enqueues into a batch, every page each unit touched was written
to it again (measured: ~15 writes of 4 KiB per enqueue, three quarters of the
writer's system calls). The store keeps it in memory: nothing of it is ever
needed after a crash, the write-ahead log is the journal.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor
from tests.support import builders

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: A GitHub-like delivery: about 1 KB of JSON.
PAYLOAD = {"ref": "refs/heads/main", "commits": [{"id": "0" * 40, "message": "x" * 900}]}
UNITS = 64


def temporary_files(_: sqlite3.Connection) -> list[str]:
    """The SQLite temporary files this process holds open (unlinked: found through /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


def test_a_batch_of_enqueues_writes_no_statement_journal_file(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.db")
        entered, release = threading.Event(), threading.Event()

        def gate(_: sqlite3.Connection) -> None:
            entered.set()
            assert release.wait(10), "gate never released"

        try:
            held = asyncio.ensure_future(store._write("gate", gate))
            assert await asyncio.to_thread(entered.wait, 10)
            enqueues = [
                asyncio.ensure_future(
                    store.enqueue(
                        builders.job(str(uuid.uuid4()), "p", "handle", payload=PAYLOAD),
                        actor=Actor.WEBHOOK,
                        now=NOW,
                        dedupe_ttl=timedelta(hours=1),
                    )
                )
                for _ in range(UNITS)
            ]
            # Last in the batch: by then every enqueue ran in its savepoint, in one transaction.
            probe = asyncio.ensure_future(store._write("probe", temporary_files))
            for _ in range(3):
                await asyncio.sleep(0)
            assert store._writer.queued() == UNITS + 1, "the enqueues and the probe must form one batch"
            commits = store.stats.commits
            release.set()
            await held
            assert await probe == []
            assert all(r.created for r in await asyncio.gather(*enqueues))
            assert store.stats.commits == commits + 2, "the gate's batch, then one batch of all the rest"
            assert store.stats.largest_batch == UNITS + 1
        finally:
            await store.close()

    asyncio.run(main())
