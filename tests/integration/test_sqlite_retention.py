"""Retention in steps on a real SQLite file (ADR 0064): a step that fails part-way leaves
nothing of itself; a store closed between two steps reopens whole, and the next retention
finishes the work."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Job
from ductile.ports.store import Pruned
from tests.contracts.test_store_contract import at, finish, make_job

CUT = at(1000)


async def finished(store: SqliteStore, n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        job = make_job(created=at(10 * i))
        await finish(store, job, now=at(10 * i + 1))
        jobs.append(job)
    return jobs


def counts(path: Path) -> tuple[int, int, int, int]:
    with closing(sqlite3.connect(path)) as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("jobs", "transitions", "runs", "activity")
        )


def test_a_step_that_fails_part_way_is_rolled_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            jobs = await finished(store, 6)
            before = counts(path)
            # The step deletes history and activity first; the jobs table refuses its last delete.
            with closing(sqlite3.connect(path)) as conn:
                conn.execute(
                    f"CREATE TRIGGER refuse BEFORE DELETE ON jobs WHEN old.id = '{jobs[1].id}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
                conn.commit()
            with pytest.raises(Exception, match="refused by the test"):
                await store.delete_finished(CUT, limit=4)
            assert counts(path) == before  # nothing of the failed step is left
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("DROP TRIGGER refuse")
                conn.commit()
            assert (await store.delete_finished(CUT, limit=4)).jobs == 4
        finally:
            await store.close()

    asyncio.run(main())


def test_a_store_closed_between_steps_reopens_whole_and_the_next_retention_finishes(tmp_path: Path) -> None:
    path = tmp_path / "d.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            jobs = await finished(store, 5)
            assert await store.delete_finished(CUT, limit=2) == Pruned(jobs=2, done=False)
        finally:
            await store.close()  # the process stops here: the rest is left for later
        jobs_left, transitions, runs, _ = counts(path)
        assert (jobs_left, transitions, runs) == (3, 9, 3)  # three whole jobs: 3 transitions, 1 run each
        store = await SqliteStore.open(path, integrity_check=True)
        try:
            steps = []
            while not steps or not steps[-1].done:
                steps.append(await store.delete_finished(CUT, limit=2))
            assert sum(s.jobs for s in steps) == 3
            assert [await store.get_job(j.id) for j in jobs] == [None] * len(jobs)
        finally:
            await store.close()
        assert counts(path) == (0, 0, 0, 0)

    asyncio.run(main())
