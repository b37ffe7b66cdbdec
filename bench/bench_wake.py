"""``ductile run --wait``: how soon the daemon starts the job, and how soon the CLI returns.

    python bench/bench_wake.py [--runs 15]

A daemon runs with one quick plugin; ``ductile run tick --wait --json`` is run
``--runs`` times in each of two variants, alternated (A, B, B, A, ...):

* **wake**: as shipped: the CLI writes a byte to the daemon's FIFO
  (``state/wake.fifo``, ADR 0024) after its enqueue;
* **poll**: the FIFO is renamed away before the run, so the CLI cannot reach it
  and the daemon notices the job at its next idle poll (at most 1 s).

Per run, from the job's own timestamps in the database and the wall clock:
*pickup* (``started_at - created_at``), *return after end* (the CLI's exit
minus ``completed_at``: what issue 14 bounds at 100 ms) and the whole
command's wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

from _common import (
    SCRIPT,
    Daemon,
    child_env,
    heading,
    machine,
    median,
    query,
    scratch,
    sh_plugin,
    table,
    write_site,
)


def one_run(config: Path, db: Path) -> tuple[float, float, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(SCRIPT), "run", "tick", "--wait", "--json", "--config", str(config)],
        capture_output=True, text=True, env=child_env(), cwd="/", check=True,
    )  # fmt: skip
    ended_wall = time.time()
    elapsed = time.perf_counter() - started
    job_id = json.loads(done.stdout)["job_id"]
    created, began, completed = query(
        db, "SELECT created_at, started_at, completed_at FROM jobs WHERE id = ?", (job_id,)
    )[0]
    return (began - created) / 1e6, ended_wall - completed / 1e6, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with scratch("wake") as root:
        print(machine(root))
        config = write_site(root, {"tick": sh_plugin()})
        daemon = Daemon(config).wait_running()
        fifo, away = root / "state" / "wake.fifo", root / "state" / "wake.fifo.away"
        results: dict[str, list[tuple[float, float, float]]] = {"wake": [], "poll": []}
        try:
            one_run(config, root / "state" / "ductile.db")  # warm-up
            for i in range(args.runs * 2):
                variant = ("wake", "poll", "poll", "wake")[i % 4]
                if variant == "poll":
                    fifo.rename(away)
                try:
                    results[variant].append(one_run(config, root / "state" / "ductile.db"))
                finally:
                    if variant == "poll":
                        away.rename(fifo)
        finally:
            daemon.stop()
    heading(f"ductile run --wait, {args.runs} runs per variant (ms, median [min-max])")
    rows = []
    for variant, runs in results.items():
        cells = [variant]
        for index in range(3):
            values = [r[index] * 1000 for r in runs]
            cells.append(f"{median(values):.1f} [{min(values):.1f}-{max(values):.1f}]")
        rows.append(cells)
    print(table(["variant", "pickup", "return after end", "whole command"], rows))
    print(f"\n(measured {datetime.now().isoformat(timespec='seconds')})")


if __name__ == "__main__":
    main()
