"""The ASGI app: ``POST <endpoint.path>`` webhooks (D11) and ``GET /healthz`` (D20)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ductile.adapters.http.framing import BadRequestError, Framing, check_head
from ductile.adapters.http.headers import dedupe_key, delivery_headers, header_values
from ductile.adapters.http.jsonbody import NotJsonError, parse_payload
from ductile.adapters.http.signing import signature_matches
from ductile.domain.config import Endpoint
from ductile.log import Log

log = Log("http", logger=logging.getLogger("ductile.http"))

HEALTH_PATH = "/healthz"


BAD_REQUEST = {"error": "bad request"}
FORBIDDEN = {"error": "forbidden"}
NOT_JSON = {"error": "body is not valid JSON"}
NOT_QUEUED = {"error": "could not queue the delivery; try again"}


@attrs.frozen(kw_only=True)
class WebhookDelivery:
    """A verified webhook request, handed to the app to become a ``handle`` job."""

    endpoint: Endpoint
    #: The parsed JSON body: any JSON value, shape preserved.
    payload: Any
    #: Lower-cased names; repeated headers joined with ", "; without
    #: :data:`PRIVATE_HEADERS`.
    headers: dict[str, str]
    #: The value of ``endpoint.dedupe_header`` when configured and non-empty.
    dedupe_key: str | None


#: Durably enqueues the delivery; returns the job id (new, or the existing duplicate's).
Submit = Callable[[WebhookDelivery], Awaitable[str]]
#: The /healthz document.
Health = Callable[[], Awaitable[dict[str, Any]]]


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


async def _respond(
    send: Send,
    status: int,
    document: Any,
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
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


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class _Dispatch:
    """The one ASGI handler behind the catch-all route."""

    def __init__(
        self,
        endpoints: Callable[[], Sequence[Endpoint]],
        submit: Submit,
        health: Health,
        body_timeout: float,
    ) -> None:
        self._endpoints = endpoints
        self._submit = submit
        self._health = health
        self._body_timeout = body_timeout

    def _find(self, path: str) -> Endpoint | None:
        for endpoint in self._endpoints():
            if endpoint.path == path:
                return endpoint
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets are switched off in the server
            return
        # A snapshot: uvicorn's own httptools protocol (an embedder's server) appends a chunked
        # body's trailer fields to this very list as they arrive; ours drops them.
        raw = list(scope["headers"])
        path: str = scope["path"]
        # Mounted in a host application (Starlette's Mount): endpoints are
        # configured relative to where we are mounted.
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method: str = scope["method"]
        try:
            framing = check_head(raw, scope.get("http_version", "1.1"))
        except BadRequestError as exc:
            log.warning(f"request refused: {exc}", path=path[:200], client=_client(scope))
            await _respond(send, 400, BAD_REQUEST, close=True)
            return
        # An answer sent now closes the connection if it would leave body bytes unread, and after
        # CONNECT or an upgrade request, which make httptools stop parsing the connection (it
        # would ignore a next request there; h11 would serve it).
        close = framing.body_pending or framing.upgrade or method == "CONNECT"

        if path == HEALTH_PATH:
            await self._healthz(method, send, close=close)
            return
        endpoint = self._find(path)
        if endpoint is None:
            await _respond(send, 404, {"error": "not found"}, close=close)
            return
        if method != "POST":
            await _respond(
                send, 405, {"error": "method not allowed"}, close=close, extra=[(b"allow", b"POST")]
            )
            return
        await self._webhook(endpoint, scope, receive, send, raw=raw, framing=framing)

    async def _healthz(self, method: str, send: Send, *, close: bool) -> None:
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, {"error": "method not allowed"}, close=close, extra=[(b"allow", b"GET, HEAD")]
            )
            return
        try:
            document = await self._health()
            await _respond(send, 200, document, close=close)
        except Exception:
            log.exception("the health check failed")
            await _respond(send, 503, {"status": "error"}, close=close)

    @staticmethod
    def _refused(why: str, endpoint: Endpoint, fields: dict[str, Any], **more: Any) -> None:
        log.warning(f"webhook refused: {why}", plugin=endpoint.plugin, **fields, **more)

    async def _webhook(
        self,
        endpoint: Endpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        raw: list[tuple[bytes, bytes]],
        framing: Framing,
    ) -> None:
        fields: dict[str, Any] = {"path": endpoint.path, "client": _client(scope)}
        declared = framing.length
        if declared is not None and declared > endpoint.max_body_size:
            self._refused(
                "body over max_body_size (declared)",
                endpoint,
                fields,
                declared=declared,
                max_body_size=endpoint.max_body_size,
            )
            await _respond(send, 413, {"error": "body too large"}, close=True)
            return
        try:
            async with asyncio.timeout(self._body_timeout):
                body = await _read_body(receive, endpoint.max_body_size)
        except TimeoutError:
            self._refused("request body not received in time", endpoint, fields, timeout=self._body_timeout)
            await _respond(send, 408, {"error": "request body timed out"}, close=True)
            return
        except _TooLargeError:
            self._refused(
                "body over max_body_size (streamed)", endpoint, fields, max_body_size=endpoint.max_body_size
            )
            await _respond(send, 413, {"error": "body too large"}, close=True)
            return
        except _DisconnectedError:
            return

        signatures = header_values(raw, endpoint.signature_header)
        given = signatures[0] if len(signatures) == 1 else None
        if not signature_matches(endpoint.secret, body, given):
            self._refused("bad or missing signature", endpoint, fields)
            await _respond(send, 403, FORBIDDEN, close=framing.upgrade)
            return
        try:
            payload = await parse_payload(body)
        except NotJsonError:
            await _respond(send, 400, NOT_JSON, close=framing.upgrade)
            return

        delivery = WebhookDelivery(
            endpoint=endpoint,
            payload=payload,
            headers=delivery_headers(raw),
            dedupe_key=dedupe_key(raw, endpoint.dedupe_header),
        )
        try:
            job_id = await self._submit(delivery)
        except Exception:
            log.exception("could not queue a webhook delivery", plugin=endpoint.plugin, path=endpoint.path)
            await _respond(send, 503, NOT_QUEUED, close=framing.upgrade)
            return
        await _respond(send, 202, {"job_id": job_id}, close=framing.upgrade)


def build_app(
    *,
    endpoints: Callable[[], Sequence[Endpoint]],
    submit: Submit,
    health: Health,
    body_timeout: float = 10.0,
) -> Starlette:
    """The ASGI app: ``POST <endpoint.path>`` webhooks and ``GET /healthz``.

    ``endpoints`` is called on every request, so a reload takes effect
    without restarting the server. ``body_timeout`` is the deadline, in
    seconds, for receiving a whole request body.
    """
    dispatch = _Dispatch(endpoints, submit, health, body_timeout)
    return Starlette(routes=[Route("/{path:path}", dispatch)])
