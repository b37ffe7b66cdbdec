"""Signed webhooks (SPEC D11) and ``/healthz`` (D20) over HTTP.

Two pieces:

- :func:`build_app` returns the Starlette (ASGI) application. Every request
  goes through one catch-all route so that the endpoint table can change on a
  config reload (``endpoints`` is called per request) and so that every answer,
  404 and 405 included, is the same small JSON document.
- :class:`HttpServer` runs uvicorn *inside the caller's event loop*: it binds
  its own socket first (so a busy port is a :class:`ListenError`, never
  uvicorn's ``sys.exit``), never installs signal handlers (the daemon owns
  SIGTERM/SIGINT/SIGHUP), and stops gracefully and idempotently.

A request is answered in this order, each step before the next:

1. the head (400, for every path): :func:`check_head` refuses what the two
   HTTP parsers do not agree on (Content-Length with Transfer-Encoding, a
   coding other than ``chunked``, a repeated Content-Length, control
   characters in a value, a missing Host, an upgrade carrying a body);
2. path (404; ``/healthz`` is always the health check, even if an endpoint
   claims it) and method (405);
3. a declared length over the endpoint's ``max_body_size`` is refused at
   once (413, body not read);
4. the body is read chunk by chunk, counting, under one deadline of
   ``body_timeout`` seconds for the whole body: over the limit -> 413 as soon
   as the count passes it; too slow or short of its Content-Length -> 408;
5. HMAC-SHA256 of the raw body, compared in constant time (403, no detail;
   an endpoint with an empty secret accepts nothing);
6. the body must be JSON (400);
7. ``submit`` durably enqueues it -> 202 ``{"job_id": ...}``; if it raises ->
   503 (logged; the body never carries a traceback).

Answers sent before the body was read to its end carry ``Connection: close``:
otherwise uvicorn would go on reading (and discarding) whatever the client
still sends on the kept-alive connection, without bound.

The HTTP/1.1 parser is selectable (ADR 0017): httptools (C, llhttp) when it
can be imported, else uvicorn's pure-Python h11, which costs about twice the
CPU per request. The answers above do not depend on it, with the exceptions
the ADR lists (malformed framing that one parser refuses with 400 and the
other with 408, or serves). With httptools we run uvicorn's protocol with two
changes that give it h11's bounds (:func:`bounded_httptools_protocol`). Slow
clients that dribble their *headers* (slowloris) are cut off by neither
parser; the concurrency limit bounds how many they can hold, and a reverse
proxy is the place to deal with them.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import hashlib
import hmac
import importlib
import json
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, Literal, get_args

import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ductile.domain.config import Endpoint
from ductile.domain.errors import DuctileError

log = logging.getLogger("ductile.http")

HEALTH_PATH = "/healthz"
#: Request headers never handed to a plugin.
PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
SIGNATURE_PREFIX = b"sha256="
#: Bodies larger than this are parsed in a worker thread (see :func:`_parse_payload`).
INLINE_PARSE_LIMIT = 64 * 1024
#: The most bytes of an incomplete request head (or chunk-size line, or trailer) buffered
#: before the request is refused with 400: h11's default, applied to httptools too.
MAX_HEAD_SIZE = 16 * 1024
#: Python's own default limit on int <-> str conversion (3.11); enforced here
#: whatever the interpreter is configured with, since int() is quadratic.
MAX_INT_DIGITS = 4300

BAD_REQUEST = {"error": "bad request"}
FORBIDDEN = {"error": "forbidden"}
NOT_JSON = {"error": "body is not valid JSON"}
NOT_QUEUED = {"error": "could not queue the delivery; try again"}


class ListenError(DuctileError):
    """The HTTP listener could not bind its address."""


class NotJsonError(ValueError):
    """A request body is not a single valid JSON document."""


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


# --------------------------------------------------------------------- pure helpers


def sign(secret: str, body: bytes) -> str:
    """The header value a sender puts on ``body``: ``sha256=<lowercase hex>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def parse_signature(value: bytes) -> bytes | None:
    """The 32 digest bytes of a ``sha256=<hex>`` or bare ``<hex>`` value, or None.

    Hex is case-insensitive; anything else (wrong length, non-hex, non-ASCII
    bytes) is None, never an exception.
    """
    text = value.strip(b" \t")
    if text[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        text = text[len(SIGNATURE_PREFIX) :]
    if len(text) != 2 * hashlib.sha256().digest_size:
        return None
    try:
        return binascii.a2b_hex(text)
    except (binascii.Error, ValueError):
        return None


def signature_matches(secret: str, body: bytes, header_value: bytes | None) -> bool:
    """Whether ``header_value`` is the HMAC-SHA256 of ``body`` under ``secret``.

    Constant-time over the digest bytes. An empty secret never matches: a
    config that slipped one through fails closed.
    """
    if not secret or header_value is None:
        return False
    given = parse_signature(header_value)
    if given is None:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, given)


