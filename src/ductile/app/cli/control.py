"""``ductile pause`` and ``ductile resume``: hold a plugin's schedules (or one) without cancelling anything.

A pause is a row in the store: the daemon's scheduler reads it inside each
firing, so it takes effect at the next due run without a reload or a signal,
and it survives restarts. A paused schedule's due runs enqueue nothing (they
are logged as skipped and the next run is planned as usual); jobs already
queued or running carry on.
"""

from __future__ import annotations

import argparse
from typing import Any

from ductile.app.cli.context import EXIT_OK, Context, UsageError, open_store_of, read_config
from ductile.domain.config import Config
from ductile.domain.schedule import split_key


def _target(ctx: Context, config: Config, text: str) -> tuple[str, str | None]:
    """``<plugin>`` or ``<plugin>/<schedule id>``, checked against the config and what discovery finds."""
    plugin, sep, schedule_id = text.partition("/")
    if not plugin or (sep and not schedule_id):
        raise UsageError(f"expected <plugin> or <plugin>/<schedule-id>, not {text!r}")
    found = ctx.catalog().discover(config)
    if plugin not in config.plugins and plugin not in found.plugins:
        raise UsageError(f"no plugin named '{plugin}' in the config or in {' or '.join(config.roots)}")
    if sep:
        ids = [s.id for s in config.plugin(plugin).all_schedules]
        if schedule_id not in ids:
            have = ", ".join(ids) if ids else "none"
            raise UsageError(f"plugin '{plugin}' has no schedule '{schedule_id}' (its schedules: {have})")
        return plugin, schedule_id
    return plugin, None


async def cmd_pause(ctx: Context, args: argparse.Namespace) -> int:
    return await _switch(ctx, args, pause=True)


async def cmd_resume(ctx: Context, args: argparse.Namespace) -> int:
    return await _switch(ctx, args, pause=False)


async def _switch(ctx: Context, args: argparse.Namespace, *, pause: bool) -> int:
    config = read_config(ctx, args)
    plugin, schedule_id = _target(ctx, config, args.target)
    store = await open_store_of(ctx, config, create=pause)  # resuming needs no database that is not there
    changed = False
    paused: list[str] = []
    if store is not None:
        try:
            if pause:
                changed = await store.pause(plugin, schedule_id, now=ctx.now())
            else:
                changed = await store.resume(plugin, schedule_id)
            paused = [_name(p.plugin, p.schedule_id) for p in await store.pauses()]
        finally:
            await store.close()
    what = _name(plugin, schedule_id)
    if args.json:
        doc: dict[str, Any] = {
            "plugin": plugin,
            "schedule": schedule_id,
            "changed": changed,
            "paused": paused,
        }
        ctx.json(doc)
        return EXIT_OK
    ctx.print(_message(what, pause=pause, changed=changed, whole=schedule_id is None))
    if not pause and changed and any(split_key(p)[0] == plugin and p != what for p in paused):
        ctx.print(f"still paused: {', '.join(p for p in paused if split_key(p)[0] == plugin)}")
    return EXIT_OK


def _name(plugin: str, schedule_id: str | None) -> str:
    return plugin if schedule_id is None else f"{plugin}/{schedule_id}"


def _message(what: str, *, pause: bool, changed: bool, whole: bool) -> str:
    scope = f"{what} (all its schedules)" if whole else what
    if pause:
        if not changed:
            return f"{scope} was already paused"
        return (
            f"paused {scope}: its due runs enqueue nothing until `ductile resume {what}`; "
            "queued jobs still run"
        )
    if not changed:
        return f"{what} was not paused"
    return f"resumed {scope}: its next planned run goes as usual"
