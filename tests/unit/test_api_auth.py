"""Bearer tokens (``ductile.app.api.auth``): parsing the header, constant-time comparison.

The header is compared as bytes (a non-ASCII ``str`` makes ``hmac.compare_digest``
raise ``TypeError``: PITFALLS), with ``hmac.compare_digest`` against every
configured token, whichever matches.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.app.api import auth
from ductile.domain.config import ApiToken
from ductile.domain.scopes import EVERYTHING

PLAIN = ApiToken(name="plain", scopes=(EVERYTHING,), secret=b"plain-token-0123456789")
HASHED = ApiToken(
    name="hashed", scopes=(EVERYTHING,), sha256=hashlib.sha256(b"hashed-token-0123456789").digest()
)
TOKENS = (PLAIN, HASHED)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer plain-token-0123456789", PLAIN),
        (b"bearer plain-token-0123456789", PLAIN),
        (b"Bearer hashed-token-0123456789", HASHED),
        (b"Bearer  plain-token-0123456789 ", PLAIN),
        (b"Bearer plain-token-012345678", None),
        (b"Bearer plain-token-01234567890", None),
        (b"Basic plain-token-0123456789", None),
        (b"plain-token-0123456789", None),
        (b"Bearer ", None),
        (b"Bearer \xc3\xa9\xff", None),
        (None, None),
    ],
)
def test_authenticate(header: bytes | None, token: ApiToken | None) -> None:
    assert auth.authenticate(header, TOKENS) == token


@given(st.binary(max_size=80))
def test_any_header_is_an_answer_never_an_error(header: bytes) -> None:
    assert auth.authenticate(header, TOKENS) in (None, PLAIN, HASHED)


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        assert isinstance(a, bytes)
        assert isinstance(b, bytes)
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert auth.authenticate(b"Bearer plain-token-0123456789", TOKENS) == PLAIN
    assert len(calls) == len(TOKENS)  # the hashed one is compared too, after the match
    calls.clear()
    assert auth.authenticate(b"Bearer nobody-token-0123456789", TOKENS) is None
    assert len(calls) == len(TOKENS)
