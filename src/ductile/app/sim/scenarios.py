"""Named, reproducible setups (the seed sweep's canonical one), and ``python -m ductile.app.sim``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from ductile.app.sim.behaviour import Behaviour, parse_behaviour
from ductile.app.sim.catalog import SIM_ROOT
from ductile.app.sim.faults import Arrivals, Faults, Reload
from ductile.app.sim.invariants import InvariantError
from ductile.app.sim.results import SimulationResult
from ductile.app.sim.simulation import STORE_KINDS, Simulation, StoreKind
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.config import Config, Endpoint, PluginConfig, ServiceConfig, Timeouts, WebhooksConfig
from ductile.domain.job import TERMINAL
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import CatchUp, IfRunning, Schedule, Window, weekdays


@attrs.frozen(kw_only=True)
class Scenario:
    """A named, reproducible simulation setup: replayable from its name and a seed."""

    name: str
    config: Config
    behaviours: Mapping[str, Behaviour]
    faults: Faults
    arrivals: Arrivals
    reloads: tuple[Reload, ...]
    duration: timedelta
    start: datetime = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)

    def replay(self, seed: int, *, store: StoreKind = "memory", days: float | None = None) -> str:
        command = f"python -m ductile.app.sim --seed {seed} --scenario {self.name}"
        if store != "memory":
            command += f" --store {store}"
        if days is not None:
            command += f" --days {days:g}"
        return command

    def simulation(
        self, seed: int, *, store: StoreKind = "memory", days: float | None = None, **overrides: Any
    ) -> Simulation:
        fields: dict[str, Any] = {
            "behaviours": self.behaviours,
            "faults": self.faults,
            "arrivals": self.arrivals,
            "reloads": self.reloads,
            "start": self.start,
            "replay": self.replay(seed, store=store, days=days),
        }
        fields.update(overrides)
        return Simulation(self.config, seed=seed, store=store, **fields)

    def until(self, days: float | None = None) -> timedelta:
        return self.duration if days is None else timedelta(days=days)


def _every(interval: timedelta, tz: tzinfo, **kw: Any) -> Schedule:
    return Schedule(tz=tz, every=interval, **kw)


_MINUTE = timedelta(minutes=1)

#: How the sweep's plugins behave.
SWEEP_BEHAVIOURS = {
    "counter": "ok:dedupe=2",
    "flaky": "flaky:0.5",
    "broken": "exit78",
    "sleepy": "slow:90s",
    "garbled": "garbage",
    "mailer": "flaky:0.1:took=60s",
    "archive.handle": "flaky:0.2:took=5s",
    "archive.init": "flaky:0.2",
    "late": "ok:emit=late.done",
    "feeds": "flaky:0.3",
    "feeds_b": "ok",
    "pager": "flaky:0.3",
}


def sweep_scenario(days: float = 1.5) -> Scenario:
    """The canonical scenario of the seed sweep.

    A scheduled counter whose events are routed to two handlers (with dedupe
    keys shared by pairs of events), a flaky poller whose slow retries meet the
    poll guard and whose breaker opens, a flaky plugin with four schedules (a
    cron with a payload, one that skips Sundays, two one-shots: each with its
    own guard and breaker) and an alias of it catching up every missed run,
    a flaky pager told of every death and every breaker that opens,
    a plugin that exits 78 more often than its breaker resets, one that always
    times out, one that prints garbage; a handler with an ``init`` that sometimes
    fails; webhook-like deliveries to a handler that takes a minute, with
    redelivered dedupe keys (half of the keyed ones sent again within two
    minutes, so some meet their first job queued or running) and CLI runs; two
    reloads (one drawn mutation,
    then back); crashes at random port calls with a few minutes of downtime.
    Starts the day before Europe's spring-forward change.
    """
    berlin = ZoneInfo("Europe/Berlin")  # the zone of its local schedules
    config = _sweep_config(berlin)
    return Scenario(
        name="sweep",
        config=config,
        behaviours={key: parse_behaviour(text) for key, text in SWEEP_BEHAVIOURS.items()},
        faults=Faults(crash_rate=0.001, max_crashes=4, downtime=timedelta(minutes=45)),
        arrivals=Arrivals(webhooks_per_day=20, cli_per_day=4, keyed=0.6, redeliver=0.4, redeliver_soon=0.5),
        reloads=(
            Reload(choices=_sweep_mutations(config, berlin)),
            Reload(choices=(("back to the original", config),)),
        ),
        duration=timedelta(days=days),
    )


def _sweep_config(berlin: ZoneInfo) -> Config:
    minute = _MINUTE
    plugins = (
        PluginConfig(name="counter", schedule=_every(60 * minute, berlin, jitter=8 * minute)),
        PluginConfig(
            name="flaky",
            schedule=_every(60 * minute, UTC),
            retry=RetryPolicy(max_attempts=3, backoff_base=25 * minute),
            circuit_breaker=BreakerPolicy(threshold=3, reset_after=150 * minute),
        ),
        PluginConfig(
            name="broken",
            schedule=Schedule(tz=berlin, cron="*/20 * * * *"),
            circuit_breaker=BreakerPolicy(threshold=2, reset_after=50 * minute),
        ),
        PluginConfig(
            name="sleepy",
            schedule=_every(180 * minute, berlin, jitter=20 * minute, window=Window.parse("06:00", "22:00")),
            timeouts=Timeouts(poll=timedelta(seconds=60)),
            retry=RetryPolicy(max_attempts=2, backoff_base=minute),
        ),
        PluginConfig(name="garbled", schedule=_every(120 * minute, UTC), retry=RetryPolicy(max_attempts=2)),
        _feeds(berlin),
        PluginConfig(
            name="feeds_b",
            uses="feeds",
            schedules=(_every(90 * minute, UTC, catch_up=CatchUp.RUN_ALL, id="slow"),),
        ),
        PluginConfig(name="mailer"),
        PluginConfig(
            name="archive",
            config={"bucket": "a"},
            retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=20)),
        ),
        # The failure alerts' notifier: itself flaky, so some of its jobs die (and are not told).
        PluginConfig(name="pager", retry=RetryPolicy(max_attempts=2, backoff_base=minute)),
    )
    routes = (
        Route(source="counter", event_type="counter.ticked", target="mailer"),
        Route(source="counter", event_type="counter.ticked", target="archive"),
        Route(source="ductile", event_type="job.dead", target="pager"),
        Route(source="ductile", event_type="breaker.opened", target="pager"),
    )
    return Config(
        service=ServiceConfig(
            state_dir=f"{SIM_ROOT}/state",
            tick_interval=10 * minute,
            dedupe_ttl=timedelta(hours=1),
            job_log_retention=timedelta(hours=3),
        ),
        plugins_dir=SIM_ROOT,
        plugins={p.name: p for p in plugins},
        routes=routes,
        webhooks=WebhooksConfig(
            endpoints=(
                Endpoint(path="/hook/mail", plugin="mailer", secret="sim", dedupe_header="X-Delivery"),  # noqa: S106
            )
        ),
    )


def _feeds(berlin: ZoneInfo) -> PluginConfig:
    """A plugin with several schedules: a cron with a payload, a frequent one that skips
    Sundays and never stacks, a one-shot after start and one at an instant."""
    return PluginConfig(
        name="feeds",
        schedules=(
            Schedule(tz=berlin, cron="30 7 * * *", payload={"scope": "daily"}, id="morning"),
            _every(50 * _MINUTE, berlin, not_on=weekdays(["sun"]), if_running=IfRunning.SKIP, id="frequent"),
            Schedule(tz=UTC, after=5 * _MINUTE, catch_up=CatchUp.RUN_ONCE, id="warmup"),
            Schedule(tz=UTC, at=datetime(2026, 3, 28, 6, 0, tzinfo=UTC), id="once"),
        ),
        circuit_breaker=BreakerPolicy(threshold=2, reset_after=100 * _MINUTE),
    )


def _sweep_mutations(config: Config, berlin: ZoneInfo) -> tuple[tuple[str, Config], ...]:
    """The configurations the sweep's first reload draws from."""

    def changed(
        *replace: PluginConfig, drop: str | None = None, routes: tuple[Route, ...] | None = None
    ) -> Config:
        new = {n: p for n, p in config.plugins.items() if n != drop}
        new.update({p.name: p for p in replace})
        return attrs.evolve(config, plugins=new, routes=config.routes if routes is None else routes)

    counter, flaky, archive, mailer = (config.plugins[n] for n in ("counter", "flaky", "archive", "mailer"))
    return (
        ("counter every 25m", changed(attrs.evolve(counter, schedule=_every(25 * _MINUTE, berlin)))),
        ("flaky disabled", changed(attrs.evolve(flaky, enabled=False))),
        ("archive removed", changed(drop="archive")),
        ("mailer disabled", changed(attrs.evolve(mailer, enabled=False))),
        ("archive config changed", changed(attrs.evolve(archive, config={"bucket": "b"}))),
        (
            "late added",
            changed(
                PluginConfig(name="late", schedule=_every(40 * _MINUTE, UTC)),
                routes=(*config.routes, Route(source="late", event_type="late.done", target="mailer")),
            ),
        ),
    )


