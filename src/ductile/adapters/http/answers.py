"""How the adapter answers: a small JSON document, and a refused request's log line.

Every answer of ours is JSON with ``Cache-Control: no-store``. An answer sent
before the body was read to its end carries ``Connection: close``: otherwise
uvicorn would go on reading (and discarding) whatever the client still sends
on the kept-alive connection, without bound.

Every 4xx is logged at info with its reason (:data:`refusals`), at most
:data:`REFUSALS_PER_WINDOW` lines per status and endpoint path each
:data:`REFUSAL_WINDOW` seconds: a misconfigured sender is visible at once, a
flood of bad requests does not flood the log (the next line says how many
were left out).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ductile.adapters.http.asgi import ENDPOINT, Scope, Send
from ductile.domain.config import Endpoint
from ductile.log import Log

#: The adapter's logger: the records' logger stays ``ductile.http``, their component ``http``.
log = Log("http", logger=logging.getLogger("ductile.http"))


async def respond(
    send: Send,
    status: int,
    document: Any,
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with ``document`` as JSON; ``close`` adds ``Connection: close``, ``extra`` more headers."""
    body = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond_text(send: Send, status: int, text: str, *, close: bool = False) -> None:
    """Answer with plain text, as Starlette's ``PlainTextResponse`` did (ADR 0018);
    ``close`` adds ``Connection: close``."""
    body = text.encode("utf-8")
    headers = [
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client(scope: Scope) -> str | None:
    """The client's ``host:port`` for a log line; None when the server does not know it."""
    peer = scope.get("client")
    return f"{peer[0]}:{peer[1]}" if peer else None


#: At most this many refusal lines per (status, endpoint path) each window...
REFUSALS_PER_WINDOW = 10
#: ...of this many seconds.
REFUSAL_WINDOW = 60.0
#: Keys remembered at most (paths of 404s come from clients: the table must stay bounded).
_MAX_KEYS = 256


class RefusalLog:
    """Logs refused requests at info, rate-limited per (status, path); see the module's docs."""

    def __init__(
        self,
        *,
        per_window: int = REFUSALS_PER_WINDOW,
        window: float = REFUSAL_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_window = per_window
        self._window = window
        self._clock = clock
        #: key -> [window start, lines logged in it, lines left out]
        self._seen: dict[tuple[int, str | None], list[float]] = {}

    def reset(self) -> None:
        """Forget every window (tests that count lines start from a clean slate)."""
        self._seen.clear()

    def __call__(self, status: int, message: str, *, path: str | None = None, **fields: Any) -> None:
        if not log.enabled_for(logging.INFO):
            return
        key = (status, path)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self._window:
            left_out = int(entry[2]) if entry is not None else 0
            if entry is None and len(self._seen) >= _MAX_KEYS:
                self._seen.clear()
            entry = self._seen[key] = [now, 0, 0]
            if left_out:
                fields["left_out"] = left_out
                message += f" ({left_out} more like it left out of the log in the last minute)"
        if entry[1] >= self._per_window:
            entry[2] += 1
            return
        entry[1] += 1
        log.info(message, status=status, path=path, **fields)


#: The adapter's one refusal log.
refusals = RefusalLog()


async def refuse(
    scope: Scope, send: Send, status: int, document: Any, why: str, *, close: bool, **fields: Any
) -> None:
    """Refuse a webhook request: a line naming the endpoint and ``why`` (:data:`refusals`), then
    the answer."""
    endpoint: Endpoint = scope[ENDPOINT]
    refusals(
        status,
        f"webhook refused ({status}): {why}",
        path=endpoint.path,
        plugin=endpoint.plugin,
        client=client(scope),
        **fields,
    )
    await respond(send, status, document, close=close)
