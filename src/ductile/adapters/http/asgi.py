"""The ASGI contract, as far as this adapter uses it, and what its layers add to a scope.

The app is a stack of small ASGI wrappers (see :mod:`ductile.adapters.http.app`),
each doing one check and calling the one inside it. A wrapper hands what it
found to the layers inside it in the request's scope, under a key of its own,
the way ASGI middleware shares what it learnt (Starlette's ``scope["user"]``);
each key below is set by one wrapper and only read by the layers it wraps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: An ASGI connection scope; its values are whatever the server and the layers above put there.
Scope = MutableMapping[str, Any]
#: An ASGI event, received or sent.
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A request's header list as ASGI hands it over: (name, value) byte pairs.
Headers = list[tuple[bytes, bytes]]

#: ``str``, set by the outermost layer: the path to route on, below the mount point (``root_path``).
ROUTE_PATH = "ductile.route_path"
#: ``Headers``, set by the framing check: a snapshot of the request's header list.
HEADERS = "ductile.headers"
#: ``Framing``, set by the framing check: how the body is delimited.
FRAMING = "ductile.framing"
#: ``Endpoint``, set by the router: the webhook endpoint the path names.
ENDPOINT = "ductile.endpoint"
#: ``bytes``, set by the body limit: the whole request body, read within its limits.
BODY = "ductile.body"
