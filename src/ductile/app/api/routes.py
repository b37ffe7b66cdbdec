"""The API's routes as one table: the Starlette routes and the OpenAPI document are both
built from it, so the document lists exactly what is served (a test holds them together).

Each :class:`Op` names its method and path, what it needs (:class:`~ductile.domain.scopes.Need`,
computed from the request: a plugin route needs the scope for *that* plugin), its
handler, and what the OpenAPI document says of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response

from ductile.app.api import events, jobs, metrics, plugins, system
from ductile.app.api.context import ApiContext
from ductile.domain.config import ApiToken
from ductile.domain.plugin import CommandType
from ductile.domain.scopes import Access, Area, Need

Handler = Callable[[Request, ApiContext, ApiToken], Awaitable[Response]]
NeedOf = Callable[[Request, ApiContext], Need]


def _needs(area: Area, access: Access) -> NeedOf:
    return lambda request, ctx: Need(area, access)


def _plugin_needs(access: Access) -> NeedOf:
    return lambda request, ctx: Need(Area.PLUGIN, access, request.path_params.get("plugin"))


def trigger_needs(request: Request, ctx: ApiContext) -> Need:
    """plugin:rw, or plugin:ro for a command its v2 manifest declares ``type: read``."""
    plugin, command = request.path_params.get("plugin"), request.path_params.get("command")
    loaded = ctx.engine.runtime.plugins.get(plugin or "")
    spec = loaded.manifest.command_spec(command or "") if loaded is not None else None
    access = Access.RO if spec is not None and spec.type is CommandType.READ else Access.RW
    return Need(Area.PLUGIN, access, plugin)


@attrs.frozen(kw_only=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    description: str
    schema: dict[str, Any] = attrs.field(factory=lambda: {"type": "string"})
    required: bool = False
    repeatable: bool = False


@attrs.frozen(kw_only=True)
class Op:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    #: What a caller needs; None: any valid token.
    need: NeedOf | None
    scope: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    responses: dict[int, str] = attrs.field(factory=dict)
    media: str = "application/json"


_JOB_ID = Param(
    name="job_id",
    where="path",
    required=True,
    description="a job id, or an unambiguous prefix of at least 8 characters",
)
_PLUGIN = Param(name="plugin", where="path", required=True, description="plugin name")
_JOB_FILTERS = (
    Param(
        name="status",
        where="query",
        repeatable=True,
        description="queued, running, succeeded, dead",
        schema={"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out", "dead"]},
    ),
    Param(name="plugin", where="query", description="only this plugin's jobs"),
    Param(name="command", where="query", description="only this command's jobs"),
    Param(name="submitted_by", where="query", description="scheduler, webhook, route, cli or api"),
    Param(
        name="since",
        where="query",
        description="created at or after: ISO-8601 with an offset, or a duration ago (1h)",
    ),
    Param(
        name="until", where="query", description="created before: ISO-8601 with an offset, or a duration ago"
    ),
    Param(name="q", where="query", description="text in the last error, a run's error, stderr or response"),
    Param(
        name="limit",
        where="query",
        description="page size, 1 to 500 (default 50)",
        schema={"type": "integer", "minimum": 1, "maximum": 500},
    ),
    Param(name="cursor", where="query", description="the previous page's next_cursor"),
)
_TRIGGER_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"payload": {"type": "object"}, "dedupe_key": {"type": "string", "minLength": 1}},
}
_COMMON = {401: "no valid bearer token", 403: "the token lacks the scope named in the answer"}

OPS: tuple[Op, ...] = (
    Op(
        method="POST",
        path="/plugin/{plugin}/{command}",
        operation_id="trigger",
        handler=jobs.trigger,
        summary="Queue a job of the plugin's command (handle: the payload becomes an api.trigger event)",
        need=trigger_needs,
        scope="plugin:rw (plugin:ro for a command of type read)",
        params=(_PLUGIN, Param(name="command", where="path", required=True, description="command name")),
        body=_TRIGGER_BODY,
        responses={
            202: "queued (or deduplicated)",
            404: "no such plugin",
            422: "the command cannot run, or the payload breaks its input_schema",
        },
    ),
    Op(
        method="GET",
        path="/jobs",
        operation_id="listJobs",
        handler=jobs.list_jobs,
        summary="Jobs, newest first",
        need=_needs(Area.JOBS, Access.RO),
        scope="jobs:ro",
        params=_JOB_FILTERS,
        responses={200: "a page of jobs and the next cursor", 400: "a bad filter"},
    ),
    Op(
        method="GET",
        path="/job/{job_id}",
        operation_id="showJob",
        handler=jobs.show_job,
        summary="One job: record, transitions, runs, children",
        need=_needs(Area.JOBS, Access.RO),
        scope="jobs:ro",
        params=(_JOB_ID,),
        responses={200: "the job", 404: "no such job", 409: "ambiguous id"},
    ),
    Op(
        method="POST",
        path="/job/{job_id}/retry",
        operation_id="retryJob",
        handler=jobs.retry_job,
        summary="Queue a dead or succeeded job again, as a new job (retry_of)",
        need=_needs(Area.JOBS, Access.RW),
        scope="jobs:rw",
        params=(_JOB_ID,),
        responses={
            202: "the new job",
            404: "no such job",
            409: "not finished, or ambiguous id",
            422: "its plugin cannot run now",
        },
    ),
    Op(
        method="POST",
        path="/job/{job_id}/cancel",
        operation_id="cancelJob",
        handler=jobs.cancel_job,
        summary="A queued job becomes dead, cancelled by the token's name",
        need=_needs(Area.JOBS, Access.RW),
        scope="jobs:rw",
        params=(_JOB_ID,),
        responses={200: "the cancelled job", 404: "no such job", 409: "not queued, or ambiguous id"},
    ),
    Op(
        method="GET",
        path="/plugins",
        operation_id="listPlugins",
        handler=plugins.list_plugins,
        summary="Loaded, refused (with reasons) and disabled plugins",
        need=_needs(Area.PLUGIN, Access.RO),
        scope="plugin:ro",
        responses={200: "the plugins"},
    ),
    Op(
        method="GET",
        path="/plugin/{plugin}",
        operation_id="showPlugin",
        handler=plugins.show_plugin,
        summary="One plugin: manifest, masked config, schedule, breakers, state size, last run",
        need=_plugin_needs(Access.RO),
        scope="plugin:ro",
        params=(_PLUGIN,),
        responses={200: "the plugin", 404: "no such plugin"},
    ),
    Op(
        method="POST",
        path="/plugin/{plugin}/reset",
        operation_id="resetPlugin",
        handler=plugins.reset_plugin,
        summary="Close the plugin's circuit breakers",
        need=_plugin_needs(Access.RW),
        scope="plugin:rw",
        params=(_PLUGIN,),
        responses={200: "the commands whose breaker was open", 404: "no such plugin"},
    ),
    *(
        Op(
            method="POST",
            path=f"/plugin/{{plugin}}/{verb}",
            operation_id=f"{verb}Plugin",
            handler=handler,
            summary=summary,
            need=_plugin_needs(Access.RW),
            scope="plugin:rw",
            params=(
                _PLUGIN,
                Param(name="schedule", where="query", description="only this schedule id of the plugin"),
            ),
            responses={
                200: "paused or not, and whether this call changed it",
                404: "no such plugin or schedule",
            },
        )
        for verb, handler, summary in (
            ("pause", plugins.pause_plugin, "Pause the plugin's schedules (or one); queued jobs still run"),
            ("resume", plugins.resume_plugin, "Resume what pause paused"),
        )
    ),
    Op(
        method="GET",
        path="/schedule",
        operation_id="schedule",
        handler=plugins.schedule,
        summary="The schedule index: planned runs in [from, to)",
        need=_needs(Area.PLUGIN, Access.RO),
        scope="plugin:ro",
        params=(
            Param(name="from", where="query", description="now, +24h / -30m, or ISO-8601 (default now)"),
            Param(name="to", where="query", description="now, +24h / -30m, or ISO-8601 (default from + 24h)"),
        ),
        responses={200: "the planned runs", 400: "a bad range"},
    ),
    Op(
        method="POST",
        path="/system/reload",
        operation_id="reload",
        handler=system.reload,
        summary="Re-read the config file and apply it",
        need=_needs(Area.SYSTEM, Access.RW),
        scope="system:rw",
        responses={200: "what changed", 422: "the config was refused; the old one stays"},
    ),
    Op(
        method="GET",
        path="/events",
        operation_id="events",
        handler=events.events,
        summary="Server-Sent Events: the activity log, live and resumable",
        need=_needs(Area.EVENTS, Access.RO),
        scope="events:ro",
        media="text/event-stream",
        params=(
            Param(name="plugin", where="query", description="only this plugin's events"),
            Param(
                name="type", where="query", repeatable=True, description="event types, or job.* for a family"
            ),
            Param(name="after", where="query", description="resume after this id (as Last-Event-ID)"),
            Param(name="Last-Event-ID", where="header", description="resume after this id"),
        ),
        responses={200: "the stream", 400: "a bad filter"},
    ),
    Op(
        method="GET",
        path="/metrics",
        operation_id="metrics",
        handler=metrics.metrics,
        summary="Prometheus metrics",
        need=_needs(Area.METRICS, Access.RO),
        scope="metrics:ro",
        media="text/plain",
        responses={200: "the metrics in Prometheus text format"},
    ),
)


def openapi(ops: tuple[Op, ...] = OPS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``ops`` (plus /healthz and /openapi.json)."""
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Health (no token needed)",
                "security": [],
                "responses": {
                    "200": {"description": "the figures of D20"},
                    "503": {"description": "the same, status degraded: the store refuses writes"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (any valid token)",
                "responses": {"200": {"description": "OpenAPI 3.1"}, "401": {"description": _COMMON[401]}},
            }
        },
    }
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ductile operator API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(op: Op) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": f"Needs scope `{op.scope}` (`rw` implies `ro`; `*` grants everything).",
        "responses": {
            str(code): {"description": text, **({"content": {op.media: {}}} if 200 <= code < 300 else {})}
            for code, text in {**op.responses, **_COMMON}.items()
        },
    }
    if op.params:
        doc["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": {"type": "array", "items": p.schema} if p.repeatable else p.schema,
                **({"explode": True} if p.repeatable else {}),
            }
            for p in op.params
        ]
    if op.body is not None:
        doc["requestBody"] = {"required": False, "content": {"application/json": {"schema": op.body}}}
    return doc
