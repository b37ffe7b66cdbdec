"""Dashboard sessions: an API token, presented once at login, held behind a random cookie.

The browser never keeps the token: it keeps a 256-bit random session id in an
``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when the request came over
https). The session remembers the token *as configured*: when a reload removes
the token or changes its secret or scopes, the session ends at its next
request. Each session has its own CSRF token, sent back by every form that
changes something and compared in constant time. Sessions live in memory (a
restart logs everyone out), expire after :data:`IDLE` without a request, and
at most :data:`MAX_SESSIONS` are kept (the least recently used goes first).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import attrs

from ductile.domain.config import ApiToken

COOKIE = "ductile_session"
#: Seconds without a request after which a session ends.
IDLE = 12 * 3600.0
MAX_SESSIONS = 1000


@attrs.define(kw_only=True)
class Session:
    id: str
    token: ApiToken
    csrf: str
    last_seen: float

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, *, idle: float = IDLE, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle
        self._clock = clock
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self, token: ApiToken) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32), token=token, csrf=secrets.token_urlsafe(32), last_seen=self._clock()
        )
        self._open[session.id] = session
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        return session

    def find(self, session_id: str | None, tokens: Sequence[ApiToken]) -> Session | None:
        """The live session ``session_id`` names, if its token is still configured as it was."""
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle or session.token not in tokens:
            del self._open[session_id]
            return None
        session.last_seen = now
        self._open.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._open)
