"""Bearer tokens: who is calling, compared in constant time; and what a route needs.

:func:`authenticate` finds the configured token an ``Authorization: Bearer``
header names. The header is compared as **bytes** (``hmac.compare_digest`` on
a ``str`` with non-ASCII characters raises ``TypeError``: PITFALLS), against a
token kept in the config with ``hmac.compare_digest``, or, when the config
holds only the token's SHA-256, against that digest. Every configured token is
compared, whichever matches, so the time taken does not tell which one did.
The token itself is never logged nor answered: only its ``name``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ductile.domain.config import ApiToken

_BEARER = b"bearer "


def bearer(header: bytes | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer <token>`` header value; None otherwise."""
    if header is None or len(header) <= len(_BEARER) or header[: len(_BEARER)].lower() != _BEARER:
        return None
    token = header[len(_BEARER) :].strip(b" \t")
    return token or None


def authenticate(header: bytes | None, tokens: Sequence[ApiToken]) -> ApiToken | None:
    """The token the header presents, or None (missing, malformed or unknown)."""
    presented = bearer(header)
    if presented is None:
        return None
    digest = hashlib.sha256(presented).digest()
    found: ApiToken | None = None
    for token in tokens:
        if token.secret is not None:
            same = hmac.compare_digest(presented, token.secret)
        else:
            assert token.sha256 is not None
            same = hmac.compare_digest(digest, token.sha256)
        if same and found is None:
            found = token
    return found
