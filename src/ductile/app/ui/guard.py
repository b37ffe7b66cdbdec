"""Every dashboard request passes here: the session (else the login page), the scope the
page or action needs (else 403 naming it), the CSRF token of a form that changes
something (else 403), errors as pages (a fault of the machine is a 503, never a
traceback), and one log line with the token's name.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ductile.app.api.body import read_body
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError
from ductile.app.ui.render import page
from ductile.app.ui.session import COOKIE, Session, Sessions
from ductile.domain.errors import DuctileError
from ductile.domain.scopes import Access, Area, Need, allows
from ductile.log import Log

_log = Log("ui")
#: The largest form the dashboard reads (a run-now payload is the biggest).
MAX_FORM = 256 * 1024

NeedOf = Callable[[Request, ApiContext], Need | None]


@attrs.frozen(kw_only=True)
class Visit:
    """What a page or action handler gets: the request, the API's context, the session, the form."""

    request: Request
    ctx: ApiContext
    session: Session
    form: dict[str, str]
    #: The activity log's last id before the page read anything: its live updates resume
    #: after it, so an event between the render and the stream's start is not missed.
    since: int = 0

    def can(self, area: str, access: str = "ro", plugin: str | None = None) -> bool:
        return allows(self.session.token.scopes, Need(Area(area), Access(access), plugin))

    def page(self, template: str, status: int = 200, **values: Any) -> Response:
        return page(
            template,
            now=self.ctx.engine.clock.now(),
            status=status,
            can=self.can,
            session=self.session,
            path=self.request.url.path,
            since=self.since,
            **values,
        )


Handler = Callable[[Visit], Awaitable[Response]]


def needs(area: Area, access: Access = Access.RO) -> NeedOf:
    return lambda request, ctx: Need(area, access)


def plugin_needs(access: Access = Access.RO) -> NeedOf:
    return lambda request, ctx: Need(Area.PLUGIN, access, request.path_params.get("plugin"))


async def read_form(request: Request, ctx: ApiContext, limit: int = MAX_FORM) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a repeated
    name); 413 past ``limit`` bytes, 408 when it is not received within the API's body timeout."""
    raw = await read_body(request, limit, ctx.body_timeout, "form")
    pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def error_page(ctx: ApiContext, status: int, title: str, detail: str, session: Session | None) -> Response:
    return page(
        "error.html",
        now=ctx.engine.clock.now(),
        status=status,
        title=title,
        detail=detail,
        session=session,
        can=lambda *a, **k: False,
        path="",
    )


def guarded(
    ctx: ApiContext, sessions: Sessions, need: NeedOf | None, handler: Handler, *, write: bool
) -> Any:
    """The Starlette endpoint of a page (``write`` False) or an action (``write`` True)."""

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        session = sessions.find(request.cookies.get(COOKIE), ctx.tokens())
        response = await _answer(request, ctx, session, need, handler, write=write)
        peer = request.client
        _log.info(
            f"{request.method} {request.url.path} -> {response.status_code}",
            token=session.token.name if session else None,
            status=response.status_code,
            client=f"{peer.host}:{peer.port}" if peer else None,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    return endpoint


async def _answer(
    request: Request,
    ctx: ApiContext,
    session: Session | None,
    need: NeedOf | None,
    handler: Handler,
    *,
    write: bool,
) -> Response:
    if session is None:
        if write:
            return error_page(ctx, 403, "Not signed in", "sign in again: your session has ended", None)
        target = urllib.parse.quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/ui/login?next={target}", 303)
    wanted = need(request, ctx) if need is not None else None
    if wanted is not None and not allows(session.token.scopes, wanted):
        return error_page(ctx, 403, "Forbidden", f"this token lacks the scope {wanted}", session)
    try:
        form = await read_form(request, ctx) if write else {}
        if write and not session.csrf_ok(form.get("csrf")):
            return error_page(ctx, 403, "Forbidden", "the form's CSRF token is missing or wrong", session)
        since = 0 if write else max(ctx.feed.position, await ctx.engine.store.last_activity_id())
        return await handler(Visit(request=request, ctx=ctx, session=session, form=form, since=since))
    except ApiError as e:
        detail = e.detail if isinstance(e.detail, str) else str(e.detail.get("message", e.detail))
        return error_page(ctx, e.status, e.error.capitalize(), detail, session)
    except DuctileError as e:  # a store fault: the machine's, not the caller's
        _log.error(f"{request.method} {request.url.path} failed: {e}")
        return error_page(ctx, 503, "Unavailable", str(e), session)
