"""The operator API as a Starlette application: the route table, guarded by bearer tokens.

Every route but ``/healthz`` needs a valid token (401 with ``WWW-Authenticate:
Bearer`` otherwise); a route's :class:`~ductile.domain.scopes.Need` must be
covered by the token's scopes (403 naming the missing scope otherwise). Every
call is logged with the token's *name*, never the token. Errors are JSON
``{"error": ..., "detail": ...}``; a fault of the machine (a locked or full
database) is a 503, never a traceback.

Seams for what comes next: ``fallback`` serves what no route matches (the
webhook listener, when both share an address), ``extra`` adds routes (the
dashboard under ``/ui/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ductile.app.api.auth import authenticate
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError, JsonResponse
from ductile.app.api.routes import OPS, Op, openapi
from ductile.app.api.system import healthz
from ductile.domain.errors import DuctileError
from ductile.domain.scopes import allows
from ductile.log import Log
from ductile.ports.store_faults import StoreFaultError

_log = Log("api")


def _authorization(request: Request) -> bytes | None:
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


def _log_call(request: Request, status: int, token: str | None, started: float) -> None:
    peer = request.client
    _log.info(
        f"{request.method} {request.url.path} -> {status}",
        token=token,
        status=status,
        client=f"{peer.host}:{peer.port}" if peer else None,
        ms=round((time.monotonic() - started) * 1000, 1),
    )


def _unauthorized() -> Response:
    return ApiError(
        401,
        "unauthorized",
        "send Authorization: Bearer <token>",
        {"www-authenticate": 'Bearer realm="ductile"'},
    ).response()


def guarded(op: Op | None, ctx: ApiContext, handler: Any = None) -> Any:
    """The Starlette endpoint of ``op``: token, scope, handler, errors, one log line."""

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        token = authenticate(_authorization(request), ctx.tokens())
        if token is None:
            response = _unauthorized()
        else:
            need = op.need(request, ctx) if op is not None and op.need is not None else None
            if need is not None and not allows(token.scopes, need):
                response = ApiError(403, "forbidden", f"this token lacks the scope {need}").response()
            else:
                response = await _answer(request, ctx, token, op.handler if op is not None else handler)
        _log_call(request, response.status_code, token.name if token else None, started)
        return response

    return endpoint


async def _answer(request: Request, ctx: ApiContext, token: Any, handler: Any) -> Response:
    try:
        response: Response = await handler(request, ctx, token)
    except ApiError as e:
        return e.response()
    except DuctileError as e:  # a store fault: the machine's, not the caller's
        # A StoreFaultError's error line is the store's own, once per episode: each refusal at warn.
        level = logging.WARNING if isinstance(e, StoreFaultError) else logging.ERROR
        _log.log(level, f"{request.method} {request.url.path} failed: {e}")
        return ApiError(503, "unavailable", str(e)).response()
    return response


async def _openapi(request: Request, ctx: ApiContext, token: Any) -> Response:
    return JsonResponse(openapi())


def build_api(
    ctx: ApiContext, *, fallback: ASGIApp | None = None, extra: Sequence[BaseRoute] = ()
) -> Starlette:
    """The API application over ``ctx``."""

    async def health(request: Request) -> Response:
        return await healthz(request, ctx)

    routes: list[BaseRoute] = [Route("/healthz", health, methods=["GET"])]
    routes.append(Route("/openapi.json", guarded(None, ctx, _openapi), methods=["GET"]))
    # Literal paths before templated ones: /plugin/{plugin}/reset must win over the
    # trigger's /plugin/{plugin}/{command} (a command named "reset" cannot be triggered).
    for op in sorted(OPS, key=lambda op: op.path.count("{")):
        routes.append(Route(op.path, guarded(op, ctx), methods=[op.method], name=op.operation_id))
    routes += list(extra)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = (
            "not found"
            if exc.status_code == 404
            else ("method not allowed" if exc.status_code == 405 else "error")
        )
        return JsonResponse({"error": error, "detail": exc.detail}, exc.status_code, exc.headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    if fallback is not None:
        app.router.default = fallback
    return app
