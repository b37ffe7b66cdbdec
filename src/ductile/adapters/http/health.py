"""The health route: ``GET /healthz`` (D20).

The document comes from the app (``Ductile``: status, uptime, queue depth,
plugins, the scheduler's failures, whether the store accepts writes); this
route only serves it: 200 with it when its ``status`` is ``ok``, 503 with it
otherwise (a monitor that only looks at the code sees a daemon that cannot do
its work; the document says why), 503 ``{"status": "error"}`` when building it
raises (logged), 405 for a method other than GET or HEAD.
``/healthz`` is always the health check, even if an endpoint claims the path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ductile.adapters.http.answers import log, refusals, respond
from ductile.adapters.http.asgi import Receive, Scope, Send
from ductile.adapters.http.framing import closes_early

HEALTH_PATH = "/healthz"
#: The /healthz document.
Health = Callable[[], Awaitable[dict[str, Any]]]


class HealthRoute:
    """The ASGI app at :data:`HEALTH_PATH`."""

    def __init__(self, health: Health) -> None:
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        close = closes_early(scope)
        if scope["method"] not in ("GET", "HEAD"):
            refusals(405, f"{scope['method'][:20]} {HEALTH_PATH}: GET or HEAD only", path=HEALTH_PATH)
            allow = [(b"allow", b"GET, HEAD")]
            await respond(send, 405, {"error": "method not allowed"}, close=close, extra=allow)
            return
        try:
            document = await self._health()
            await respond(send, 200 if document.get("status") == "ok" else 503, document, close=close)
        except Exception:
            log.exception("the health check failed")
            await respond(send, 503, {"status": "error"}, close=close)
