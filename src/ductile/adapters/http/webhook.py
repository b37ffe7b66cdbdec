"""The webhook route: signature, then JSON, then ``submit`` (D11, ADR 0015).

By the time a request gets here, the layers around it (see
:mod:`ductile.adapters.http.app`) have accepted its head, matched an
endpoint and a ``POST``, and read its body within the limits. What is left:

1. HMAC-SHA256 of the raw body, compared in constant time (403, the same
   answer for every cause; an endpoint with an empty secret accepts nothing);
2. the body must be one strict JSON document (400), or a URL-encoded form
   whose ``payload`` field is one (GitHub's default content type; the
   signature is over the raw form body, as GitHub signs it);
3. ``submit`` durably enqueues it -> 202 ``{"job_id": ...}``; if it raises ->
   503 (the body never carries a traceback). Refusals are logged as an episode
   (:class:`~ductile.log.Episode`): the first one, then, at the next 202, how
   many there were; a fault of the store (a full disk, a held lock) in its one
   line, anything else with its traceback.

The body has been read to its end, so these answers keep the connection
open, except after an upgrade request (httptools stops parsing there).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ductile.adapters.http.answers import log, refuse, respond
from ductile.adapters.http.asgi import BODY, ENDPOINT, FRAMING, HEADERS, Headers, Receive, Scope, Send
from ductile.adapters.http.headers import dedupe_key, delivery_headers, single_value
from ductile.adapters.http.jsonbody import NotJsonError, parse_body
from ductile.adapters.http.signing import signature_matches
from ductile.domain.config import Endpoint
from ductile.log import Episode
from ductile.ports.store_faults import StoreFaultError

FORBIDDEN = {"error": "forbidden"}
NOT_JSON = {"error": "body is not valid JSON"}
NOT_QUEUED = {"error": "could not queue the delivery; try again"}


@attrs.frozen(kw_only=True)
class WebhookDelivery:
    """A verified webhook request, handed to the app to become a ``handle`` job."""

    endpoint: Endpoint
    #: The parsed JSON body: any JSON value, shape preserved.
    payload: Any
    #: Lower-cased names; repeated headers joined with ", "; credentials masked
    #: (:func:`~ductile.adapters.http.headers.delivery_headers`).
    headers: dict[str, str]
    #: The value of ``endpoint.dedupe_header`` when configured and non-empty.
    dedupe_key: str | None


#: Durably enqueues the delivery; returns the job id (new, or the existing duplicate's).
Submit = Callable[[WebhookDelivery], Awaitable[str]]


class WebhookRoute:
    """The ASGI app of every webhook endpoint: signature -> JSON -> ``submit``."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._refusals = Episode(log, "queueing a webhook delivery (answered 503)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: Endpoint = scope[ENDPOINT]
        headers: Headers = scope[HEADERS]
        body: bytes = scope[BODY]
        close: bool = scope[FRAMING].upgrade
        if not signature_matches(endpoint.secret, body, single_value(headers, endpoint.signature_header)):
            await refuse(scope, send, 403, FORBIDDEN, "bad or missing signature", close=close)
            return
        try:
            payload = await parse_body(body, single_value(headers, "content-type"))
        except NotJsonError as exc:
            await refuse(scope, send, 400, NOT_JSON, f"body is not JSON: {exc}", close=close)
            return
        delivery = WebhookDelivery(
            endpoint=endpoint,
            payload=payload,
            headers=delivery_headers(headers),
            dedupe_key=dedupe_key(headers, endpoint.dedupe_header),
        )
        try:
            job_id = await self._submit(delivery)
        except Exception as e:
            fault = isinstance(e, StoreFaultError)
            self._refusals.failed(  # a store fault: its error line is the store's own
                e,
                level=logging.WARNING if fault else logging.ERROR,
                traceback=not fault,
                plugin=endpoint.plugin,
                path=endpoint.path,
            )
            await respond(send, 503, NOT_QUEUED, close=close)
            return
        self._refusals.ended()
        await respond(send, 202, {"job_id": job_id}, close=close)