def header_values(raw: Iterable[tuple[bytes, bytes]], name: str) -> list[bytes]:
    """Every value of header ``name`` (case-insensitive), in order."""
    wanted = name.lower().encode("latin-1")
    return [value for key, value in raw if key.lower() == wanted]


def delivery_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers for the plugin: lower-cased names, repeats joined with
    ", ", latin-1 decoded (HTTP's byte-transparent reading), private ones dropped."""
    out: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        if name in PRIVATE_HEADERS:
            continue
        text = value.decode("latin-1")
        out[name] = f"{out[name]}, {text}" if name in out else text
    return out


def dedupe_key(raw: Iterable[tuple[bytes, bytes]], header: str | None) -> str | None:
    """The dedupe key carried by ``header``; None when unset, absent or blank."""
    if not header:
        return None
    values = header_values(raw, header)
    key = ", ".join(v.decode("latin-1") for v in values).strip()
    return key or None


#: A JSON escape of a UTF-16 surrogate (raw UTF-8 cannot carry one: strict decoding refuses it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("integer too long")
    return int(text)


def parse_json(body: bytes) -> Any:
    """Parse a request body as one strict JSON document.

    Strict UTF-8 (no UTF-16/32 guessing, no BOM); ``NaN``/``Infinity`` and
    floats that overflow to infinity are refused, as are integers longer than
    :data:`MAX_INT_DIGITS` digits and nesting deep enough to hit the recursion
    limit. Strings must be valid Unicode (I-JSON, RFC 7493): a lone surrogate
    escape such as ``"\\ud800"`` parses in Python but can never be encoded as
    UTF-8 again, so the store and the plugin request would fail on it later,
    and the sender's retries with it. Every refusal is a :class:`NotJsonError`.
    """
    try:
        text = body.decode("utf-8")
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
        if _SURROGATE_ESCAPE.search(body):  # only then can a parsed string hold a surrogate
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError if one is lone
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotJsonError(str(exc)[:200]) from exc
    return value


class BadRequestError(ValueError):
    """A request head refused with 400, whichever HTTP parser let it through (ADR 0017)."""


@attrs.frozen
class Framing:
    """How a request's body is delimited, once :func:`check_head` accepted its head."""

    #: The Content-Length; None when absent.
    length: int | None
    #: Transfer-Encoding: chunked.
    chunked: bool
    #: The request asks to switch protocols (Upgrade with Connection: upgrade). We switch to
    #: nothing, but httptools stops parsing the connection after such a request.
    upgrade: bool = False

    @property
    def body_pending(self) -> bool:
        """Whether an answer sent before reading would leave body bytes unread."""
        return self.chunked or bool(self.length)


#: Control characters that may not appear in a header value (RFC 9110 5.5; HTAB may).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _length(values: Sequence[bytes]) -> int | None:
    if not values:
        return None
    if len(values) != 1:
        # Even identical copies: h11 merges them, httptools refuses them; we refuse under both.
        raise BadRequestError("more than one Content-Length header")
    text = values[0].strip(b" \t")
    if not text.isdigit() or len(text) > MAX_INT_DIGITS:  # isdigit of bytes is ASCII only
        raise BadRequestError("malformed Content-Length")
    return int(text)


def declared_length(raw: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length; None when absent.

    Raises :class:`BadRequestError` (a ValueError) unless there is exactly one
    value of ASCII digits (spaces around it allowed): a list, a repeat, a sign
    or hex is refused.
    """
    return _length(header_values(raw, "content-length"))


def check_head(raw: Iterable[tuple[bytes, bytes]], http_version: str = "1.1") -> Framing:
    """The framing of a request head, or :class:`BadRequestError` saying why it is refused.

    uvicorn's two parsers disagree on what they let through (ADR 0017); this
    is the common line both must pass, so that an answer never depends on the
    parser: Content-Length together with Transfer-Encoding (request
    smuggling, RFC 9112 6.1); a Transfer-Encoding other than a single
    ``chunked``; a repeated or malformed Content-Length; an HTTP/1.1 request
    without exactly one Host (RFC 9112 3.2); a control character in a header
    value; and a request asking to switch protocols that carries a body
    (httptools would not hand that body over).
    """
    lengths: list[bytes] = []
    codings: list[bytes] = []
    hosts = 0
    upgrade = connection_upgrade = False
    for key, value in raw:
        name = key.lower()
        if _CONTROL.search(value):
            raise BadRequestError(f"a control character in header {name[:40].decode('latin-1')!r}")
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value)
        elif name == b"host":
            hosts += 1
        elif name == b"upgrade":
            upgrade = True
        elif name == b"connection":
            connection_upgrade |= b"upgrade" in (token.strip(b" \t").lower() for token in value.split(b","))
    if lengths and codings:
        raise BadRequestError("both Content-Length and Transfer-Encoding")
    if codings and [c.strip(b" \t").lower() for c in codings] != [b"chunked"]:
        raise BadRequestError("a Transfer-Encoding other than chunked")
    length = _length(lengths)
    if http_version == "1.1" and hosts != 1:
        raise BadRequestError("an HTTP/1.1 request without exactly one Host header")
    if upgrade and connection_upgrade and (codings or length):
        raise BadRequestError("a protocol upgrade request with a body")
    return Framing(length=length, chunked=bool(codings), upgrade=upgrade and connection_upgrade)


# --------------------------------------------------------------------- the ASGI app


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


async def _parse_payload(body: bytes) -> Any:
    """Parse the body; bodies over :data:`INLINE_PARSE_LIMIT` in a worker thread.

    Measured here (3.11, busy 2-core machine), 1.5 MB bodies: 90k ints parse in
    0.2-0.35 s; in a thread the loop's longest stall fell to ~24 ms, because
    our ``parse_int``/``parse_float`` callbacks are Python code where the GIL
    changes hands (they cost ~7 %). 90k *strings* stalled the loop ~0.2 s
    either way: the C scanner holds the GIL throughout, so a thread cannot
    help there. Either way the stall is bounded by ``max_body_size`` (1 MiB by
    default). Small bodies, the common case, parse in well under a
    millisecond, inline, without the thread hand-off.
    """
    if len(body) <= INLINE_PARSE_LIMIT:
        return parse_json(body)
    return await asyncio.to_thread(parse_json, body)


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
            log.warning(
                f"request refused: {exc}",
                extra={"component": "http", "fields": {"path": path[:200], "client": _client(scope)}},
            )
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
            log.exception("the health check failed", extra={"component": "http"})
            await _respond(send, 503, {"status": "error"}, close=close)

    @staticmethod
    def _refused(why: str, endpoint: Endpoint, fields: dict[str, Any], **more: Any) -> None:
        log.warning(
            f"webhook refused: {why}",
            extra={"component": "http", "plugin": endpoint.plugin, "fields": {**fields, **more}},
        )

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
            payload = await _parse_payload(body)
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
            log.exception(
                "could not queue a webhook delivery",
                extra={"component": "http", "plugin": endpoint.plugin, "fields": {"path": endpoint.path}},
            )
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


# --------------------------------------------------------------------- the server

#: uvicorn's HTTP/1.1 implementations that we allow.
ConcreteParser = Literal["h11", "httptools"]
#: What a caller may ask for: "auto" is httptools when it can be imported, else h11.
HttpParser = Literal["auto", "h11", "httptools"]
PARSERS: tuple[str, ...] = get_args(HttpParser)


@functools.cache
def httptools_available() -> bool:
    """Whether ``import httptools`` works here (a C extension: it may be missing or broken)."""
    try:
        importlib.import_module("httptools")
    except ImportError:
        return False
    return True


def resolve_parser(requested: str, *, httptools_importable: bool | None = None) -> ConcreteParser:
    """The parser to run for ``requested`` (ADR 0017).

    "auto" is httptools when it can be imported (about twice the throughput
    of h11's pure-Python parser), else h11, so a platform without a wheel
    still works. Asking for httptools explicitly when it cannot be imported,
    or for a parser we do not know, is a :class:`ValueError` naming the value.
    """
    available = httptools_available() if httptools_importable is None else httptools_importable
    if requested == "auto":
        return "httptools" if available else "h11"
    if requested == "h11":
        return "h11"
    if requested == "httptools":
        if not available:
            raise ValueError(
                "HTTP parser 'httptools' was requested but the httptools module cannot be imported"
            )
        return "httptools"
    raise ValueError(f"unknown HTTP parser {requested!r}; expected one of {', '.join(PARSERS)}")


@functools.cache
def bounded_httptools_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, bounded like h11 in what it buffers outside bodies.

    httptools gathers a header field (and uvicorn the request target) in
    Python bytes that grow by concatenation, without any limit: measured here,
    one 60 MiB header cost the server 120 MiB of memory and 6 s of CPU (the
    copying is quadratic), where h11 refuses at 16 KiB. h11's rule: once a
    socket read leaves an event incomplete (a head, a chunk-size line, a
    trailer) with more than ``max_incomplete_event_size`` bytes buffered, the
    request is refused with 400. This class applies the same rule with
    :data:`MAX_HEAD_SIZE`, counting the bytes of consecutive reads in which
    the parser made no progress (no end of head, no body bytes, no end of
    message). So a head may still arrive whole in one read of up to 256 KiB
    (asyncio's read size), as under h11; anything slower is refused past
    16 KiB, and a parser's buffer never holds more than that plus two reads.

    It also drops a chunked body's trailer fields, as h11 does: uvicorn's
    httptools protocol appends them to the request's headers, where they
    would reach the signature check, the dedupe key and the plugin.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415 - needs httptools

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        #: Bytes received in consecutive reads during which the parser made no progress.
        _stalled_bytes = 0
        #: Parser progress events so far (end of head, body bytes, end of message).
        _progress = 0
        #: The head is complete: further header fields are a trailer.
        _in_body = False

        def data_received(self, data: bytes) -> None:
            before = self._progress
            super().data_received(data)
            if self._progress != before:
                self._stalled_bytes = 0
                return
            self._stalled_bytes += len(data)
            if self._stalled_bytes > MAX_HEAD_SIZE and not self.transport.is_closing():
                self.logger.warning("Request head or chunk framing over %d bytes.", MAX_HEAD_SIZE)
                self.send_400_response("Invalid HTTP request received.")

        def on_message_begin(self) -> None:
            self._in_body = False
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._in_body:  # a chunked body's trailer field: h11 drops them, so do we
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._progress += 1
            self._in_body = True
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._progress += 1
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._progress += 1
            super().on_message_complete()

    return BoundedHttpToolsProtocol


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling, reporting when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.accepting = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns the process's signals; uvicorn's handlers would
        # swallow SIGTERM and re-raise it after its own shutdown.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.accepting.set()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


async def _listen(host: str, port: int, backlog: int) -> socket.socket:
    where = _where(host, port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {where}: {_reason(exc)}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {where}: {_reason(exc)}") from exc
    return sock


def _report_unexpected_end(server: _EmbeddedServer, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None or not server.should_exit:
        log.error("the HTTP listener stopped unexpectedly", exc_info=exc, extra={"component": "http"})


class HttpServer:
    """uvicorn serving ``app`` on ``host:port`` inside the running event loop.

    ``port`` 0 picks a free port (read it back from :attr:`port`).
    ``limit_concurrency`` caps open connections (beyond it uvicorn answers
    503); ``graceful_timeout`` bounds how long :meth:`stop` waits for requests
    in flight before cancelling them. ``parser`` picks uvicorn's HTTP/1.1
    parser: "auto" (the default, the daemon's) is httptools when it can be
    imported, else h11; naming httptools when it cannot be imported is a
    ValueError here, not a failure at :meth:`start`.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        limit_concurrency: int = 128,
        graceful_timeout: int = 5,
        backlog: int = 128,
        parser: HttpParser = "auto",
    ) -> None:
        self._parser = resolve_parser(parser)
        self._app = app
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._limit_concurrency = limit_concurrency
        self._graceful_timeout = graceful_timeout
        self._backlog = backlog
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def address(self) -> str:
        return _where(self._host, self.port)

    @property
    def parser(self) -> ConcreteParser:
        """The HTTP/1.1 parser uvicorn uses ("auto" resolved at construction)."""
        return self._parser

    async def start(self) -> None:
        """Bind, start serving in a task, return once connections are accepted."""
        if self._task is not None:
            raise RuntimeError("HttpServer.start() called while running")
        config = uvicorn.Config(
            self._app,
            http=bounded_httptools_protocol() if self._parser == "httptools" else "h11",
            h11_max_incomplete_event_size=MAX_HEAD_SIZE,
            ws="none",
            lifespan="off",
            log_config=None,  # the daemon configures logging, uvicorn must not
            access_log=False,
            server_header=False,
            date_header=True,
            proxy_headers=False,
            limit_concurrency=self._limit_concurrency,
            timeout_graceful_shutdown=self._graceful_timeout,
            backlog=self._backlog,
        )
        config.load()
        sock = await _listen(self._host, self._requested_port, self._backlog)
        port: int = sock.getsockname()[1]
        where = _where(self._host, port)
        server = _EmbeddedServer(config)
        task = asyncio.create_task(self._serve(server, sock, where), name=f"ductile-http {where}")
        accepting = asyncio.ensure_future(server.accepting.wait())
        try:
            await asyncio.wait({task, accepting}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            server.should_exit = True
            task.cancel()
            sock.close()
            raise
        finally:
            accepting.cancel()
        if not server.accepting.is_set():
            sock.close()
            cause = None if task.cancelled() else task.exception()
            raise ListenError(f"cannot listen on {where}: the server did not start ({cause})") from cause
        self._server, self._task, self._bound_port = server, task, port
        task.add_done_callback(functools.partial(_report_unexpected_end, server))
        log.info(
            "listening", extra={"component": "http", "fields": {"address": where, "parser": self._parser}}
        )

    @staticmethod
    async def _serve(server: _EmbeddedServer, sock: socket.socket, where: str) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn's reaction to a startup failure
            raise ListenError(f"cannot listen on {where}: uvicorn exited ({exc.code})") from None
        finally:
            sock.close()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close.

        Idempotent; concurrent callers all wait for the same shutdown.
        """
        if self._task is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._stopping)

    async def _shutdown(self) -> None:
        server, task = self._server, self._task
        assert server is not None
        assert task is not None
        server.should_exit = True
        try:
            await task
        except Exception:
            log.exception("the HTTP listener failed while stopping", extra={"component": "http"})
        finally:
            self._server = None
            self._task = None
            self._stopping = None
            log.info("stopped listening", extra={"component": "http"})
