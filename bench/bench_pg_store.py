"""The dispatch cycle on PostgreSQL vs SQLite: claim, record the process, settle, through the Store port.

    .venv/bin/python bench/bench_pg_store.py [--jobs 600] [--rounds 3]

The same work on both: N queued jobs, then a loop of ``claim_next`` (in a lane,
with a deadline), ``record_process`` and ``settle`` (a success with a state
update) until the queue is empty; every unit durable as the stores ship them
(SQLite ``synchronous=FULL`` with group commit, relaxed claims and process
records, ADR 0010; PostgreSQL ``synchronous_commit`` on, claims durable, only
``record_process`` relaxed, ADR 0033). PostgreSQL is a throwaway cluster
started here with **fsync on**. Variants, alternated round by round:

* SQLite, one dispatcher (the daemon's default);
* PostgreSQL, one dispatcher (one node);
* PostgreSQL, four dispatchers at once (four nodes on one database: what
  several daemons share; each unit a transaction of its own);
* the same without the activity log (``PgTx.append_activity`` a no-op): what
  the log's ordering lock (ADR 0033) costs four nodes.

Prints cycles/s (median of the rounds, with the range) and the ratios to SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import heading, machine, median, scratch, spread, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import running_cluster

from ductile.adapters.postgres.store import Node, PostgresStore
from ductile.adapters.postgres.tx import PgTx
from ductile.adapters.sqlite import SqliteStore
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.lanes import Lanes
from ductile.domain.settle import SettleContext
from ductile.fakes import spawner
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import Store

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TTL = timedelta(hours=1)
OK = classify(spawner.ok(state_updates={"n": 1}))
HANDLE = ProcessHandle(pid=1, pgid=1, start_time=1)
PLUGINS = [f"p{i}" for i in range(8)]
_APPEND = PgTx.append_activity
LANES = Lanes(default_width=1, default_hold=timedelta(seconds=127))


async def fill(store: Store, jobs: int) -> None:
    for i in range(jobs):
        job = Job(id=str(uuid.uuid4()), plugin=PLUGINS[i % len(PLUGINS)], command="poll", created_at=T0)
        await store.enqueue(job, actor=Actor.CLI, now=T0, dedupe_ttl=TTL)


async def drain(store: Store) -> int:
    done = 0
    ctx = SettleContext(now=T0)
    while True:
        job = await store.claim_next(T0, lanes=LANES)
        if job is None:
            if await store.queue_depth() == 0:
                return done
            await asyncio.sleep(0.001)  # every lane busy with another dispatcher's job
            continue
        await store.record_process(job.id, HANDLE, token=job.claim_token)
        await store.settle(job.id, OK, ctx=ctx, dedupe_ttl=TTL, token=job.claim_token)
        done += 1


async def sqlite_round(root: Path, n: int, jobs: int) -> float:
    store = await SqliteStore.open(root / f"bench-{n}.db")
    try:
        await fill(store, jobs)
        start = time.perf_counter()
        assert await drain(store) == jobs
        return jobs / (time.perf_counter() - start)
    finally:
        await store.close()


async def postgres_round(cluster_url: str, workers: int, jobs: int, *, activity: bool = True) -> float:
    if not activity:
        PgTx.append_activity = lambda self, entry: None  # type: ignore[method-assign]
    stores = [
        await PostgresStore.open(
            cluster_url,
            instance=f"bench{w}:/state",
            node=Node(id=f"bench-{uuid.uuid4().hex[:8]}", host="bench", pid=os.getpid()),
            lease=timedelta(hours=1),
            pool_size=3,
        )
        for w in range(workers)
    ]
    try:
        await fill(stores[0], jobs)
        start = time.perf_counter()
        counts = await asyncio.gather(*(drain(s) for s in stores))
        assert sum(counts) == jobs
        return jobs / (time.perf_counter() - start)
    finally:
        for store in stores:
            await store.close()
        PgTx.append_activity = _APPEND  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {
        "SQLite, 1 dispatcher": [],
        "PostgreSQL, 1 node": [],
        "PostgreSQL, 4 nodes": [],
        "PostgreSQL, 4 nodes, no activity log": [],
    }
    with scratch("ductile-bench-pg-") as root, running_cluster(fsync=True) as cluster:
        print(machine(root))
        print(f"postgres {cluster.bin.parent.name} (throwaway cluster, fsync on, unix socket)")
        for n in range(args.rounds):
            order = list(results) if n % 2 == 0 else list(reversed(results))
            for label in order:
                if label.startswith("SQLite"):
                    rate = asyncio.run(sqlite_round(root, n, args.jobs))
                else:
                    url = cluster.url(cluster.new_database())
                    workers = 4 if "4" in label else 1
                    rate = asyncio.run(
                        postgres_round(url, workers, args.jobs, activity="no activity" not in label)
                    )
                results[label].append(rate)
    base = median(results["SQLite, 1 dispatcher"])
    heading(f"claim + record_process + settle of {args.jobs} jobs, cycles/s (median of {args.rounds})")
    rows = [[label, median(r), spread(r), median(r) / base] for label, r in results.items()]
    print(table(["store", "cycles/s", "range", "vs SQLite"], rows))


if __name__ == "__main__":
    main()