def quiet_scenario(days: float = 1.5) -> Scenario:
    """The sweep's config and plugins without faults, arrivals or reloads: a baseline."""
    base = sweep_scenario(days)
    return attrs.evolve(base, name="quiet", faults=Faults(), arrivals=Arrivals(), reloads=())


#: How the lanes scenario's plugins behave: the sweep's, with runs long enough to overlap.
LANES_BEHAVIOURS = {
    **SWEEP_BEHAVIOURS,
    "mailer": "flaky:0.1:took=90s",
    "archive.handle": "flaky:0.2:took=100s",
    "counter": "ok:dedupe=2:took=45s",
}


def lanes_scenario(days: float = 1.5) -> Scenario:
    """The sweep with lanes (D14 [A2]): four workers, the handlers three and two wide, the
    counter two wide (its state merges then overlap), runs of minutes, three times the
    deliveries (redelivered keys included), the same crashes and reloads; one reload choice
    goes back to one worker. Checks I9 and I10 beside I1-I8."""
    base = sweep_scenario(days)
    config = base.config
    widths = {"mailer": 3, "archive": 2, "counter": 2}
    plugins = {name: attrs.evolve(p, parallelism=widths.get(name, 1)) for name, p in config.plugins.items()}
    lanes = attrs.evolve(config, service=attrs.evolve(config.service, max_workers=4), plugins=plugins)
    serial = attrs.evolve(lanes, service=attrs.evolve(lanes.service, max_workers=1))
    mutations = tuple(
        (
            label,
            attrs.evolve(
                c,
                service=lanes.service,
                plugins={
                    name: attrs.evolve(p, parallelism=widths.get(name, 1)) for name, p in c.plugins.items()
                },
            ),
        )
        for label, c in base.reloads[0].choices
    )
    hooks = config.webhooks
    assert hooks is not None
    archive_hook = Endpoint(path="/hook/archive", plugin="archive", secret="sim", dedupe_header="X-Delivery")  # noqa: S106
    lanes = attrs.evolve(lanes, webhooks=attrs.evolve(hooks, endpoints=(*hooks.endpoints, archive_hook)))
    serial = attrs.evolve(serial, webhooks=lanes.webhooks)
    return attrs.evolve(
        base,
        name="lanes",
        config=lanes,
        behaviours={key: parse_behaviour(text) for key, text in LANES_BEHAVIOURS.items()},
        arrivals=attrs.evolve(base.arrivals, webhooks_per_day=60),
        reloads=(
            Reload(choices=(*mutations, ("one worker", serial))),
            Reload(choices=(("back to the original", lanes),)),
        ),
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "sweep": sweep_scenario,
    "quiet": quiet_scenario,
    "lanes": lanes_scenario,
}


