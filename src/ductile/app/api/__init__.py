"""The operator HTTP API (issue 14): bearer tokens with scopes, jobs, plugins, reload,
Server-Sent Events and Prometheus metrics, on a listener of its own (loopback by default).

Starlette serves it (ADR 0023): many routes, requests, a streaming response;
the handlers call the app's service functions (:mod:`ductile.app.operations`,
the one intake path), never the store's internals. The modules: ``app`` (the
application and the guard), ``routes`` (the route table and the OpenAPI
document built from it), ``auth`` (tokens), ``body`` (reading input),
``errors`` (answers), one module per group of routes (``jobs``, ``plugins``,
``system``, ``events``, ``metrics``) and ``context`` (what handlers reach).
"""

from ductile.app.api.app import build_api
from ductile.app.api.context import ApiContext
from ductile.app.api.metrics import Metrics
from ductile.app.api.routes import OPS, openapi

__all__ = ["OPS", "ApiContext", "Metrics", "build_api", "openapi"]
