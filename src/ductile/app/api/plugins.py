"""The plugin routes: list and show plugins, reset a breaker, pause and resume, read the schedule index."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ductile.app import operations, planning
from ductile.app.api.body import moment, only, single
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import JsonResponse, bad_request, not_found
from ductile.app.views import utc
from ductile.domain.config import ApiToken

#: The widest range ``GET /schedule`` answers.
MAX_SCHEDULE_RANGE = timedelta(days=366)


async def list_plugins(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    return JsonResponse(operations.plugins_view(ctx.engine.runtime))


async def show_plugin(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    engine = ctx.engine
    try:
        doc = await operations.plugin_view(engine.store, engine.runtime, request.path_params["plugin"])
    except operations.NotFoundError as e:
        raise not_found(str(e)) from None
    return JsonResponse(doc)


async def reset_plugin(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    engine = ctx.engine
    name = request.path_params["plugin"]
    reset = await operations.reset_breakers(
        engine.store, name, who=token.name, now=engine.clock.now(), alerts=engine.runtime.alerts()
    )
    if not reset and name not in engine.runtime.plugins and name not in engine.runtime.config.plugins:
        raise not_found(f"no plugin named {name!r}")
    ctx.feed.poke()
    return JsonResponse({"plugin": name, "reset": [b.command for b in reset]})


async def pause_plugin(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    return await _switch(request, ctx, pause=True)


async def resume_plugin(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    return await _switch(request, ctx, pause=False)


async def _switch(request: Request, ctx: ApiContext, *, pause: bool) -> Response:
    """``POST /plugin/{plugin}/pause|resume[?schedule=id]``: as ``ductile pause|resume``."""
    only(request, ("schedule",))
    engine = ctx.engine
    name, schedule_id = request.path_params["plugin"], single(request, "schedule")
    try:
        changed = await operations.switch_pause(
            engine.store, engine.runtime, name, schedule_id, pause=pause, now=engine.clock.now()
        )
    except operations.NotFoundError as e:
        raise not_found(str(e)) from None
    paused = [
        p.plugin if p.schedule_id is None else f"{p.plugin}/{p.schedule_id}"
        for p in await engine.store.pauses()
    ]
    ctx.feed.poke()
    return JsonResponse({"plugin": name, "schedule": schedule_id, "changed": changed, "paused": paused})


async def schedule(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    """``GET /schedule?from=&to=``: the planned runs in ``[from, to)`` (default: the next 24 h)."""
    only(request, ("from", "to"))
    now = ctx.engine.clock.now()
    start_text, end_text = single(request, "from"), single(request, "to")
    start = now if start_text is None else moment(start_text, "from", now)
    end = start + timedelta(hours=24) if end_text is None else moment(end_text, "to", now)
    if end <= start:
        raise bad_request("to must be after from")
    if end - start > MAX_SCHEDULE_RANGE:
        raise bad_request("the range is over 366 days")
    return JsonResponse(await planned_runs(ctx, start, end))


#: The most runs of one schedule ``GET /schedule`` lists (the rest are named in ``cut``).
MAX_RUNS_PER_SCHEDULE = 1000


async def planned_runs(ctx: ApiContext, start: datetime, end: datetime) -> dict[str, Any]:
    """Every schedule's runs in ``[start, end)``, earliest first: the stored plan, then the runs
    projected from it (``kind``), as ``ductile schedule`` and the dashboard show them."""
    engine = ctx.engine
    runs, cut = await planning.runs_in(
        engine.store,
        engine.runtime,
        now=engine.clock.now(),
        start=start,
        end=end,
        limit=MAX_RUNS_PER_SCHEDULE,
    )
    return {
        "from": utc(start),
        "to": utc(end),
        "runs": [{k: v for k, v in run.items() if k != "at"} for run in runs],
        "cut": cut,
    }
