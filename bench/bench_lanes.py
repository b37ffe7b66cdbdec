"""Lanes (D14 [A2]): the real daemon draining N jobs of a plugin that sleeps, at 1, 2, 4, 8 workers.

    python bench/bench_lanes.py [--jobs 100] [--sleep 1.0] [--workers 1,2,4,8] [--rounds 1]

The plugin is a ``/bin/sh`` script that reads its request, sleeps ``--sleep``
seconds and answers ok: the work is waiting, as for an LLM call or a git
fetch, so lanes should scale almost ideally even on 2 cores. For each worker
count ``w`` a fresh site (SQLite, ``synchronous=FULL``) has
``service.max_workers: w`` and the plugin's ``parallelism: w``; the N jobs are
enqueued through ``SqliteStore`` before ``ductile start``, and the drain time
is the span from the first run's ``started_at`` to the last ``completed_at``
in the database. Figures: the drain, its speed-up over one worker measured in
the same round, and that speed-up as a share of the ideal (``w``; 1.0 =
perfect). Goal: at least 0.9 of the ideal up to 4 workers. Rounds alternate
the order of the worker counts (1, 2, 4, 8, then 8, 4, 2, 1) so load bursts
hit all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    Daemon,
    heading,
    loadavg,
    machine,
    median,
    query,
    scratch,
    spread,
    table,
    verdict,
    wait_until,
    write_site,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job

GOAL = 0.9


def sleeper(seconds: float) -> str:
    return f"#!/bin/sh\nread -r request\nsleep {seconds}\nprintf '%s\\n' '{{\"status\": \"ok\"}}'\n"


async def fill(db: Path, jobs: int) -> None:
    db.parent.mkdir(mode=0o700, exist_ok=True)
    store = await SqliteStore.open(db)
    now = datetime.now(UTC)
    try:
        await asyncio.gather(
            *(
                store.enqueue(
                    Job(id=str(uuid.uuid4()), plugin="sleeper", command="poll", created_at=now),
                    actor=Actor.CLI,
                    now=now,
                    dedupe_ttl=timedelta(hours=1),
                )
                for _ in range(jobs)
            )
        )
    finally:
        await store.close()


def drain(workers: int, jobs: int, seconds: float) -> float:
    with scratch("ductile-bench-lanes-") as root:
        config = write_site(
            root,
            {"sleeper": sleeper(seconds)},
            settings={"sleeper": {"parallelism": workers, "timeouts": {"poll": "10m"}}},
            service={"max_workers": workers},
        )
        db = root / "state" / "ductile.db"
        asyncio.run(fill(db, jobs))
        daemon = Daemon(config)
        try:
            daemon.wait_running()
            ideal = jobs * seconds / workers
            wait_until(
                lambda: query(db, "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")[0][0] == jobs,
                ideal * 3 + 60,
                f"{jobs} jobs to succeed",
                interval=0.2,
            )
        finally:
            daemon.stop()
        [(first, last)] = query(db, "SELECT MIN(started_at), MAX(completed_at) FROM jobs")
        return float(last - first) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    if counts[0] != 1:
        raise SystemExit("--workers must start with 1 (the baseline)")
    with scratch("ductile-bench-lanes-probe-") as where:
        print(machine(where))
    times: dict[int, list[float]] = {w: [] for w in counts}
    speedups: dict[int, list[float]] = {w: [] for w in counts}
    for n in range(args.rounds):
        order = counts if n % 2 == 0 else list(reversed(counts))
        measured = {w: drain(w, args.jobs, args.sleep) for w in order}
        for w in counts:
            times[w].append(measured[w])
            speedups[w].append(measured[1] / measured[w])
    heading(f"drain of {args.jobs} jobs of a plugin sleeping {args.sleep:g} s (load now {loadavg():.2f})")
    rows = []
    for w in counts:
        share = median(speedups[w]) / w
        goal = verdict(share, GOAL, at_least=True) if w <= 4 else "-"
        rows.append(
            [
                w,
                median(times[w]),
                spread(times[w]),
                args.jobs * args.sleep / w,
                median(speedups[w]),
                share,
                goal,
            ]
        )
    print(table(["max_workers", "drain s", "range", "ideal s", "speed-up", "of ideal", "goal"], rows))


if __name__ == "__main__":
    main()
