"""The request head both HTTP parsers must agree on (ADR 0017), and how its body is framed.

uvicorn's two parsers (httptools and h11) let different heads through;
:func:`check_head` is the common line, so that no answer depends on the
parser. :class:`FramingCheck` applies it to every request, before routing:
what it refuses is answered 400 with ``Connection: close``, on every path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from ductile.adapters.http.answers import client, refusals, respond
from ductile.adapters.http.asgi import FRAMING, HEADERS, ROUTE_PATH, ASGIApp, Receive, Scope, Send
from ductile.adapters.http.headers import header_values
from ductile.adapters.http.jsonbody import MAX_INT_DIGITS

BAD_REQUEST = {"error": "bad request"}


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


def closes_early(scope: Scope) -> bool:
    """Whether an answer sent now, before the body is read, closes the connection.

    It does if it would leave body bytes unread, and after CONNECT or an
    upgrade request, which make httptools stop parsing the connection (it
    would ignore a next request there; h11 would serve it).
    """
    framing: Framing = scope[FRAMING]
    return framing.body_pending or framing.upgrade or scope["method"] == "CONNECT"


class FramingCheck:
    """ASGI middleware: a head :func:`check_head` refuses is answered 400, on every path.

    The layers inside find the header snapshot and the :class:`Framing` in the
    scope (:data:`~ductile.adapters.http.asgi.HEADERS`,
    :data:`~ductile.adapters.http.asgi.FRAMING`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A snapshot: uvicorn's own httptools protocol (an embedder's server) appends a chunked
        # body's trailer fields to this very list as they arrive; ours drops them.
        headers = list(scope["headers"])
        try:
            framing = check_head(headers, scope.get("http_version", "1.1"))
        except BadRequestError as exc:
            path: str = scope[ROUTE_PATH]
            refusals(400, f"request refused: {exc}", target=path[:200], client=client(scope))
            await respond(send, 400, BAD_REQUEST, close=True)
            return
        scope[HEADERS] = headers
        scope[FRAMING] = framing
        await self._app(scope, receive, send)
