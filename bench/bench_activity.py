"""What the activity log costs the SQLite store (ADR 0025).

    python bench/bench_activity.py [--rounds 5] [--jobs 300]

Each round, on a fresh database file at ``synchronous=FULL``, two variants
alternated (A, B, B, A, ...):

* **with the log**: as shipped: every transition, breaker change and firing
  appends its entry in the same unit;
* **without**: ``SqliteTx.append_activity`` replaced by a no-op (what the
  store did before issue 14).

Measured: enqueue throughput (32 concurrent enqueuers: group commit) and the
dispatcher's cycle (claim_next, record_process, settle) one job at a time.
Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import bench_dir, heading, machine, median, table

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.tx import SqliteTx
from ductile.domain.activity import Activity
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext
from ductile.ports.spawner import ProcessHandle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=24)
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.01))
SHIPPED = SqliteTx.append_activity


def _nothing(self: SqliteTx, activity: Activity) -> None:
    pass


@contextmanager
def variant(name: str) -> Iterator[None]:
    SqliteTx.append_activity = SHIPPED if name == "with the log" else _nothing  # type: ignore[method-assign]
    try:
        yield
    finally:
        SqliteTx.append_activity = SHIPPED  # type: ignore[method-assign]


def job(n: int) -> Job:
    return Job(id=f"job-{n}", plugin="bench", command="poll", payload={"n": n}, created_at=T0)


async def one_round(path: Path, jobs: int) -> tuple[float, float]:
    """(enqueues per second with 32 concurrent callers, dispatcher cycles per second)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - before anything runs
    store = await SqliteStore.open(path)
    try:
        start = time.perf_counter()
        per_task = jobs // 32

        async def enqueuer(k: int) -> None:
            for i in range(per_task):
                await store.enqueue(job(k * per_task + i), actor=Actor.API, now=T0, dedupe_ttl=TTL)

        await asyncio.gather(*(enqueuer(k) for k in range(32)))
        enqueues = 32 * per_task / (time.perf_counter() - start)
        ctx = SettleContext(now=T0 + timedelta(seconds=1))
        handle = ProcessHandle(pid=1, pgid=1, start_time=1)
        start, cycles = time.perf_counter(), 0
        while (claimed := await store.claim_next(T0)) is not None:
            await store.record_process(claimed.id, handle)
            await store.settle(claimed.id, OK, ctx=ctx, dedupe_ttl=TTL)
            cycles += 1
        return enqueues, cycles / (time.perf_counter() - start)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=320)
    args = parser.parse_args()
    where = bench_dir() / "activity.db"
    print(machine(where.parent))
    results: dict[str, list[tuple[float, float]]] = {"with the log": [], "without": []}
    for i in range(args.rounds * 2):
        name = ("with the log", "without", "without", "with the log")[i % 4]
        with variant(name):
            results[name].append(asyncio.run(one_round(where, args.jobs)))
    heading(f"SQLite store, synchronous=FULL, {args.jobs} jobs, {args.rounds} rounds (medians)")
    rows = []
    for name, runs in results.items():
        rows.append([name, f"{median(r[0] for r in runs):,.0f}", f"{median(r[1] for r in runs):,.0f}"])
    with_log, without = results["with the log"], results["without"]
    rows.append([
        "ratio (with / without)",
        f"{median(r[0] for r in with_log) / median(r[0] for r in without):.2f}",
        f"{median(r[1] for r in with_log) / median(r[1] for r in without):.2f}",
    ])  # fmt: skip
    print(table(["variant", "enqueues/s (32 callers)", "dispatcher cycles/s"], rows))


if __name__ == "__main__":
    main()
