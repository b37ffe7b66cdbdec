"""Simulation speed: simulated jobs per wall second, a 50-plugin config over 30 simulated days.

    python bench/bench_sim.py [--days 30] [--plugins 50] [--store indexed] [--seed 1]

The config: 40 scheduled pollers (every 5m, 15m, 30m, 1h and 6h, eight of
each, with jitter), the first ten of which emit an event routed to one of 10
handler plugins; a few pollers are flaky (10% failures, retried with backoff).
:class:`ductile.app.sim.Simulation` runs the real engine on the fake
clock, spawner and store (``indexed``: the in-memory store with indexes, meant
for long runs), checking every invariant as it goes, then drains. The figure is
jobs in the result / wall seconds of ``Simulation.run`` (one run; the engine is
deterministic per seed, so the work is the same every time: the trace column, the
first 16 hex digits of the trace hash, shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, timedelta

from _common import heading, loadavg, machine, table, verdict

from ductile.app.sim import Simulation, parse_behaviour
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import Schedule

GOAL = 10_000.0
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--plugins", type=int, default=50)
    parser.add_argument("--store", default="indexed", choices=("indexed", "memory", "sqlite"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    heading(f"Simulation speed: {args.plugins} plugins, {args.days:g} simulated days")
    print(machine() + "\n", flush=True)
    config, behaviours = fifty(args.plugins)
    sim = Simulation(config, seed=args.seed, behaviours=behaviours, store=args.store)  # type: ignore[arg-type]
    started = time.perf_counter()
    cpu = time.process_time()
    result = asyncio.run(sim.run(timedelta(days=args.days)))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    jobs = len(result.jobs)
    runs = sum(len(j.runs) for j in result.jobs)
    rate = jobs / wall
    print(
        table(
            (
                "store",
                "jobs",
                "runs",
                "port calls",
                "checks",
                "trace",
                "wall s",
                "CPU s",
                "jobs per wall s",
                "goal",
            ),
            [
                (
                    args.store,
                    jobs,
                    runs,
                    result.calls,
                    result.checks,
                    result.trace_hash[:16],
                    f"{wall:.1f}",
                    f"{cpu:.1f}",
                    rate,
                    verdict(rate, GOAL, at_least=True),
                )
            ],
        )
    )
    print(
        f"\nsimulated {args.days * 86400 / wall:,.0f} s per wall second; "
        f"load average at the end: {loadavg():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
