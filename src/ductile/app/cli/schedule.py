"""``ductile schedule``: what the schedule index has due in a time range."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from ductile.app.cli.context import EXIT_OK, Context, UsageError, read_config, read_store, survey
from ductile.app.cli.format import local_time, parse_time, signed, table, zone_name
from ductile.app.views import utc
from ductile.domain.schedule import PlannedRun, Schedule, plan_next, preview


def schedule_runs(
    schedule: Schedule,
    *,
    key: str,
    stored: PlannedRun | None,
    now: datetime,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[PlannedRun, str]]:
    """The runs of one schedule in ``[start, end)`` with their kind (see the module docs)."""

    if stored is not None and stored.fingerprint == schedule.fingerprint():
        first, kind = stored, "planned"
    else:
        first, kind = plan_next(schedule, key=key, previous=None, now=now, draw=0.5), "not_yet_planned"
    runs: list[tuple[PlannedRun, str]] = []
    if first.planned_at < now:
        if start <= first.planned_at < end:
            runs.append((first, "overdue"))
        first, kind = plan_next(schedule, key=key, previous=first, now=now, draw=0.5), "projected"
    if first.planned_at < start:  # jump to the range instead of walking to it
        first = plan_next(schedule, key=key, previous=first, now=start - timedelta(microseconds=1), draw=0.5)
        kind = "projected"
    for i, run in enumerate(preview(schedule, first, start, end, limit=max(limit - len(runs), 0))):
        runs.append((run, kind if i == 0 and run is first else "projected"))
    return runs[:limit]


async def cmd_schedule(ctx: Context, args: argparse.Namespace) -> int:
    now = ctx.now()
    start = parse_time(args.start, now=now, tz=ctx.tz)
    end = parse_time(args.end, now=now, tz=ctx.tz)
    if end <= start:
        raise UsageError(f"--to ({args.end}) must be after --from ({args.start})")
    config = read_config(ctx, args)
    store = await read_store(ctx, config)
    try:
        runtime, _, _ = await survey(ctx, config, store)
        schedules = runtime.schedules()
        stored = {key: await store.planned(key) if store is not None else None for key in schedules}
    finally:
        if store is not None:
            await store.close()
    found: list[tuple[datetime, dict[str, Any]]] = []
    for key, schedule in sorted(schedules.items()):
        runs = schedule_runs(
            schedule, key=key, stored=stored[key], now=now, start=start, end=end, limit=args.limit
        )
        if len(runs) >= args.limit:
            ctx.note(f"{key}: only the first {args.limit} runs are shown (use --limit or a shorter range)")
        found += [(run.planned_at, _run_json(key, schedule, run, kind)) for run, kind in runs]
    found.sort(key=lambda pair: (pair[0], pair[1]["plugin"]))
    if args.json:
        ctx.json({"from": utc(start), "to": utc(end), "runs": [doc for _, doc in found]})
    elif not schedules:
        ctx.print("no schedules (no loaded plugin has one)")
    else:
        _print_runs(ctx, found, f"{local_time(start, ctx.tz)} to {local_time(end, ctx.tz)}")
    return EXIT_OK


def _run_json(key: str, schedule: Schedule, run: PlannedRun, kind: str) -> dict[str, Any]:
    return {
        "plugin": key,
        "kind": kind,
        "planned_at": utc(run.planned_at),
        "planned_local": local_time(run.planned_at, schedule.tz),
        "nominal_at": utc(run.nominal_at),
        "nominal_local": local_time(run.nominal_at, schedule.tz),
        "offset_seconds": run.offset.total_seconds(),
        "snapped": run.snapped,
        "timezone": zone_name(schedule.tz),
        "target": {"emit": schedule.emit.type}
        if schedule.emit is not None
        else {"command": schedule.command},
    }


def _print_runs(ctx: Context, found: list[tuple[datetime, dict[str, Any]]], span: str) -> None:
    if not found:
        ctx.print(f"nothing is due from {span}")
        return
    ctx.print(f"due from {span}:")
    rows = [
        [
            r["plugin"],
            r["planned_local"],
            r["timezone"],
            at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            r["nominal_local"],
            signed(r["offset_seconds"]),
            "yes" if r["snapped"] else "no",
            r["kind"].replace("_", " "),
        ]
        for at, r in found
    ]
    ctx.print(table(["PLUGIN", "PLANNED", "ZONE", "UTC", "NOMINAL", "JITTER", "SNAPPED", "KIND"], rows))
