"""Reading a request's JSON body and query parameters into checked values (400 / 422)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from ductile.adapters.http.jsonbody import NotJsonError, parse_json
from ductile.app.api.context import BODY_TIMEOUT
from ductile.app.api.errors import ApiError, bad_request
from ductile.domain.errors import UnitError
from ductile.domain.quantities import parse_duration
from ductile.ports.store import JobCursor

_MICRO = timedelta(microseconds=1)


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT, what: str = "body") -> bytes:
    """The whole body: 413 past ``limit`` bytes, 408 (closing the connection) when it is not
    all received within ``timeout`` seconds (a slow sender must not hold a connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload too large", f"the {what} is over {limit} bytes")
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise ApiError(413, "payload too large", f"the {what} is over {limit} bytes")
    except TimeoutError:
        detail = f"the request {what} was not received within {timeout:g} s"
        raise ApiError(408, "request timeout", detail, {"connection": "close"}) from None
    return bytes(raw)


async def json_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT) -> Any:
    """The body parsed as JSON (None when empty); 413, 408 as :func:`read_body`, 400 when not JSON."""
    raw = await read_body(request, limit, timeout)
    if not raw.strip():
        return None
    try:
        return parse_json(raw)
    except NotJsonError as e:
        raise bad_request(f"the body is not JSON: {e}") from None


def only(request: Request, allowed: Sequence[str]) -> None:
    """400 for a query parameter the route does not know (a typo must not widen a listing)."""
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise bad_request(f"unknown query parameter {name!r} (this route takes: {known})")


def single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise bad_request(f"query parameter {name!r} given {len(values)} times")
    return values[0] if values else None


def instant(text: str, name: str, now: datetime) -> datetime:
    """ISO-8601 with an offset (``2026-03-01T12:00:00Z``), or a duration ago (``1h``, ``30m``)."""
    try:
        return now - parse_duration(text)
    except UnitError:
        pass
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name}: expected an ISO-8601 time with an offset or a duration like 1h") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise bad_request(f"{name}: give the time with an offset (Z or +01:00)")
    return at.astimezone(UTC)


def moment(text: str, name: str, now: datetime) -> datetime:
    """``now``, ``+24h`` / ``-30m`` (relative to now), or ISO-8601 with an offset."""
    if text == "now":
        return now
    if text[:1] in "+-" and len(text) > 1:
        try:
            delta = parse_duration(text[1:])
        except UnitError:
            raise bad_request(f"{name}: {text[:40]!r} is not a duration like +24h or -30m") from None
        return now + delta if text[0] == "+" else now - delta
    return (
        instant(text, name, now)
        if text[:1].isdigit() and ("T" in text or "-" in text)
        else _iso_only(text, name)
    )


def _iso_only(text: str, name: str) -> datetime:
    raise bad_request(
        f"{name}: expected now, +24h / -30m, or an ISO-8601 time with an offset; got {text[:40]!r}"
    )


def integer(text: str, name: str, *, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise bad_request(f"{name}: expected a whole number, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise bad_request(f"{name}: must be between {low} and {high}")
    return value


def encode_cursor(cursor: JobCursor) -> str:
    us = (cursor.created_at - datetime(1970, 1, 1, tzinfo=UTC)) // _MICRO
    return base64.urlsafe_b64encode(f"{us}.{cursor.seq}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> JobCursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        us_text, _, seq_text = raw.partition(".")
        us, seq = int(us_text), int(seq_text)
        at = datetime(1970, 1, 1, tzinfo=UTC) + us * _MICRO
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise bad_request(
            "cursor: not a cursor this API gave (use the previous page's next_cursor)"
        ) from None
    return JobCursor(created_at=at, seq=seq)
