"""How the adapter answers: a small JSON document, and a refused webhook's log line.

Every answer of ours is JSON with ``Cache-Control: no-store``. An answer sent
before the body was read to its end carries ``Connection: close``: otherwise
uvicorn would go on reading (and discarding) whatever the client still sends
on the kept-alive connection, without bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
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


async def refuse(
    scope: Scope, send: Send, status: int, document: Any, why: str, *, close: bool, **fields: Any
) -> None:
    """Refuse a webhook request: a warning naming the endpoint and ``why``, then the answer."""
    endpoint: Endpoint = scope[ENDPOINT]
    log.warning(
        f"webhook refused: {why}", plugin=endpoint.plugin, path=endpoint.path, client=client(scope), **fields
    )
    await respond(send, status, document, close=close)
