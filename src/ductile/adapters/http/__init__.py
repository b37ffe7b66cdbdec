"""Signed webhooks (SPEC D11) and ``/healthz`` (D20) over HTTP.

Two pieces:

- :func:`build_app` returns the ASGI application: small wrappers, each doing
  one check before the next (ADR 0018). The endpoint table can change on a
  config reload (``endpoints`` is called per request), and every answer of
  ours, 404 and 405 included, is the same small JSON document.
- :class:`HttpServer` runs uvicorn *inside the caller's event loop*, on a
  socket it binds itself, without signal handlers.

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

The HTTP/1.1 parser is selectable (ADR 0017): httptools when it can be
imported, else h11. The answers above do not depend on it, with the
exceptions the ADR lists (malformed framing that one parser refuses with 400
and the other with 408, or serves).

The modules, in the order a request meets them: ``app`` (the stack and the
router), ``framing`` (step 1), ``health``, ``limits`` (steps 3-4),
``webhook`` (steps 5-7), with ``signing``, ``jsonbody`` and ``headers`` as
its pure helpers and ``answers`` for what every step sends and logs;
``asgi`` holds the ASGI types and the scope keys the layers share. The
server side: ``server`` and ``parsers``, with ``bounded_httptools`` (the
httptools protocol, bounded like h11), ``connections`` (the connection guard)
and ``coalesce`` (a connection's writes of one loop iteration in one write).
"""

from ductile.adapters.http.app import build_app
from ductile.adapters.http.asgi import ASGIApp
from ductile.adapters.http.framing import BadRequestError, Framing, check_head, declared_length
from ductile.adapters.http.headers import (
    MAX_HEAD_SIZE,
    dedupe_key,
    delivery_headers,
    header_values,
)
from ductile.adapters.http.health import HEALTH_PATH, Health
from ductile.adapters.http.jsonbody import MAX_INT_DIGITS, NotJsonError, parse_json
from ductile.adapters.http.parsers import (
    PARSERS,
    ConcreteParser,
    HttpParser,
    bounded_httptools_protocol,
    httptools_available,
    resolve_parser,
)
from ductile.adapters.http.server import HttpServer, ListenError
from ductile.adapters.http.signing import parse_signature, sign, signature_matches
from ductile.adapters.http.webhook import Submit, WebhookDelivery

__all__ = [
    "HEALTH_PATH",
    "MAX_HEAD_SIZE",
    "MAX_INT_DIGITS",
    "PARSERS",
    "ASGIApp",
    "BadRequestError",
    "ConcreteParser",
    "Framing",
    "Health",
    "HttpParser",
    "HttpServer",
    "ListenError",
    "NotJsonError",
    "Submit",
    "WebhookDelivery",
    "bounded_httptools_protocol",
    "build_app",
    "check_head",
    "declared_length",
    "dedupe_key",
    "delivery_headers",
    "header_values",
    "httptools_available",
    "parse_json",
    "parse_signature",
    "resolve_parser",
    "sign",
    "signature_matches",
]