async def run_scenario(
    name: str, seed: int, *, store: StoreKind = "memory", days: float | None = None
) -> SimulationResult:
    """One seed of a named scenario (raises :class:`InvariantError` with its replay command)."""
    scenario = SCENARIOS[name]()
    return await scenario.simulation(seed, store=store, days=days).run(scenario.until(days))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ductile.app.sim",
        description="Run one seed of a simulation scenario and check every invariant "
        "(exit 1 and the replay command when one fails).",
    )
    parser.add_argument("--seed", type=int, required=True, help="the seed (the whole run follows from it)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="sweep", help="default: sweep")
    parser.add_argument("--store", choices=STORE_KINDS, default="memory", help="default: memory")
    parser.add_argument("--days", type=float, default=None, help="simulated days (default: the scenario's)")
    parser.add_argument("--trace", action="store_true", help="print the whole trace")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run_scenario(args.scenario, args.seed, store=args.store, days=args.days))
    except InvariantError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.trace:
        for line in result.trace:
            print(line)
    ended = sum(1 for j in result.jobs if j.status in TERMINAL)
    print(
        f"seed {args.seed} ({args.scenario}, {args.store}): all invariants held — {len(result.jobs)} jobs "
        f"({ended} ended), {result.crashes} crash(es), {result.calls} port calls, {result.checks} checks, "
        f"trace {result.trace_hash[:16]}"
    )
    return 0
