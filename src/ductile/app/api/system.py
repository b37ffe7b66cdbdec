"""System routes: reload the config with a report, and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ductile.app.api.body import only
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError, JsonResponse
from ductile.domain.config import ApiToken
from ductile.domain.errors import ConfigError


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
    """``GET /healthz``: 200 while ``status`` is ``ok``, 503 otherwise (as on the webhook listener)."""
    doc = await ctx.health()
    return JsonResponse(doc, status_code=200 if doc.get("status") == "ok" else 503)
