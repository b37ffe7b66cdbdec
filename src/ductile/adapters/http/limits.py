"""Body limits: a webhook body within ``max_body_size`` and the body deadline, or 413/408.

PITFALLS.md ("HTTP"): reading the whole body before looking at it buffers
whatever the client sends, and a client that declares more than it sends
holds the request open for as long as it likes. So:

- a declared Content-Length over the endpoint's ``max_body_size`` is refused
  at once (413), the body never read;
- the body is read chunk by chunk, counting, and refused (413) as soon as the
  count passes the limit: never more than the limit plus one chunk is held
  (uvicorn hands over at most ~64 KiB + one socket read, and pauses reading
  while that much is unread);
- the whole body must arrive within ``body_timeout`` seconds, one deadline for
  all of it: too slow, or short of its Content-Length -> 408.

Each refusal closes the connection (the rest of the body is never read).
"""

from __future__ import annotations

import asyncio

from ductile.adapters.http.answers import refuse
from ductile.adapters.http.asgi import BODY, ENDPOINT, FRAMING, ASGIApp, Receive, Scope, Send
from ductile.adapters.http.framing import Framing
from ductile.domain.config import Endpoint

TOO_LARGE = {"error": "body too large"}
TIMED_OUT = {"error": "request body timed out"}


class _TooLargeError(Exception):
    pass


class _DisconnectedError(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, counted as it arrives: never more than ``limit`` plus one
    chunk (uvicorn hands over at most ~64 KiB + one socket read) is held."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimit:
    """ASGI middleware around a webhook route: reads the body within the endpoint's limits.

    The route inside finds the body in the scope
    (:data:`~ductile.adapters.http.asgi.BODY`); a client that disconnects
    before sending it all gets no answer.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self._app = app
        self._timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: Endpoint = scope[ENDPOINT]
        framing: Framing = scope[FRAMING]
        limit = endpoint.max_body_size
        if framing.length is not None and framing.length > limit:
            why = "body over max_body_size (declared)"
            await refuse(
                scope, send, 413, TOO_LARGE, why, close=True, declared=framing.length, max_body_size=limit
            )
            return
        try:
            async with asyncio.timeout(self._timeout):
                body = await _read_body(receive, limit)
        except TimeoutError:
            why = "request body not received in time"
            await refuse(scope, send, 408, TIMED_OUT, why, close=True, timeout=self._timeout)
            return
        except _TooLargeError:
            why = "body over max_body_size (streamed)"
            await refuse(scope, send, 413, TOO_LARGE, why, close=True, max_body_size=limit)
            return
        except _DisconnectedError:
            return
        scope[BODY] = body
        await self._app(scope, receive, send)
