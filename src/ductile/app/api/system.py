"""System routes: reload the config with a report, and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ductile.app.api.body import only
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError, JsonResponse
from ductile.domain.config import ApiToken
from ductile.domain.errors import ConfigError
from ductile.log import Log

_log = Log("api")


async def reload(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    """``POST /system/reload``: what changed, or 422 with the config error (the old config stays)."""
    only(request, ())
    try:
        report = await ctx.reload()
    except ConfigError as e:
        raise ApiError(422, "config rejected", str(e)) from None
    ctx.feed.poke()
    return JsonResponse(report)


async def healthz(request: Request, ctx: ApiContext) -> Response:
    """``GET /healthz``, as on the webhook listener: 200 when ``ok``; 503 with the document
    while degraded (failing scheduler ticks), 503 ``{"status": "error"}`` when it cannot be built."""
    try:
        document = await ctx.health()
    except Exception:
        _log.exception("the health check failed")
        return JsonResponse({"status": "error"}, 503)
    return JsonResponse(document, 200 if document.get("status") == "ok" else 503)
