"""What the API's handlers reach: the engine, the feed, the metrics, reload and health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ductile.app.engine import Engine
from ductile.app.feed import Feed
from ductile.domain.config import ApiToken

if TYPE_CHECKING:
    from ductile.app.api.metrics import Metrics

#: The largest request body the API reads (its bodies are small JSON documents).
MAX_BODY = 1024 * 1024
#: Seconds a client has to send a whole request body, as for a webhook (ADR 0046): past it,
#: 408 and the connection is closed, so a slow body cannot hold a connection for ever.
BODY_TIMEOUT = 10.0
#: Seconds between two SSE heartbeat comments.
HEARTBEAT = 15.0


@attrs.define(kw_only=True)
class ApiContext:
    engine: Engine
    feed: Feed
    metrics: Metrics
    #: Re-read the config and apply it: the report (``POST /system/reload``); raises
    #: :class:`~ductile.domain.errors.ConfigError` when the file is refused.
    reload: Callable[[], Awaitable[dict[str, Any]]]
    health: Callable[[], Awaitable[dict[str, Any]]]
    heartbeat: float = HEARTBEAT
    max_body: int = MAX_BODY
    body_timeout: float = BODY_TIMEOUT

    def tokens(self) -> tuple[ApiToken, ...]:
        """The tokens of the config in force (a reload may change them)."""
        api = self.engine.runtime.config.api
        return api.tokens if api is not None else ()
