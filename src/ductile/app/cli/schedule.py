"""``ductile schedule``: the next runs of each schedule, or what is due in a time range.

Per (plugin, schedule id). A paused schedule's runs are listed, marked paused
(they will enqueue nothing); a one-shot that fired is listed once as ``done``,
never re-planned. The runs are projected by :mod:`ductile.app.planning`, which the
dashboard shares.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from ductile.app.cli.context import EXIT_OK, Context, UsageError, read_config, read_store, survey
from ductile.app.cli.format import local_time, parse_time, signed, table, zone_name
from ductile.app.cli.parser import DEFAULT_SCHEDULE_LIMIT, DEFAULT_SCHEDULE_NEXT
from ductile.app.planning import paused_keys, schedule_runs
from ductile.app.views import utc
from ductile.domain.schedule import DEFAULT_SCHEDULE_ID, PlannedRun, Schedule, split_key


async def cmd_schedule(ctx: Context, args: argparse.Namespace) -> int:
    now = ctx.now()
    start = parse_time(args.start, now=now, tz=ctx.tz)
    # No --to: the next runs of each schedule (a terminal's worth), not a day of them.
    end = parse_time(args.end, now=now, tz=ctx.tz) if args.end is not None else start + NEXT_HORIZON
    limit = args.limit or (DEFAULT_SCHEDULE_LIMIT if args.end is not None else DEFAULT_SCHEDULE_NEXT)
    if end <= start:
        raise UsageError(f"--to ({args.end}) must be after --from ({args.start})")
    config = read_config(ctx, args, fallback=True)
    store = await read_store(ctx, config)
    try:
        runtime, _, _ = await survey(ctx, config, store)
        schedules = runtime.schedules()
        stored = {key: await store.planned(key) if store is not None else None for key in schedules}
        pauses = {(p.plugin, p.schedule_id) for p in await store.pauses()} if store is not None else set()
    finally:
        if store is not None:
            await store.close()
    found: list[tuple[datetime, dict[str, Any]]] = []
    cut: list[str] = []
    done: list[dict[str, Any]] = []
    for key, schedule in sorted(schedules.items()):
        entry = stored[key]
        if entry is not None and entry.done and entry.fingerprint == schedule.fingerprint():
            done.append(_done_json(entry, schedule))
            continue
        runs = schedule_runs(schedule, key=key, stored=entry, now=now, start=start, end=end, limit=limit)
        if len(runs) >= limit:
            plugin, schedule_id = split_key(key)
            cut.append(plugin if schedule_id == DEFAULT_SCHEDULE_ID else key)
        paused = paused_keys(pauses, key)
        found += [(run.planned_at, _run_json(key, schedule, run, kind, paused)) for run, kind in runs]
    found.sort(key=lambda pair: (pair[0], pair[1]["plugin"], pair[1]["schedule"]))
    if args.json:
        runs_doc = [d for _, d in found]
        ctx.json(
            {"from": utc(start), "to": utc(end), "limit": limit, "cut": cut, "runs": runs_doc, "done": done}
        )
    elif not schedules:
        ctx.print("no schedules (no loaded plugin has one)")
    else:
        _print_text(ctx, found, start=start, end=end, limit=limit, cut=cut, ranged=args.end is not None)
        for item in done:
            ctx.print(
                f"done: {item['plugin']}/{item['schedule']} (a one-shot; it was due at "
                f"{local_time(datetime.fromisoformat(item['nominal_at']), ctx.tz)})"
            )
    return EXIT_OK


#: How far ahead ``schedule`` without ``--to`` looks for each schedule's next runs.
NEXT_HORIZON = timedelta(days=400)


def _print_text(
    ctx: Context,
    found: list[tuple[datetime, dict[str, Any]]],
    *,
    start: datetime,
    end: datetime,
    limit: int,
    cut: list[str],
    ranged: bool,
) -> None:
    """What was cut first (never after everything scrolled past), then the table."""
    if ctx.zone_note is not None:
        ctx.print(f"note: {ctx.zone_note}")
    span = f"{local_time(start, ctx.tz)} to {local_time(end, ctx.tz)}"
    if not ranged:
        shown = "the next run" if limit == 1 else f"the next {limit} runs"
        more = " (more with --limit N, or a range with --to T)" if cut else ""
        keys = {(doc["plugin"], doc["schedule"]) for _, doc in found}
        each = "of each schedule" if len(keys) != 1 else "of the schedule"
        ctx.print(f"{shown} {each} from {local_time(start, ctx.tz)}{more}:")
    else:
        if cut:
            names = ", ".join(cut)
            ctx.print(f"only the first {limit} runs of {names} are shown (use --limit or a shorter range)")
        if found:
            ctx.print(f"due from {span}:")
    print_runs(ctx, found, span)


def _run_json(key: str, schedule: Schedule, run: PlannedRun, kind: str, paused: bool) -> dict[str, Any]:
    plugin, schedule_id = split_key(key)
    return {
        "plugin": plugin,
        "schedule": schedule_id,
        "kind": kind,
        "paused": paused,
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


def _done_json(entry: PlannedRun, schedule: Schedule) -> dict[str, Any]:
    return {
        "plugin": entry.plugin,
        "schedule": entry.schedule_id,
        "nominal_at": utc(entry.nominal_at),
        "nominal_local": local_time(entry.nominal_at, schedule.tz),
    }


def print_runs(ctx: Context, found: list[tuple[datetime, dict[str, Any]]], span: str) -> None:
    """The runs as a table, without the columns that would only repeat others: SCHEDULE when
    every run is of a plugin's one ``default`` schedule, ZONE when every run is in one zone
    (said above the table instead), UTC when it equals PLANNED (a UTC zone), NOMINAL when no
    run moved from its grid point, JITTER and SNAPPED when they are all 0/no."""
    if not found:
        ctx.print(f"nothing is due from {span}")
        return
    rows = [
        {
            "PLUGIN": r["plugin"],
            "SCHEDULE": r["schedule"],
            "PLANNED": r["planned_local"],
            "ZONE": r["timezone"],
            "UTC": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "NOMINAL": r["nominal_local"],
            "JITTER": signed(r["offset_seconds"]),
            "SNAPPED": "yes" if r["snapped"] else "no",
            "KIND": r["kind"].replace("_", " ") + (" (paused)" if r["paused"] else ""),
        }
        for at, r in found
    ]
    zones = {row["ZONE"] for row in rows}
    hidden = set()
    if all(r["schedule"] == "default" for _, r in found):
        hidden.add("SCHEDULE")
    if len(zones) == 1:
        hidden.add("ZONE")
        ctx.print(f"times in {zones.pop()}:")
    if all(found_doc["planned_local"].endswith("+00:00") for _, found_doc in found):
        hidden.add("UTC")
    if all(r["offset_seconds"] == 0 and not r["snapped"] for _, r in found):
        hidden.add("NOMINAL")
    if all(r["offset_seconds"] == 0 for _, r in found):
        hidden.add("JITTER")
    if not any(r["snapped"] for _, r in found):
        hidden.add("SNAPPED")
    headers = [h for h in rows[0] if h not in hidden]
    ctx.print(table(headers, [[row[h] for h in headers] for row in rows]))


__all__ = ["cmd_schedule", "print_runs", "schedule_runs"]
