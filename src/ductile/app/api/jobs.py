"""The job routes: trigger a command, list and show jobs, retry and cancel them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ductile.app import operations
from ductile.app.api.body import decode_cursor, encode_cursor, instant, integer, json_body, only, single
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError, JsonResponse, bad_request, not_found
from ductile.app.intake import EnqueueRefusedError, InvalidPayloadError, Manual
from ductile.app.runtime import PluginState
from ductile.app.views import job_json
from ductile.domain.config import ApiToken
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.ports.store import JobQuery

#: The event type a ``handle`` job triggered through the API receives.
TRIGGER_EVENT_TYPE = "api.trigger"
#: Most jobs one page of ``GET /jobs`` holds.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
#: Commands the daemon runs itself, never on request (as ``ductile run`` refuses them).
NOT_TRIGGERED = {
    "init": "init runs when the plugin is first loaded or its config changes (start, reload)",
    "health": "health runs on demand with `ductile status`, not as a queued job",
}
JOB_FILTERS = ("status", "plugin", "command", "submitted_by", "since", "until", "q", "limit", "cursor")


async def trigger(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    """``POST /plugin/{plugin}/{command}``: queue a job through the one intake path."""
    only(request, ())
    body = await json_body(request, ctx.max_body, ctx.body_timeout)
    payload, dedupe_key = _trigger_body(body)
    doc = await queue_trigger(
        ctx, request.path_params["plugin"], request.path_params["command"], payload, dedupe_key
    )
    return JsonResponse(doc, 202)


async def queue_trigger(
    ctx: ApiContext, plugin: str, command: str, payload: dict[str, Any] | None, dedupe_key: str | None
) -> dict[str, Any]:
    """Queue ``plugin``'s ``command`` as the API does (the dashboard's run-now too): the answer's
    document; :class:`ApiError` 404 for an unknown plugin, 422 for a command that cannot run."""
    engine = ctx.engine
    if engine.runtime.status_of(plugin).state is PluginState.ABSENT:
        raise not_found(f"no plugin named {plugin!r}")
    if command in NOT_TRIGGERED:
        raise ApiError(422, "cannot run", NOT_TRIGGERED[command])
    submission = Manual(
        plugin=plugin,
        command=command,
        payload=payload,
        event_type=TRIGGER_EVENT_TYPE,
        dedupe_key=dedupe_key,
        submitted_by=SubmittedBy.API,
    )
    try:
        result = await engine.submit(submission)
    except InvalidPayloadError as e:
        raise ApiError(422, "invalid payload", str(e)) from None
    except EnqueueRefusedError as e:
        raise ApiError(422, "cannot run", str(e)) from None
    job = await engine.store.get_job(result.job_id)
    status = job.status.value if job is not None else JobStatus.QUEUED.value
    ctx.feed.poke()
    return {
        "job_id": result.job_id,
        "status": status,
        "plugin": plugin,
        "command": command,
        "deduplicated": not result.created,
    }


def _trigger_body(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    if body is None:
        return None, None
    if not isinstance(body, dict):
        raise ApiError(
            422, "invalid body", 'the body must be a JSON object: {"payload": {...}, "dedupe_key": "..."}'
        )
    unknown = sorted(set(body) - {"payload", "dedupe_key"})
    if unknown:
        raise ApiError(
            422,
            "invalid body",
            f"unknown field(s) {', '.join(map(repr, unknown))}; known: payload, dedupe_key",
        )
    payload, key = body.get("payload"), body.get("dedupe_key")
    if payload is not None and not isinstance(payload, dict):
        raise ApiError(422, "invalid body", "payload must be a JSON object")
    if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > 1024):
        raise ApiError(422, "invalid body", "dedupe_key must be non-empty text of at most 1024 characters")
    return payload, key


def job_query(request: Request, ctx: ApiContext) -> JobQuery:
    """The filters of ``GET /jobs`` as a query (400 naming the bad parameter)."""
    only(request, JOB_FILTERS)
    now = ctx.engine.clock.now()
    statuses = None
    wanted = request.query_params.getlist("status")
    if wanted:
        try:
            statuses = frozenset(JobStatus(s) for s in wanted)
        except ValueError:
            names = ", ".join(s.value for s in JobStatus)
            raise bad_request(f"status: expected one of {names}") from None
    since, until, limit, cursor, text = (
        single(request, n) for n in ("since", "until", "limit", "cursor", "q")
    )
    if text is not None and not text:
        raise bad_request("q: must not be empty")
    return JobQuery(
        statuses=statuses,
        plugin=single(request, "plugin"),
        command=single(request, "command"),
        submitted_by=single(request, "submitted_by"),
        since=None if since is None else instant(since, "since", now),
        until=None if until is None else instant(until, "until", now),
        text=text,
        limit=DEFAULT_LIMIT if limit is None else integer(limit, "limit", low=1, high=MAX_LIMIT),
        after=None if cursor is None else decode_cursor(cursor),
    )


async def list_jobs(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    """``GET /jobs``: newest first, a page at a time."""
    page = await operations.list_jobs(ctx.engine.store, job_query(request, ctx))
    return JsonResponse(
        {
            "jobs": [job_json(j) for j in page.jobs],
            "next_cursor": None if page.next is None else encode_cursor(page.next),
        }
    )


def _operation_error(e: Exception) -> ApiError:
    if isinstance(e, operations.NotFoundError):
        return not_found(str(e))
    if isinstance(e, operations.AmbiguousIdError):
        return ApiError(409, "ambiguous id", {"message": str(e), "matches": e.matches})
    return ApiError(409, "conflict", str(e))


_OPERATION_ERRORS = (operations.NotFoundError, operations.AmbiguousIdError, operations.ConflictError)


async def show_job(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    try:
        return JsonResponse(await operations.show_job(ctx.engine.store, request.path_params["job_id"]))
    except _OPERATION_ERRORS as e:
        raise _operation_error(e) from None


async def retry_job(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    engine = ctx.engine
    try:
        old, result = await operations.retry_job(
            engine.store,
            engine.runtime,
            request.path_params["job_id"],
            submitted_by=SubmittedBy.API,
            now=engine.clock.now(),
            new_id=engine.new_id,
            notify=engine.inbox.notify,
        )
    except _OPERATION_ERRORS as e:
        raise _operation_error(e) from None
    except EnqueueRefusedError as e:
        raise ApiError(422, "cannot run", str(e)) from None
    ctx.feed.poke()
    return JsonResponse({"job_id": result.job_id, "retry_of": old.id, "status": JobStatus.QUEUED.value}, 202)


async def cancel_job(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ())
    engine = ctx.engine
    try:
        job = await operations.cancel_job(
            engine.store,
            request.path_params["job_id"],
            who=token.name,
            actor=Actor.API,
            now=engine.clock.now(),
            alerts=engine.runtime.alerts(),
        )
    except _OPERATION_ERRORS as e:
        raise _operation_error(e) from None
    ctx.feed.poke()
    return JsonResponse({"job": job_json(job)})
