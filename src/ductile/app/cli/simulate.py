"""``ductile simulate``: the operator's own config through the deterministic simulation.

The verb reads the config, the manifests in its plugins directory (never running
anything), the behaviours given on the command line, and runs a
:class:`~ductile.app.sim.Simulation`; then it prints the report
(:mod:`~ductile.app.cli.simulate_report`): as one JSON document or as text
(:mod:`~ductile.app.cli.simulate_text`).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ductile.adapters.plugin_dir import FilesystemCatalog
from ductile.app.cli.context import EXIT_FAILURE, EXIT_OK, Context, UsageError, read_config
from ductile.app.cli.format import parse_time
from ductile.app.cli.simulate_report import build_report
from ductile.app.cli.simulate_text import render_text
from ductile.app.sim import (
    Arrivals,
    Behaviour,
    BehaviourError,
    Faults,
    InvariantError,
    SimCatalog,
    Simulation,
    parse_assignment,
    parse_behaviour,
    split_key,
)
from ductile.domain.config import Config


def disk_catalog(config: Config, behaviours: Mapping[str, Behaviour]) -> tuple[SimCatalog, str | None]:
    """The simulated catalog for an operator's config: the manifests and refusals the
    real plugins directory gives (read only: nothing is executed), or, when there is
    no such directory, every configured plugin with the default simulated manifest."""
    if not any(Path(root).is_dir() for root in config.roots):
        note = f"plugins_dir {config.plugins_dir} does not exist: every configured plugin is simulated as is"
        return SimCatalog(behaviours), note
    found = FilesystemCatalog().discover(config)
    # An alias is simulated as an alias (of the manifest it uses), not as a plugin of its own.
    manifests = {name: plugin.manifest for name, plugin in found.plugins.items() if plugin.alias is None}
    # A duplicate in a later root is refused under a name that is loaded all the same.
    refusals = {r.name: r.reason for r in found.refused if r.name not in found.plugins}
    return SimCatalog(behaviours, manifests=manifests, refusals=refusals), None


def _behaviours_from_args(
    assignments: Sequence[str], failures: Sequence[str], known: Collection[str]
) -> dict[str, Behaviour]:
    """``--behaviour KEY=B`` and ``--fail PLUGIN=RATE`` (sugar for ``PLUGIN=flaky:RATE``)."""
    out: dict[str, Behaviour] = {}
    given = [(text, "--behaviour") for text in assignments] + [(text, "--fail") for text in failures]
    for text, flag in given:
        if flag == "--fail":
            plugin, eq, rate = text.partition("=")
            if not eq:
                raise BehaviourError(f"--fail {text!r}: write PLUGIN=RATE, e.g. --fail notify=0.3")
            key, behaviour = plugin.strip(), parse_behaviour(f"flaky:{rate.strip()}")
        else:
            key, behaviour = parse_assignment(text)
        plugin, _ = split_key(key)
        if plugin not in known:
            names = ", ".join(sorted(known)) or "none"
            raise BehaviourError(f"{flag} {text!r}: no plugin '{plugin}' in this config (plugins: {names})")
        if key in out:
            raise BehaviourError(f"{flag} {text!r}: '{key}' is given a behaviour twice")
        out[key] = behaviour
    return out


def _crash_faults(days: float) -> Faults:
    """``--check``: a few crashes at random port calls, spread over the run."""
    crashes = max(3, round(2 * days))
    return Faults(
        crash_rate=0.02,
        max_crashes=crashes,
        downtime=timedelta(minutes=2),
        spacing=timedelta(days=days) / (crashes + 1),
    )


async def cmd_simulate(ctx: Context, args: argparse.Namespace) -> int:
    """``ductile simulate``: the operator's own config through the simulator."""
    config = read_config(ctx, args)
    if not 0 < args.days <= 366:
        raise UsageError(f"--days must be more than 0 and at most 366, not {args.days:g}")
    if args.webhooks_per_day < 0:
        raise UsageError(f"--webhooks-per-day cannot be negative ({args.webhooks_per_day:g})")
    start = parse_time(args.start, now=ctx.now(), tz=ctx.tz).replace(microsecond=0)
    catalog = _catalog(ctx, config, args)
    if args.store == "sqlite" and config.service.max_workers > 1:
        raise UsageError(
            f"--store sqlite simulates one job at a time; this config runs {config.service.max_workers} "
            "at once (service.max_workers): simulate it with --store memory"
        )
    progress = None if args.json else Progress.on_terminal(ctx, start, timedelta(days=args.days))
    sim = Simulation(
        config,
        seed=args.seed,
        behaviours=catalog.behaviours,
        store="indexed" if args.store == "memory" else args.store,
        faults=_crash_faults(args.days) if args.check else Faults(),
        arrivals=Arrivals(webhooks_per_day=args.webhooks_per_day),
        catalog=catalog,
        start=start,
        replay=_replay_command(config, args, start),
        progress=progress,
    )
    try:
        result = await sim.run(timedelta(days=args.days))
    except InvariantError as e:
        ctx.note(str(e))
        return EXIT_FAILURE
    finally:
        if progress is not None:
            progress.done()
    report = build_report(result, catalog, catalog.behaviours, days=args.days)
    if args.json:
        ctx.json(report.to_json())
    else:
        render_text(ctx, report, show=args.show, tz=ctx.tz)
    return EXIT_OK


