"""The ASGI app: ``POST <endpoint.path>`` webhooks (D11) and ``GET /healthz`` (D20).

It is a stack of small ASGI wrappers, each doing one check before the next
(ADR 0018); read :func:`build_app` from the outside in:

1. :class:`Entry`: lifespan and websocket scopes get the answers Starlette's
   router gave them; a request whose target is not a path gets a plain-text
   404 that closes the connection (its body is never read); the others go on
   with their path below the mount point;
2. :class:`~ductile.adapters.http.framing.FramingCheck`: the head both
   parsers agree on, or 400 (every path);
3. :class:`Routes`: ``/healthz``, else the endpoint table (404), else the
   method (405);
4. for a webhook, :class:`~ductile.adapters.http.limits.BodyLimit` (413/408)
   around :class:`~ductile.adapters.http.webhook.WebhookRoute` (403, 400,
   202 or 503).

The endpoint table is read on every request (``endpoints`` is called), so a
config reload applies new endpoints without restarting the listener; every
answer of ours, 404 and 405 included, is the same small JSON document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ductile.adapters.http.answers import client, refusals, respond, respond_text
from ductile.adapters.http.asgi import ENDPOINT, ROUTE_PATH, ASGIApp, Receive, Scope, Send
from ductile.adapters.http.framing import FramingCheck, closes_early
from ductile.adapters.http.health import HEALTH_PATH, Health, HealthRoute
from ductile.adapters.http.limits import BodyLimit
from ductile.adapters.http.webhook import Submit, WebhookRoute
from ductile.domain.config import Endpoint

NOT_FOUND = {"error": "not found"}
METHOD_NOT_ALLOWED = {"error": "method not allowed"}


def build_app(
    *,
    endpoints: Callable[[], Sequence[Endpoint]],
    submit: Submit,
    health: Health,
    body_timeout: float = 10.0,
    ready: Callable[[], bool] | None = None,
) -> ASGIApp:
    """The ASGI app: ``POST <endpoint.path>`` webhooks and ``GET /healthz``.

    ``endpoints`` is called on every request, so a reload takes effect
    without restarting the server. ``body_timeout`` is the deadline, in
    seconds, for receiving a whole request body. ``ready`` (an embedded
    instance mounted before it was opened): every request is answered 503
    while it returns False; None (ductile's own server, started once ready)
    adds nothing to the path of a request.
    """
    webhook = BodyLimit(WebhookRoute(submit), body_timeout)
    app: ASGIApp = FramingCheck(Routes(endpoints, health=HealthRoute(health), webhook=webhook))
    return Entry(app if ready is None else NotReady(app, ready))


NOT_READY = {"error": "not ready"}


class NotReady:
    """503 with ``Retry-After: 1`` while ``ready()`` is False (the instance is not open)."""

    def __init__(self, app: ASGIApp, ready: Callable[[], bool]) -> None:
        self._app = app
        self._ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._ready():
            await self._app(scope, receive, send)
            return
        await respond(send, 503, NOT_READY, close=True, extra=[(b"retry-after", b"1")])


#: A path to route: what Starlette's catch-all route ``/{path:path}`` matched (``re.match``, so
#: ``$`` also matches before a final line break). Kept so that what it did not match still gets
#: the plain-text 404 that ADR 0017's table records.
_A_PATH = re.compile(r"/.*$")


def route_path(scope: Scope) -> str | None:
    """The path to route on, below the mount point (``root_path``); None if the target is no path.

    h11 passes an absolute-form target (``http://host/x``) and CONNECT's
    authority form (``host:443``) on raw, and a percent-encoded line break
    decodes into the path: such targets name no route.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not (root and path.startswith(root)):
        return path if _A_PATH.match(path) else None
    below = path[len(root) :] or "/"
    # Starlette cut the mount point off only before a "/"; what it saw had to be a path.
    seen = below if below[0] == "/" else path
    return below if _A_PATH.match(seen) else None


async def _other_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """Scopes other than HTTP, answered as Starlette's router answered them.

    Our own server runs with neither lifespan nor websockets; an embedder's
    server may send them. A lifespan has nothing to start or stop; a
    websocket is closed before it is accepted (the server refuses the
    handshake with 403).
    """
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000, "reason": ""})


class Entry:
    """The outermost layer: HTTP requests go on with their route path, the rest is answered here."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _other_scope(scope, receive, send)
            return
        path = route_path(scope)
        if path is None:  # the body (if any) is never read: close, or the client waits on it
            await respond_text(send, 404, "Not Found", close=True)
            return
        scope[ROUTE_PATH] = path
        await self._app(scope, receive, send)


class Routes:
    """``/healthz``, then the endpoint table (404), then the method (405), then the webhook."""

    def __init__(
        self, endpoints: Callable[[], Sequence[Endpoint]], *, health: ASGIApp, webhook: ASGIApp
    ) -> None:
        self._endpoints = endpoints
        self._health = health
        self._webhook = webhook

    def _find(self, path: str) -> Endpoint | None:
        for endpoint in self._endpoints():
            if endpoint.path == path:
                return endpoint
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope[ROUTE_PATH]
        if path == HEALTH_PATH:
            await self._health(scope, receive, send)
            return
        endpoint = self._find(path)
        if endpoint is None:
            # Any path a client sends: all of them share one rate-limit key.
            refusals(404, f"no webhook endpoint at {path[:200]!r}", client=client(scope))
            await respond(send, 404, NOT_FOUND, close=closes_early(scope))
            return
        if scope["method"] != "POST":
            refusals(
                405,
                f"{scope['method'][:20]} {endpoint.path}: webhooks take POST only",
                path=endpoint.path,
                plugin=endpoint.plugin,
                client=client(scope),
            )
            allow = [(b"allow", b"POST")]
            await respond(send, 405, METHOD_NOT_ALLOWED, close=closes_early(scope), extra=allow)
            return
        scope[ENDPOINT] = endpoint
        await self._webhook(scope, receive, send)
