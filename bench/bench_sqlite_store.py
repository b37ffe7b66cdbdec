"""SqliteStore durability cost: synchronous=FULL vs NORMAL, and what group commit buys.

Usage: .venv/bin/python bench/bench_sqlite_store.py [--rounds 3] [--seq 300] [--tasks 32]
                                                   [--per-task 20] [--claims 300] [--dir DIR]

Scenarios, each on a fresh database file, FULL and NORMAL measured side by
side in the same run (alternating, so both see the same machine load):

  sequential enqueue      one caller awaiting each enqueue (one commit each)
  N concurrent enqueuers  N asyncio tasks enqueueing in a loop: group commit
  ... group commit off    the same with MAX_BATCH = 1 (one commit per unit)
  claim + settle          one dispatcher: claim_next, then settle(ok), in a loop

Then the dispatcher's whole cycle (claim_next, record_process, settle) three
ways, alternating: FULL as shipped (claims and process records are relaxed
units, committed at NORMAL), FULL with every unit durable (as before that
change), and NORMAL throughout.

Prints medians over the rounds and the ratios. The database lives under --dir
(default: the benches' directory, see _common.bench_dir: the temp dir unless it
is a tmpfs, where fsync would cost nothing); the filesystem type is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import bench_dir

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite import worker as sqlite_worker
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext
from ductile.ports.spawner import ProcessHandle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=24)
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.01))
MODES = ("FULL", "NORMAL")


def new_job(n: int) -> Job:
    return Job(id=f"job-{n}", plugin="bench", command="poll", payload={"n": n}, created_at=T0)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


Scenario = Callable[[SqliteStore, argparse.Namespace], Awaitable[int]]


async def sequential(store: SqliteStore, args: argparse.Namespace) -> int:
    for n in range(args.seq):
        await store.enqueue(new_job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL)
    return args.seq


async def concurrent(store: SqliteStore, args: argparse.Namespace) -> int:
    counter = Counter()

    async def enqueuer() -> None:
        for _ in range(args.per_task):
            await store.enqueue(new_job(counter.next()), actor=Actor.API, now=T0, dedupe_ttl=TTL)

    await asyncio.gather(*(enqueuer() for _ in range(args.tasks)))
    return args.tasks * args.per_task


async def claim_settle(store: SqliteStore, args: argparse.Namespace) -> int:
    done = 0
    ctx = SettleContext(now=T0 + timedelta(seconds=1))
    while (job := await store.claim_next(T0)) is not None:
        await store.settle(job.id, OK, ctx=ctx, dedupe_ttl=TTL, token=job.claim_token)
        done += 1
    return done


async def prefill(store: SqliteStore, args: argparse.Namespace) -> None:
    await asyncio.gather(
        *(store.enqueue(new_job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL) for n in range(args.claims))
    )


async def measure(
    path: Path, mode: str, scenario: Scenario, args: argparse.Namespace, *, batch: int
) -> tuple[float, float]:
    """(operations per second, units per commit) of one scenario on a fresh file."""
    remove_database(path)
    store = await SqliteStore.open(path, synchronous=mode)
    try:
        if scenario is claim_settle:
            await prefill(store, args)
        sqlite_worker.MAX_BATCH = batch
        before = store.stats
        start = time.perf_counter()
        ops = await scenario(store, args)
        elapsed = time.perf_counter() - start
        after = store.stats
    finally:
        sqlite_worker.MAX_BATCH = DEFAULT_BATCH
        await store.close()
    commits = max(1, after.commits - before.commits)
    return ops / elapsed, (after.units - before.units) / commits


DEFAULT_BATCH = sqlite_worker.MAX_BATCH


class AllDurableStore(SqliteStore):
    """SqliteStore with every unit durable: how it committed before relaxed units existed."""

    async def _write(self, name, fn, *, durable=True):  # type: ignore[no-untyped-def]
        return await super()._write(name, fn, durable=True)


async def dispatcher_cycle(path: Path, variant: str, n: int) -> float:
    """Cycles per second of claim_next + record_process + settle on a fresh file."""
    remove_database(path)
    cls, mode = {
        "FULL": (SqliteStore, "FULL"),
        "FULL, all durable": (AllDurableStore, "FULL"),
        "NORMAL": (SqliteStore, "NORMAL"),
    }[variant]
    store = await cls.open(path, synchronous=mode)
    try:
        await asyncio.gather(
            *(store.enqueue(new_job(i), actor=Actor.API, now=T0, dedupe_ttl=TTL) for i in range(n))
        )
        ctx = SettleContext(now=T0 + timedelta(seconds=1))
        handle = ProcessHandle(pid=1, pgid=1, start_time=1)
        start = time.perf_counter()
        while (job := await store.claim_next(T0)) is not None:
            await store.record_process(job.id, handle, token=job.claim_token)
            await store.settle(job.id, OK, ctx=ctx, dedupe_ttl=TTL, token=job.claim_token)
        return n / (time.perf_counter() - start)
    finally:
        await store.close()


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def filesystem_of(path: Path) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return f"{kind} (mounted at {best or '?'})"


async def main(args: argparse.Namespace) -> None:
    rows: list[tuple[str, Scenario, int]] = [
        ("sequential enqueue", sequential, DEFAULT_BATCH),
        (f"{args.tasks} concurrent enqueuers", concurrent, DEFAULT_BATCH),
        (f"{args.tasks} concurrent, group commit off", concurrent, 1),
        ("claim + settle (pairs)", claim_settle, DEFAULT_BATCH),
    ]
    base = Path(args.dir) if args.dir else None
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-", dir=base or bench_dir()) as tmp:
        path = Path(tmp) / "bench.db"
        print(f"python     {sys.executable} ({platform.python_implementation()} {platform.python_version()})")
        print(f"sqlite     {sqlite3.sqlite_version}; {os.cpu_count()} CPUs; {platform.platform()}")
        print(f"database   {path} on {filesystem_of(Path(tmp))}")
        print(
            f"workload   rounds={args.rounds} seq={args.seq} tasks={args.tasks} "
            f"per_task={args.per_task} claims={args.claims}"
        )
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_no in range(args.rounds):
            order = MODES if round_no % 2 == 0 else MODES[::-1]
            for name, scenario, batch in rows:
                for mode in order:
                    results.setdefault((name, mode), []).append(
                        await measure(path, mode, scenario, args, batch=batch)
                    )

        def med(name: str, mode: str, index: int) -> float:
            return statistics.median(r[index] for r in results[(name, mode)])

        print()
        header = (
            f"{'scenario':<36} {'FULL ops/s':>11} {'NORMAL ops/s':>13} {'FULL/NORMAL':>12} "
            f"{'units/commit':>13}"
        )
        print(header)
        print("-" * len(header))
        for name, _, _ in rows:
            full, normal = med(name, "FULL", 0), med(name, "NORMAL", 0)
            per_commit = med(name, "FULL", 1)
            print(f"{name:<36} {full:>11,.0f} {normal:>13,.0f} {full / normal:>12.2f} {per_commit:>13.1f}")
        print()
        seq_full = med(rows[0][0], "FULL", 0)
        conc_full = med(rows[1][0], "FULL", 0)
        conc_off = med(rows[2][0], "FULL", 0)
        print(f"group commit, FULL: {args.tasks} concurrent vs sequential      x{conc_full / seq_full:.1f}")
        print(f"group commit, FULL: on vs off with {args.tasks} concurrent      x{conc_full / conc_off:.1f}")
        print(
            f"FULL with group commit vs NORMAL sequential             "
            f"x{conc_full / med(rows[0][0], 'NORMAL', 0):.2f}"
        )
        variants = ["FULL", "FULL, all durable", "NORMAL"]
        cycles: dict[str, list[float]] = {v: [] for v in variants}
        for round_no in range(args.rounds):
            for variant in variants if round_no % 2 == 0 else variants[::-1]:
                cycles[variant].append(await dispatcher_cycle(path, variant, args.claims))
        print()
        title = "dispatcher cycle: claim + record_process + settle"
        header = f"{title:<52} {'cycles/s':>9} {'ms/cycle':>9} {'vs FULL':>8}"
        print(header)
        print("-" * len(header))
        full = statistics.median(cycles["FULL"])
        for variant in variants:
            rate = statistics.median(cycles[variant])
            print(f"{variant:<52} {rate:>9,.0f} {1e3 / rate:>9.2f} {rate / full:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq", type=int, default=300, help="sequential enqueues per round")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent enqueuers")
    parser.add_argument("--per-task", type=int, default=20, help="enqueues per concurrent enqueuer")
    parser.add_argument("--claims", type=int, default=300, help="claim+settle pairs per round")
    parser.add_argument("--dir", default=None, help="where to put the database (default: the benches' dir)")
    asyncio.run(main(parser.parse_args()))
