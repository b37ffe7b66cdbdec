"""``GET /events``: the activity log as Server-Sent Events, live and resumable.

Each entry is one SSE event: ``id`` (the entry's durable, increasing id),
``event`` (its kind: ``job.dead``, ``breaker.opened``...) and ``data`` (one
line of JSON: ``at``, ``plugin``, ``command``, ``job_id`` and the kind's
fields). A client that reconnects with ``Last-Event-ID`` (or ``?after=``)
gets every entry after that id from the store first — as far back as
retention keeps them — then the live ones: no gap, no duplicate, across a
daemon restart too. Without either it starts with what happens next.

``?plugin=`` and ``?type=`` (repeatable; ``job.*`` for a family) filter. A
comment line (``: heartbeat``) every :data:`~ductile.app.api.context.HEARTBEAT`
seconds keeps proxies from closing an idle stream; ``X-Accel-Buffering: no``
asks nginx not to buffer it. A client that reads too slowly is disconnected
once its buffer fills (see :mod:`ductile.app.feed`); it resumes from its last id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ductile.app.api.body import integer, only, single
from ductile.app.api.context import ApiContext
from ductile.app.api.errors import ApiError, bad_request
from ductile.app.feed import Feed, Subscription, TooManyStreamsError
from ductile.app.views import utc
from ductile.domain.activity import Entry, Kind
from ductile.domain.config import ApiToken

_KINDS = {k.value for k in Kind} | {f"{k.value.partition('.')[0]}.*" for k in Kind}


def frame(entry: Entry) -> bytes:
    """One SSE event (``data`` is one line: JSON escapes every line break)."""
    a = entry.activity
    data = {"at": utc(a.at), "plugin": a.plugin, "command": a.command, "job_id": a.job_id, **a.data}
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    return f"id: {entry.id}\nevent: {a.kind.value}\ndata: {text}\n\n".encode()


def _start(request: Request) -> int | None:
    """Where to resume: ``Last-Event-ID`` (the browser's reconnect) or ``?after=``; None: from now."""
    after = single(request, "after")
    header = request.headers.get("last-event-id")
    text = after if after is not None else header
    if text is None or text == "":
        return None
    return integer(text.strip(), "Last-Event-ID" if after is None else "after", low=0, high=10**15)


async def events(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    only(request, ("plugin", "type", "after"))
    kinds = request.query_params.getlist("type")
    unknown = sorted(set(kinds) - _KINDS)
    if unknown:
        raise bad_request(f"type: unknown event type(s) {', '.join(unknown)}")
    start = _start(request)
    feed = ctx.feed
    try:
        sub = feed.subscribe(plugin=single(request, "plugin"), kinds=frozenset(kinds) if kinds else None)
    except TooManyStreamsError as e:
        raise ApiError(503, "too many streams", str(e), {"retry-after": "5"}) from None
    if start is None:
        start = max(feed.position, await ctx.engine.store.last_activity_id())
    return StreamingResponse(
        _stream(feed, sub, start, ctx.heartbeat),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def _stream(feed: Feed, sub: Subscription, after: int, heartbeat: float) -> AsyncIterator[bytes]:
    """Entries as frames, a heartbeat comment when nothing came for ``heartbeat`` seconds."""
    entries = feed.follow(sub, after=after).__aiter__()
    pending: asyncio.Future[Entry] | None = None
    try:
        yield b": ductile event stream\n\n"
        while True:
            if pending is None:
                pending = asyncio.ensure_future(entries.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                yield b": heartbeat\n\n"
                continue
            try:
                entry = pending.result()
            except StopAsyncIteration:
                return  # overflowed: the client reconnects and resumes from its last id
            pending = None
            yield frame(entry)
    finally:
        feed.unsubscribe(sub)
        if pending is not None:
            pending.cancel()
