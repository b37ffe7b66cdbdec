"""Which request headers carry credentials: stored and shown masked, their names kept.

A webhook's headers travel with its event (D11 [R]) into the store, the
plugin's request and ``ductile job``. Credentials a sender (or a proxy in
front of ductile) puts in headers must not: ``Authorization``, ``Cookie``,
``X-Api-Key``, ``X-Gitlab-Token`` and the like. Their *names* stay (a plugin
may want to know that one was sent), their values become :data:`MASK`.

A header is secret when its name is one of :data:`SECRET_NAMES`, or when one
of its words (split at ``-`` and ``_``) says so (``token``, ``secret``,
``password``, ``auth``, ``session``, ``cookie``...), or two adjacent words do
(``api key``, ``access key``, ``private key``, ``client secret``). A
signature header (``X-Hub-Signature-256``) is not a secret: it is an HMAC of
the body, useless without the endpoint's secret.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

#: What a secret header's value is replaced with.
MASK = "[masked]"

#: Header names (lower-case) that always carry credentials.
SECRET_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "x-apikey",
        "x-auth-token",
        "x-access-token",
        "x-gitlab-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
        "x-goog-api-key",
        "private-token",
        "x-vault-token",
    }
)

#: One word of a header name that marks it as a credential.
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "cookie",
        "apikey",
    }
)
#: Two adjacent words that do.
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
_WORD = re.compile(r"[-_.]+")


#: Names already decided (a webhook's headers are the same names again and again); bounded.
_DECIDED: dict[str, bool] = {}
_DECIDED_MAX = 1024


def is_secret_header(name: str) -> bool:
    """Does header ``name`` (any case) carry a credential? See the module's docs."""
    known = _DECIDED.get(name)
    if known is None:
        known = _decide(name)
        if len(_DECIDED) < _DECIDED_MAX:  # a flood of made-up names cannot grow it
            _DECIDED[name] = known
    return known


def _decide(name: str) -> bool:
    lowered = name.lower()
    if lowered in SECRET_NAMES:
        return True
    words = [w for w in _WORD.split(lowered) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every secret header's value replaced by :data:`MASK` (names kept)."""
    return {name: MASK if is_secret_header(name) else value for name, value in headers.items()}
