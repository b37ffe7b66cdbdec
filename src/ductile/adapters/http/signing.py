"""Webhook signatures: HMAC-SHA256 of the raw body, in GitHub's header format (D11).

A sender puts ``sha256=<lowercase hex>`` (:func:`sign`) in the endpoint's
signature header; :func:`signature_matches` checks it in constant time. Both
are pure: bytes in, a verdict out (PITFALLS.md: ``hmac.compare_digest`` on a
non-ASCII ``str`` raises, so the hex is decoded to bytes first and anything
that does not decode is simply no match).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac

SIGNATURE_PREFIX = b"sha256="


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
