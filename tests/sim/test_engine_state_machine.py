"""The engine against the invariants, driven by hypothesis one step at a time.

A :class:`~hypothesis.stateful.RuleBasedStateMachine` over a
:class:`~ductile.app.sim.Simulation` (the real engine on fakes): rules
enqueue (with or without a dedupe key, to loaded, disabled and unknown
plugins), let time pass, tick, dispatch with a chosen plugin outcome, crash at
a chosen port call of a dispatch or a tick (before or after it), kill the
process between steps, and reload a changed config. The simulation's monitor
checks the invariants after every port call and every step; the machine's
invariant re-checks the whole store after each rule, and the teardown drains
without faults and checks that every job ends in time (I8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ductile.app.sim import CRASH_POINTS, Behaviour, CrashPoint, Simulation, parse_behaviour
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.config import Config, PluginConfig, ServiceConfig, Timeouts
from ductile.domain.job import SubmittedBy
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import Schedule

T = TypeVar("T")
MINUTE = timedelta(minutes=1)
START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def base_config() -> Config:
    plugins = (
        PluginConfig(
            name="a",
            schedule=Schedule(tz=UTC, every=10 * MINUTE),
            retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=30)),
            circuit_breaker=BreakerPolicy(threshold=2, reset_after=15 * MINUTE),
            timeouts=Timeouts(poll=timedelta(seconds=60)),
        ),
        PluginConfig(name="b", retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(seconds=10))),
        PluginConfig(name="c", schedule=Schedule(tz=UTC, cron="*/30 * * * *")),
    )
    return Config(
        service=ServiceConfig(
            state_dir="/sim/state",
            tick_interval=MINUTE,
            dedupe_ttl=timedelta(minutes=20),
            job_log_retention=timedelta(hours=1),
        ),
        plugins_dir="/sim",
        plugins={p.name: p for p in plugins},
        routes=(
            Route(source="a", event_type="a.done", target="b"),
            Route(source="a", event_type="a.done", target="c"),
            Route(source="c", event_type="c.done", target="b"),
        ),
    )


def variants() -> dict[str, Config]:
    config = base_config()
    a, b, c = (config.plugins[n] for n in "abc")

    def with_(*replace: PluginConfig, drop: str | None = None) -> Config:
        plugins = {n: p for n, p in config.plugins.items() if n != drop}
        plugins.update({p.name: p for p in replace})
        return attrs.evolve(config, plugins=plugins)

    return {
        "original": config,
        "a disabled": with_(attrs.evolve(a, enabled=False)),
        "b removed": with_(drop="b"),
        "c every 7m": with_(attrs.evolve(c, schedule=Schedule(tz=UTC, every=7 * MINUTE))),
        "a schedule dropped": with_(attrs.evolve(a, schedule=None)),
        "d added": with_(PluginConfig(name="d", schedule=Schedule(tz=UTC, every=5 * MINUTE))),
        "b retries more": with_(attrs.evolve(b, retry=RetryPolicy(max_attempts=4))),
    }


VARIANTS = variants()
BEHAVIOURS = [
    parse_behaviour(text)
    for text in (
        "ok",
        "ok:emit=a.done",
        "ok:emit=c.done:dedupe=1",
        "error",
        "error:fatal",
        "exit78",
        "timeout",
        "garbage",
        "slow:90s",
        "flaky:0.5",
    )
]


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim: Simulation | None = None

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    @property
    def s(self) -> Simulation:
        assert self.sim is not None
        return self.sim

    @initialize(seed=st.integers(0, 2**32 - 1), init_fails=st.booleans())
    def boot(self, seed: int, init_fails: bool) -> None:
        behaviours = {"a": parse_behaviour("ok:emit=a.done"), "c.init": parse_behaviour("ok")}
        if init_fails:
            behaviours["c.init"] = parse_behaviour("flaky:0.5")
        self.sim = Simulation(
            base_config(),
            seed=seed,
            behaviours=behaviours,
            start=START,
            replay=f"hypothesis state machine, seed {seed}",
        )
        self.run(self.s.open())
        self.run(self.s.boot())

    @rule(
        plugin=st.sampled_from(["a", "b", "c", "d", "nope"]),
        command=st.sampled_from(["poll", "handle"]),
        key=st.none() | st.sampled_from(["k1", "k2"]),
        by=st.sampled_from([SubmittedBy.WEBHOOK, SubmittedBy.CLI]),
    )
    def enqueue(self, plugin: str, command: str, key: str | None, by: SubmittedBy) -> None:
        self.run(
            self.s.submit(
                plugin, command=command, dedupe_key=key, submitted_by=by, strict=by is SubmittedBy.CLI
            )
        )

    @rule(seconds=st.integers(1, 3 * 3600))
    def time_passes(self, seconds: int) -> None:
        self.s.advance(timedelta(seconds=seconds))

    @rule()
    def tick(self) -> None:
        self.run(self.s.tick())

    @rule(behaviour=st.sampled_from(BEHAVIOURS))
    def dispatch(self, behaviour: Behaviour) -> None:
        self.run(self.s.dispatch(behaviour))

    @rule(calls=st.integers(1, 8), point=st.sampled_from(CRASH_POINTS), behaviour=st.sampled_from(BEHAVIOURS))
    def dispatch_and_crash(self, calls: int, point: CrashPoint, behaviour: Behaviour) -> None:
        self.s.arm_crash(calls, point)
        self.run(self.s.dispatch(behaviour))
        self.s.disarm()

    @rule(calls=st.integers(1, 10), point=st.sampled_from(CRASH_POINTS))
    def tick_and_crash(self, calls: int, point: CrashPoint) -> None:
        self.s.arm_crash(calls, point)
        self.run(self.s.tick())
        self.s.disarm()

    @rule()
    def kill_between_steps(self) -> None:
        self.run(self.s.crash())

    @rule(
        name=st.sampled_from(sorted(VARIANTS)),
        calls=st.none() | st.integers(1, 12),
        point=st.sampled_from(CRASH_POINTS),
    )
    def reload(self, name: str, calls: int | None, point: CrashPoint) -> None:
        if calls is not None:
            self.s.arm_crash(calls, point)
        self.run(self.s.reload(VARIANTS[name], name))
        self.s.disarm()

    @invariant()
    def the_whole_store_checks_out(self) -> None:
        if self.sim is not None:
            self.run(self.s.check())

    def teardown(self) -> None:
        try:
            if self.sim is not None:
                self.run(self.s.drain())
        finally:
            if self.sim is not None:
                self.run(self.s.close())
            self.loop.close()


EngineMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase
