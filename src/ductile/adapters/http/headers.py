"""Reading a request's header list: one header's values, the headers a plugin
sees (credentials masked), the dedupe key.

ASGI hands headers over as a list of ``(name, value)`` byte pairs (names are
matched whatever their case); values are read as latin-1, HTTP's byte-transparent
reading.
"""

from __future__ import annotations

from collections.abc import Iterable

from ductile.domain.secret_headers import MASK, is_secret_header

#: The most bytes of an incomplete request head (or chunk-size line, or trailer) buffered
#: before the request is refused with 400: h11's default, applied to httptools too.
MAX_HEAD_SIZE = 16 * 1024


def header_values(raw: Iterable[tuple[bytes, bytes]], name: str) -> list[bytes]:
    """Every value of header ``name`` (case-insensitive), in order."""
    wanted = name.lower().encode("latin-1")
    return [value for key, value in raw if key.lower() == wanted]


def delivery_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers for the event: lower-cased names, repeats joined with ", ",
    latin-1 decoded (HTTP's byte-transparent reading); the values of credentials
    (``Authorization``, ``Cookie``, ``X-Api-Key``...) masked, their names kept
    (:func:`~ductile.domain.secret_headers.is_secret_header`)."""
    out: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        if is_secret_header(name):
            out[name] = MASK
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


def single_value(raw: Iterable[tuple[bytes, bytes]], name: str) -> bytes | None:
    """The value of header ``name`` when it was sent exactly once; None when absent or repeated."""
    values = header_values(raw, name)
    return values[0] if len(values) == 1 else None
