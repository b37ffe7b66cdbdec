#!/usr/bin/env python3
"""builtin:fetch — GET one URL within a size cap and a time cap; emit what came back.

``poll`` (or ``handle``) sends a GET to ``url`` (``http://`` or ``https://``
only, a redirect too) and reads at most ``max_bytes`` of the answer, within
``timeout`` seconds for the whole exchange: a huge or endless body is cut,
never read to its end. It emits ``fetch.completed`` with the status, the
headers, the body as text (UTF-8, undecodable bytes replaced), whether it was
cut, and the sha256 of the bytes read. With ``changed_only`` the digest is
kept in state and nothing is emitted while it stays the same.

A 5xx, 408 or 429 answer, a timeout or a refused connection is a retryable
failure; any other 4xx is one not retried. Standard library only.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.client import HTTPMessage
from typing import IO, Any

from ductile import plugin

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 1024 * 1024
CHUNK = 64 * 1024
SCHEMES = ("http", "https")


class Settings:
    """The plugin's config, checked (a wrong value is a ConfigError: not retried)."""

    def __init__(self, request: plugin.Request) -> None:
        self.url = request.config_str("url")
        if urllib.parse.urlsplit(self.url).scheme.lower() not in SCHEMES:
            raise plugin.ConfigError(f"url must be an http:// or https:// URL, got {redacted(self.url)!r}")
        self.timeout = request.config_float("timeout", DEFAULT_TIMEOUT)
        if self.timeout <= 0:
            raise plugin.ConfigError(f"timeout must be more than 0 seconds, got {self.timeout}")
        self.max_bytes = request.config_int("max_bytes", DEFAULT_MAX_BYTES)
        if self.max_bytes < 1:
            raise plugin.ConfigError(f"max_bytes must be at least 1, got {self.max_bytes}")
        self.changed_only = request.config_bool("changed_only", False)
        headers = request.config.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise plugin.ConfigError("headers must be a mapping of header names to text values")
        self.headers = dict(headers)


def redacted(url: str) -> str:
    """``url`` without its query string and credentials (a token may be in either)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another http(s) URL (never ftp:, file:, ...)."""

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise plugin.Fail(
                f"{redacted(req.full_url)} redirects to a non-http(s) URL (refused)", retry=False
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def read_capped(answer: IO[bytes], max_bytes: int, deadline: float, where: str) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of ``answer`` (and whether there was more), before ``deadline``."""
    parts: list[bytes] = []
    size = 0
    read1 = getattr(answer, "read1", answer.read)
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise plugin.Fail(f"GET {where}: the body took longer than the timeout")
        # read1: what has arrived (one receive at most), so a trickle cannot hold a read past the deadline.
        chunk = read1(min(CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    body = b"".join(parts)
    return body[:max_bytes], len(body) > max_bytes


def get(settings: Settings) -> dict[str, Any]:
    """One GET; the payload of ``fetch.completed``. Failures raise :class:`plugin.Fail`."""
    where = redacted(settings.url)
    headers = {"User-Agent": "ductile-fetch/1", **settings.headers}
    request = urllib.request.Request(settings.url, headers=headers, method="GET")  # noqa: S310 - http(s) only
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    deadline = time.monotonic() + settings.timeout
    try:
        with opener.open(request, timeout=settings.timeout) as answer:
            body, cut = read_capped(answer, settings.max_bytes, deadline, where)
            status, got = int(answer.status), dict(answer.headers.items())
    except urllib.error.HTTPError as e:
        e.close()
        retry = e.code >= 500 or e.code in (408, 429)  # a 4xx (or a refused redirect) will not heal
        raise plugin.Fail(
            f"GET {where}: HTTP {e.code} {e.reason}" + ("" if retry else " (not retried)"), retry=retry
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        raise plugin.Fail(f"GET {where}: {getattr(e, 'reason', e)}") from None
    return {
        "url": where,
        "status": status,
        "headers": got,
        "body": body.decode("utf-8", errors="replace"),
        "truncated": cut,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def fetch(request: plugin.Request) -> plugin.Response:
    settings = Settings(request)
    got = get(settings)
    digest = got["sha256"]
    summary = f"GET {got['url']}: HTTP {got['status']}, {got['bytes']} bytes" + (
        " (cut)" if got["truncated"] else ""
    )
    if settings.changed_only and request.state.get("sha256") == digest:
        return plugin.ok(result=f"{summary}, unchanged")
    return plugin.ok(
        events=[plugin.event("fetch.completed", got)], state_updates={"sha256": digest}, result=summary
    )


def health(request: plugin.Request) -> None:
    Settings(request)


if __name__ == "__main__":
    plugin.run({"poll": fetch, "handle": fetch, "health": health})
