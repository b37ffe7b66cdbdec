"""Simulation speed: simulated jobs per wall second, a 50-plugin config over 30 simulated days.

    python bench/bench_sim.py [--days 30] [--plugins 50] [--store indexed] [--seed 1]
                              [--against TREE [--runs N]] [--example-days D]

The config: 40 scheduled pollers (every 5m, 15m, 30m, 1h and 6h, eight of
each, with jitter), the first ten of which emit an event routed to one of 10
handler plugins; a few pollers are flaky (10% failures, retried with backoff).
:class:`ductile.app.sim.Simulation` runs the real engine on the fake
clock, spawner and store (``indexed``: the in-memory store with indexes, meant
for long runs), checking every invariant as it goes, then drains. The figure is
jobs in the result / wall seconds of ``Simulation.run`` (one run; the engine is
deterministic per seed, so the work is the same every time: the trace column, the
first 16 hex digits of the trace hash, shows it). With ``--against TREE`` the
same run is made in fresh interpreters importing ductile from this tree's and
TREE's ``src/``, alternated ``--runs`` times, and the ratio printed (medians).
With ``--example-days D`` it also times ``ductile simulate --days D`` on the
shipped example config (``examples/ductile.yaml``), the command a user runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path

from _common import ROOT, SCRIPT, child_env, goal_row, heading, loadavg, machine, median, table, verdict

from ductile.app.sim import Simulation, parse_behaviour
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import Schedule

GOAL = 10_000.0
#: Issue 18's goal for ``ductile simulate --days 30`` on the example, wall seconds.
EXAMPLE_GOAL = 15.0
INTERVALS = (
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=6),
)


def fifty(plugins: int) -> tuple[Config, dict[str, object]]:
    handlers = plugins // 5
    pollers = plugins - handlers
    configs: list[PluginConfig] = []
    routes: list[Route] = []
    behaviours: dict[str, object] = {}
    for i in range(pollers):
        every = INTERVALS[i % len(INTERVALS)]
        name = f"poller-{i:02d}"
        configs.append(
            PluginConfig(
                name=name,
                schedule=Schedule(tz=UTC, every=every, jitter=every / 10),
                retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=30)),
            )
        )
        if i < handlers:
            routes.append(Route(source=name, event_type=f"{name}.new", target=f"handler-{i:02d}"))
        if i % 8 == 7:
            behaviours[name] = parse_behaviour("flaky:0.1")
    for i in range(handlers):
        configs.append(PluginConfig(name=f"handler-{i:02d}"))
    config = Config(
        service=ServiceConfig(
            state_dir="/sim/state",
            tick_interval=timedelta(minutes=1),
            dedupe_ttl=timedelta(hours=24),
            job_log_retention=timedelta(days=30),
        ),
        plugins_dir="/sim",
        plugins={p.name: p for p in configs},
        routes=tuple(routes),
    )
    return config, behaviours


def measure(days: float, plugins: int, store: str, seed: int) -> dict[str, object]:
    """One run in this process: what it did and how long it took (wall and CPU seconds)."""
    config, behaviours = fifty(plugins)
    sim = Simulation(config, seed=seed, behaviours=behaviours, store=store)  # type: ignore[arg-type]
    started = time.perf_counter()
    cpu = time.process_time()
    result = asyncio.run(sim.run(timedelta(days=days)))
    return {
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "jobs": len(result.jobs),
        "runs": sum(len(j.runs) for j in result.jobs),
        "calls": result.calls,
        "checks": result.checks,
        "trace": result.trace_hash[:16],
    }


def in_child(tree: Path, args: argparse.Namespace) -> dict[str, object]:
    """The same run in a fresh interpreter importing ductile from ``tree``/src."""
    argv = [sys.executable, __file__, "--child", "--days", str(args.days), "--plugins", str(args.plugins)]
    argv += ["--store", args.store, "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def middle(runs: list[dict[str, object]], what: str) -> float:
    """The median of one figure over runs."""
    return median(float(str(r[what])) for r in runs)


def row(label: str, runs: list[dict[str, object]], store: str) -> tuple[object, ...]:
    first = runs[0]
    wall, cpu = middle(runs, "wall"), middle(runs, "cpu")
    jobs = int(str(first["jobs"]))
    rate = jobs / wall
    return (
        label,
        store,
        jobs,
        first["runs"],
        first["calls"],
        first["checks"],
        first["trace"],
        f"{wall:.1f}",
        f"{cpu:.1f}",
        f"{rate:,.0f}",
        f"{jobs / cpu:,.0f}",
        verdict(rate, GOAL, at_least=True),
    )


def example(days: float) -> None:
    """Time ``ductile simulate --days`` on the shipped example, as a user runs it."""
    config = ROOT / "examples" / "ductile.yaml"
    argv = [str(SCRIPT), "simulate", "--config", str(config), "--days", f"{days:g}", "--json"]
    started = time.perf_counter()
    out = subprocess.run(argv, env=child_env(), check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    jobs = sum(int(p["jobs"]) for p in json.loads(out)["summary"])
    print(
        f"\n`ductile simulate --days {days:g}` on examples/ductile.yaml: {jobs:,} jobs in {wall:.1f} s wall "
        f"({jobs / wall:,.0f} jobs/s)"
    )
    goal_row(
        "5b",
        f"`ductile simulate --days {days:g}` on the example",
        f"{wall:.1f} s",
        f"<= {EXAMPLE_GOAL:g} s",
        met=wall <= EXAMPLE_GOAL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--plugins", type=int, default=50)
    parser.add_argument("--store", default="indexed", choices=("indexed", "memory", "sqlite"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--against", type=Path, help="another source tree (its src/) to run side by side")
    parser.add_argument("--runs", type=int, default=1, help="runs of each tree, alternated (with --against)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--example-days", type=float, default=0.0, help="also time `ductile simulate --days D` on the example"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.days, args.plugins, args.store, args.seed)))
        return 0
    heading(f"Simulation speed: {args.plugins} plugins, {args.days:g} simulated days")
    print(machine() + "\n", flush=True)
    trees = [("this tree", ROOT)] + ([("--against", args.against.resolve())] if args.against else [])
    results: dict[str, list[dict[str, object]]] = {label: [] for label, _ in trees}
    for n in range(args.runs if args.against else 1):
        for label, tree in trees if n % 2 == 0 else trees[::-1]:
            if args.against:
                results[label].append(in_child(tree, args))
            else:
                results[label].append(measure(args.days, args.plugins, args.store, args.seed))
    headers = (
        "tree",
        "store",
        "jobs",
        "runs",
        "port calls",
        "checks",
        "trace",
        "wall s",
        "CPU s",
        "jobs per wall s",
        "jobs per CPU s",
        "goal",
    )
    print(table(headers, [row(label, runs, args.store) for label, runs in results.items()]))
    if args.against:
        (mine, theirs), (cpu_mine, cpu_theirs) = (
            [middle(results[label], what) for label, _ in trees] for what in ("wall", "cpu")
        )
        print(
            f"\nthis tree / --against: {theirs / mine:.2f}x per wall second, "
            f"{cpu_theirs / cpu_mine:.2f}x per CPU second"
        )
    wall = middle(results["this tree"], "wall")
    rate = int(str(results["this tree"][0]["jobs"])) / wall
    goal_row(
        "5a",
        f"simulated jobs per wall second ({args.plugins}-plugin config, {args.days:g} days)",
        f"{rate:,.0f}/s",
        f">= {GOAL:,.0f}/s",
        met=rate >= GOAL,
    )
    if args.example_days:
        example(args.example_days)
    print(
        f"\nthis tree simulated {args.days * 86400 / wall:,.0f} s per wall second; "
        f"load average at the end: {loadavg():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
