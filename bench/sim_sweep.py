"""The big seed sweep: many seeds of a simulation scenario, every invariant checked.

    .venv/bin/python bench/sim_sweep.py --seeds 10000            # seeds 0..9999
    .venv/bin/python bench/sim_sweep.py --first 5000 --seeds 2000 --store sqlite --days 0.5
    .venv/bin/python bench/sim_sweep.py --seeds 10000 --jobs 2   # worker processes

Prints each failing seed with its invariant and the command that replays it,
then a summary (seeds/s, jobs and crashes simulated) and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ductile.app.sim import SCENARIOS, STORE_KINDS, InvariantError, run_scenario


def _one(task: tuple[str, int, str, float | None]) -> dict[str, Any]:
    scenario, seed, store, days = task
    try:
        result = asyncio.run(run_scenario(scenario, seed, store=store, days=days))  # type: ignore[arg-type]
    except InvariantError as e:
        return {"seed": seed, "ok": False, "code": e.code, "message": str(e)}
    return {
        "seed": seed,
        "ok": True,
        "jobs": len(result.jobs),
        "crashes": result.crashes,
        "calls": result.calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000, help="how many seeds (default 10000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="sweep")
    parser.add_argument("--store", choices=STORE_KINDS, default="memory")
    parser.add_argument("--days", type=float, default=None, help="simulated days (default: the scenario's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--stop-after", type=int, default=20, help="stop after this many failures")
    args = parser.parse_args()
    tasks = [
        (args.scenario, seed, args.store, args.days) for seed in range(args.first, args.first + args.seeds)
    ]
    started = time.perf_counter()
    failures: list[dict[str, Any]] = []
    jobs = crashes = calls = done = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for outcome in pool.map(_one, tasks, chunksize=8):
            done += 1
            if outcome["ok"]:
                jobs += outcome["jobs"]
                crashes += outcome["crashes"]
                calls += outcome["calls"]
            else:
                failures.append(outcome)
                print(f"seed {outcome['seed']}: {outcome['message']}\n", flush=True)
                if len(failures) >= args.stop_after:
                    pool.shutdown(cancel_futures=True)
                    break
            if done % 500 == 0:
                rate = done / (time.perf_counter() - started)
                print(
                    f"... {done} seeds, {len(failures)} failed, {rate:.1f} seeds/s",
                    file=sys.stderr,
                    flush=True,
                )
    elapsed = time.perf_counter() - started
    print(
        f"{done} seeds of '{args.scenario}' ({args.store}) in {elapsed:.1f} s with {args.jobs} worker(s): "
        f"{done / elapsed:.2f} seeds/s; {jobs} jobs, {crashes} crashes, {calls} port calls simulated; "
        f"{len(failures)} failed"
    )
    codes: dict[str, int] = {}
    for f in failures:
        codes[f["code"]] = codes.get(f["code"], 0) + 1
    for code, count in sorted(codes.items()):
        print(f"  {count} x {code}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
