"""``GET /jobs`` / ``ductile jobs`` on 10,000 finished jobs: the text filter against the others.

    python bench/bench_job_query.py [--jobs 10000] [--repeat 7]

Every filter but ``q`` narrows by an index; ``q`` (text in the last error, a run's
error, stderr or response) walks the newest-first index and looks at each job's
runs through their index until the page is full (ADR 0023). Its worst case is a
text found nowhere: every job is looked at. Medians of ``--repeat`` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

from _common import bench_dir, heading, machine, median, table

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext
from ductile.ports.store import JobQuery

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STDERR = b"an ordinary line of stderr\n" * 20
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', stderr_tail=STDERR))
QUERIES = {
    "newest 50, no filter": JobQuery(limit=50),
    "plugin, page of 500": JobQuery(plugin="b", limit=500),
    "since, page of 500": JobQuery(limit=500, since=T0 + timedelta(hours=1)),
    "q: a text in every job (page of 50)": JobQuery(text="ORDINARY", limit=50),
    "q: a text in no job (reads all)": JobQuery(text="found-nowhere", limit=50),
}


async def main(jobs: int, repeat: int) -> None:
    path = bench_dir() / "job_query.db"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    store = await SqliteStore.open(path, synchronous="OFF")  # filling is not what is measured
    try:
        fill = [
            Job(id=f"j{i:06d}", plugin="ab"[i % 2], command="poll", created_at=T0 + timedelta(seconds=i))
            for i in range(jobs)
        ]
        await asyncio.gather(
            *(store.enqueue(job, actor=Actor.API, now=T0, dedupe_ttl=timedelta(0)) for job in fill)
        )
        ctx = SettleContext(now=T0)

        async def worker() -> None:
            while (job := await store.claim_next(T0 + timedelta(days=30))) is not None:
                await store.settle(job.id, OK, ctx=ctx, dedupe_ttl=timedelta(0))

        await asyncio.gather(*(worker() for _ in range(16)))
        rows = []
        for name, query in QUERIES.items():
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                page = await store.find_jobs(query)
                times.append((time.perf_counter() - start) * 1000)
            rows.append([name, len(page.jobs), f"{median(times):.1f}"])
    finally:
        await store.close()
    heading(f"find_jobs on {jobs:,} finished jobs (SQLite, reader thread), median of {repeat}")
    print(table(["query", "jobs", "ms"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(machine(bench_dir()))
    asyncio.run(main(args.jobs, args.repeat))