class Progress:
    """``simulating: day 3.2 of 7 (46%), 4.1s`` on stderr, redrawn at most every
    :data:`EVERY` seconds of real time, only when stderr is a terminal (and not with --json)."""

    EVERY = 0.25

    def __init__(self, ctx: Context, start: datetime, span: timedelta) -> None:
        self.ctx = ctx
        self.start = start
        self.span = span
        self.began = ctx.monotonic()
        self.shown_at = self.began
        self.drawn = False

    @classmethod
    def on_terminal(cls, ctx: Context, start: datetime, span: timedelta) -> Progress | None:
        try:
            terminal = ctx.err.isatty()
        except (AttributeError, ValueError):
            terminal = False
        return cls(ctx, start, span) if terminal else None

    def __call__(self, now: datetime) -> None:
        real = self.ctx.monotonic()
        if real - self.shown_at < self.EVERY:
            return
        self.shown_at = real
        done = min(max((now - self.start) / self.span, 0.0), 1.0)
        days = self.span / timedelta(days=1)
        text = f"simulating: day {done * days:.1f} of {days:g} ({done:.0%}), {real - self.began:.1f}s"
        self.ctx.err.write(f"\r{text}\x1b[K")
        self.ctx.err.flush()
        self.drawn = True

    def done(self) -> None:
        """Clear the line, so the report starts on a clean terminal."""
        if self.drawn:
            self.ctx.err.write("\r\x1b[K")
            self.ctx.err.flush()


def _catalog(ctx: Context, config: Config, args: argparse.Namespace) -> SimCatalog:
    """The plugins on disk, behaving as ``--behaviour`` and ``--fail`` say (a usage error
    when those are written wrongly or name a plugin that is not there)."""
    catalog, note = disk_catalog(config, {})
    known = set(config.plugins) | set(catalog.manifests) | set(catalog.refusals)
    try:
        behaviours = _behaviours_from_args(args.behaviour or (), args.fail or (), known)
    except BehaviourError as e:
        raise UsageError(str(e)) from None
    catalog.behaviours = behaviours
    if note is not None:
        ctx.note(note)
    return catalog


def _replay_command(config: Config, args: argparse.Namespace, start: datetime) -> str:
    """The command that runs this simulation again, for an InvariantError's message."""
    return " ".join(
        [
            "ductile simulate",
            f"--config {config.source}",
            f"--seed {args.seed}",
            f"--start {start.astimezone(UTC).isoformat()}",
            f"--days {args.days:g}",
            *(f"--behaviour {b}" for b in args.behaviour or ()),
            *(f"--fail {f}" for f in args.fail or ()),
            *([f"--webhooks-per-day {args.webhooks_per_day:g}"] if args.webhooks_per_day else []),
            *([f"--store {args.store}"] if args.store != "memory" else []),
            *(["--check"] if args.check else []),
        ]
    )
