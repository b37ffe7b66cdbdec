"""Which HTTP/1.1 parser uvicorn runs (ADR 0017), and the bounds we add to httptools.

httptools (C, llhttp) when it can be imported, else uvicorn's pure-Python h11,
which costs about twice the CPU per request. With httptools we run uvicorn's
protocol with two changes that give it h11's bounds
(:func:`bounded_httptools_protocol`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from typing import Literal, get_args

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

    See :class:`~ductile.adapters.http.bounded_httptools.BoundedHttpToolsProtocol`;
    imported here, on demand, because it needs httptools.
    """
    from ductile.adapters.http.bounded_httptools import BoundedHttpToolsProtocol  # noqa: PLC0415

    return BoundedHttpToolsProtocol
