"""The dashboard (issue 16): server-rendered pages under ``/ui/`` on the API's listener.

Signed in with an API token (:mod:`~ductile.app.ui.session`), a person sees what
the API shows (:mod:`~ductile.app.ui.pages`) and does what the token's scopes
allow (:mod:`~ductile.app.ui.actions`); pages update live from the API's event
stream (``static/ui.js``: a few lines, no library) and work without JavaScript.
:func:`ui_routes` is what the API mounts (``build_api(extra=...)``).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ductile.app.api.auth import authenticate
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError
from ductile.app.api.routes import trigger_needs
from ductile.app.ui import actions, forecast, pages
from ductile.app.ui.forecast import Forecasts
from ductile.app.ui.guard import Handler, NeedOf, error_page, guarded, needs, plugin_needs, read_form
from ductile.app.ui.render import page, static_files
from ductile.app.ui.session import COOKIE, Sessions
from ductile.domain.scopes import Access, Area
from ductile.log import Log

_log = Log("ui")
PREFIX = "/ui"
Endpoint = Callable[[Request], Awaitable[Response]]


def _next(text: str | None) -> str:
    """Where to go after signing in: a path of the dashboard only (never another site)."""
    if text and text.startswith(f"{PREFIX}/") and not text.startswith("//") and "\\" not in text:
        return text
    return f"{PREFIX}/"


def _login_routes(ctx: ApiContext, sessions: Sessions) -> list[BaseRoute]:
    async def form(request: Request) -> Response:
        return page(
            "login.html",
            now=ctx.engine.clock.now(),
            next=_next(request.query_params.get("next")),
            error=None,
            session=None,
            path="",
        )

    async def login(request: Request) -> Response:
        try:
            fields = await read_form(request, ctx, 16 * 1024)
        except ApiError as e:
            return e.response()
        target = _next(fields.get("next"))
        secret = fields.get("token", "").strip().encode("utf-8", "surrogatepass")
        token = authenticate(b"Bearer " + secret, ctx.tokens()) if secret else None
        if token is None:
            _log.warning("dashboard sign-in refused: unknown token")
            return page(
                "login.html",
                now=ctx.engine.clock.now(),
                status=401,
                next=target,
                error="unknown token",
                session=None,
                path="",
            )
        session = sessions.open(token)
        _log.info("dashboard sign-in", token=token.name)
        response = RedirectResponse(target, 303)
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(COOKIE, session.id, path=PREFIX, httponly=True, samesite="strict", secure=secure)
        return response

    async def logout(request: Request) -> Response:
        try:
            fields = await read_form(request, ctx, 16 * 1024)
        except ApiError as e:
            return e.response()
        session = sessions.find(request.cookies.get(COOKIE), ctx.tokens())
        if session is not None:
            if not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf.encode()):
                return error_page(ctx, 403, "Forbidden", "the form's CSRF token is missing or wrong", session)
            sessions.close(session.id)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    return [
        Route(f"{PREFIX}/login", form, methods=["GET"]),
        Route(f"{PREFIX}/login", login, methods=["POST"]),
        Route(f"{PREFIX}/logout", logout, methods=["POST"]),
    ]


def _static_route() -> BaseRoute:
    files = static_files()

    async def static(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return Response("not found", 404, media_type="text/plain")
        body, media = found
        return Response(body, media_type=media, headers={"cache-control": "max-age=3600"})

    return Route(f"{PREFIX}/static/{{name}}", static, methods=["GET"])


#: (method, path, what it needs, handler); every POST is an action (a CSRF token required).
_TABLE: tuple[tuple[str, str, NeedOf, Handler], ...] = (
    ("GET", "/", needs(Area.JOBS), pages.overview),
    ("GET", "/jobs", needs(Area.JOBS), pages.job_list),
    ("GET", "/job/{job_id}", needs(Area.JOBS), pages.job_page),
    ("GET", "/job/{job_id}/run/{attempt}/{stream}", needs(Area.JOBS), pages.run_output),
    ("GET", "/plugins", needs(Area.PLUGIN), pages.plugin_list),
    ("GET", "/plugin/{plugin}", plugin_needs(), pages.plugin_page),
    ("GET", "/schedule", needs(Area.PLUGIN), pages.schedule_page),
    ("GET", "/events", needs(Area.EVENTS), pages.event_stream),
    ("POST", "/job/{job_id}/retry", needs(Area.JOBS, Access.RW), actions.retry),
    ("POST", "/job/{job_id}/cancel", needs(Area.JOBS, Access.RW), actions.cancel),
    ("POST", "/plugin/{plugin}/reset", plugin_needs(Access.RW), actions.reset),
    ("POST", "/plugin/{plugin}/run/{command}", trigger_needs, actions.run_now),
    ("POST", "/plugin/{plugin}/pause", plugin_needs(Access.RW), actions.pause),
    ("POST", "/plugin/{plugin}/resume", plugin_needs(Access.RW), actions.resume),
    ("POST", "/reload", needs(Area.SYSTEM, Access.RW), actions.reload),
)


def _switched(ctx: ApiContext, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` while ``ui.enabled`` holds in the config in force (a reload may change it);
    404 otherwise, as for a path that does not exist."""

    async def switched(request: Request) -> Response:
        if not ctx.engine.runtime.config.ui_enabled:
            return Response("not found", 404, media_type="text/plain")
        return await endpoint(request)

    return switched


def ui_routes(
    ctx: ApiContext, sessions: Sessions | None = None, forecasts: Forecasts | None = None
) -> list[BaseRoute]:
    """The dashboard's routes over the API's context."""
    sessions = sessions if sessions is not None else Sessions()
    show_forecast, start_forecast = forecast.handlers(forecasts if forecasts is not None else Forecasts())
    table = (
        *_TABLE,
        ("GET", "/forecast", needs(Area.PLUGIN), show_forecast),
        ("POST", "/forecast", needs(Area.PLUGIN), start_forecast),
    )

    async def bare(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", 308)

    routes = [*_login_routes(ctx, sessions), _static_route(), Route(PREFIX, bare, methods=["GET"])]
    for method, path, need, handler in table:
        endpoint = guarded(ctx, sessions, need, handler, write=method == "POST")
        routes.append(Route(PREFIX + path, endpoint, methods=[method]))
    return [
        Route(r.path, _switched(ctx, r.endpoint), methods=r.methods) for r in routes if isinstance(r, Route)
    ]


__all__ = ["PREFIX", "Sessions", "ui_routes"]
