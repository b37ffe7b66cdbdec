"""The ``api:`` section's documents and builders: the listener and its bearer tokens
(names, scopes, a secret or its SHA-256), each mistake named by its key path."""

from __future__ import annotations

import re
from typing import Any

import attrs

from ductile.adapters.config.hooks import ApiSecret, Listen
from ductile.adapters.config.messages import Problem, shorten
from ductile.domain.config import ApiConfig, ApiToken
from ductile.domain.scopes import ScopeError, parse_scope


@attrs.frozen(kw_only=True)
class TokenDoc:
    name: str
    scopes: tuple[str, ...]
    token: ApiSecret | None = None
    token_sha256: str | None = None


@attrs.frozen(kw_only=True)
class ApiDoc:
    listen: Listen | None = None
    tokens: tuple[ApiToken, ...] | None = None


_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def build_token(doc: TokenDoc) -> ApiToken:
    if not _TOKEN_NAME.fullmatch(doc.name):
        raise Problem(
            f"'{shorten(doc.name)}' is not a token name: letters, digits and . _ @ - (at most 64)", "name"
        )
    if (doc.token is None) == (doc.token_sha256 is None):
        raise Problem("give either 'token' (the secret) or 'token_sha256' (its SHA-256, in hex), not both")
    if not doc.scopes:
        raise Problem("a token needs at least one scope, e.g. scopes: [jobs:ro]", "scopes")
    scopes = []
    for index, text in enumerate(doc.scopes):
        try:
            scopes.append(parse_scope(text))
        except ScopeError as e:
            raise Problem(str(e), "scopes", index) from None
    if doc.token_sha256 is not None:
        if not _HEX_DIGEST.fullmatch(doc.token_sha256):
            raise Problem("expected 64 hexadecimal digits (sha256sum of the token)", "token_sha256")
        return ApiToken(name=doc.name, scopes=tuple(scopes), sha256=bytes.fromhex(doc.token_sha256))
    assert doc.token is not None
    return ApiToken(name=doc.name, scopes=tuple(scopes), secret=doc.token.encode("utf-8", "surrogatepass"))


def build_api(doc: ApiDoc) -> ApiConfig:
    given: dict[str, Any] = {}
    if doc.listen is not None:
        given["host"], given["port"] = doc.listen
    tokens = doc.tokens or ()
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.name in seen:
            raise Problem(f"token name '{token.name}' is already used by tokens[{seen[token.name]}]",
                          "tokens", index, "name")  # fmt: skip
        seen[token.name] = index
    return ApiConfig(tokens=tokens, **given)
