"""The dashboard's operator actions: each is an API operation behind a form, with the same
scope, the same service function and the same refusals; a success redirects (303) to the
page that shows its effect, a refusal is a page saying why.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import RedirectResponse, Response

from ductile.app import operations
from ductile.app.api import jobs
from ductile.app.api.errors import ApiError
from ductile.app.intake import EnqueueRefusedError
from ductile.app.ui import schema_form
from ductile.app.ui.guard import Visit
from ductile.domain.errors import ConfigError
from ductile.domain.job import Actor, SubmittedBy


def _see(url: str) -> Response:
    return RedirectResponse(url, 303)


def _payload(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ApiError(422, "invalid payload", f"the payload is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid payload", "the payload must be a JSON object")
    return value


async def run_now(visit: Visit) -> Response:
    """Queue the plugin's command now, as ``POST /plugin/{plugin}/{command}`` does: the payload
    from the schema's fields when the form has them, else from the JSON box."""
    params = visit.request.path_params
    key = visit.form.get("dedupe_key", "").strip() or None
    loaded = visit.ctx.engine.runtime.plugins.get(params["plugin"])
    spec = loaded.manifest.command_spec(params["command"]) if loaded is not None else None
    form_fields = schema_form.fields(spec.input_schema if spec is not None else None)
    payload: dict[str, Any] | None
    if form_fields is not None and "payload" not in visit.form:
        payload = schema_form.payload(visit.form, form_fields)
    else:
        payload = _payload(visit.form.get("payload", ""))
    doc = await jobs.queue_trigger(visit.ctx, params["plugin"], params["command"], payload, key)
    return _see(f"/ui/job/{doc['job_id']}")


def _operation_error(e: Exception) -> ApiError:
    if isinstance(e, operations.NotFoundError):
        return ApiError(404, "not found", str(e))
    return ApiError(409, "conflict", str(e))


_ERRORS = (operations.NotFoundError, operations.AmbiguousIdError, operations.ConflictError)


async def retry(visit: Visit) -> Response:
    engine = visit.ctx.engine
    try:
        _, result = await operations.retry_job(
            engine.store,
            engine.runtime,
            visit.request.path_params["job_id"],
            submitted_by=SubmittedBy.API,
            now=engine.clock.now(),
            new_id=engine.new_id,
            notify=engine.inbox.notify,
        )
    except _ERRORS as e:
        raise _operation_error(e) from None
    except EnqueueRefusedError as e:
        raise ApiError(422, "cannot run", str(e)) from None
    visit.ctx.feed.poke()
    return _see(f"/ui/job/{result.job_id}")


async def cancel(visit: Visit) -> Response:
    engine = visit.ctx.engine
    try:
        job = await operations.cancel_job(
            engine.store,
            visit.request.path_params["job_id"],
            who=visit.session.token.name,
            actor=Actor.API,
            now=engine.clock.now(),
        )
    except _ERRORS as e:
        raise _operation_error(e) from None
    visit.ctx.feed.poke()
    return _see(f"/ui/job/{job.id}")


async def reset(visit: Visit) -> Response:
    engine = visit.ctx.engine
    name = visit.request.path_params["plugin"]
    if name not in engine.runtime.plugins and name not in engine.runtime.config.plugins:
        raise ApiError(404, "not found", f"no plugin named {name!r}")
    await operations.reset_breakers(engine.store, name, who=visit.session.token.name, now=engine.clock.now())
    visit.ctx.feed.poke()
    return _see(f"/ui/plugin/{name}")


async def pause(visit: Visit) -> Response:
    return await _switch(visit, pause=True)


async def resume(visit: Visit) -> Response:
    return await _switch(visit, pause=False)


async def _switch(visit: Visit, *, pause: bool) -> Response:
    """Pause or resume the plugin's schedules, or the one the form names (as ``ductile pause``)."""
    engine = visit.ctx.engine
    name = visit.request.path_params["plugin"]
    schedule_id = visit.form.get("schedule") or None
    try:
        await operations.switch_pause(
            engine.store, engine.runtime, name, schedule_id, pause=pause, now=engine.clock.now()
        )
    except operations.NotFoundError as e:
        raise ApiError(404, "not found", str(e)) from None
    visit.ctx.feed.poke()
    return _see(f"/ui/plugin/{name}")


async def reload(visit: Visit) -> Response:
    """Re-read the config: the report, or the config error (the old config stays)."""
    try:
        report = await visit.ctx.reload()
    except ConfigError as e:
        return visit.page("reload.html", status=422, report=None, error=str(e))
    visit.ctx.feed.poke()
    return visit.page("reload.html", report=report, error=None)
