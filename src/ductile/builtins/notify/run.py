#!/usr/bin/env python3
"""builtin:notify — tell a person or a service about an event, over HTTP (docs/builtins.md).

``handle`` sends the routed event to ``url`` in one ``format``: ``json`` (the
event as it is), ``ntfy``, ``discord``, ``slack``, ``gotify`` or ``form``,
with a ``message`` (and ``title``) made from a template over the event
(``{payload.plugin} died: {payload.reason}``). ``mode: ping`` is a dead-man
switch in the healthchecks style instead: ``poll`` (on a schedule) pings
``url``; a failure event handled pings ``<url>/fail``.

A 5xx answer, a timeout or a refused connection is a retryable failure; a
4xx answer is not (the request itself is wrong: retrying cannot help). The
answer's body is read up to ``max_response_bytes`` and never kept. Standard
library only.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from ductile import plugin

FORMATS = ("json", "ntfy", "discord", "slack", "gotify", "form")
MODES = ("post", "ping")
#: Event types a ping reports as a failure (``<url>/fail``).
FAILURES = frozenset({"job.dead", "job.failed", "breaker.opened", "plugin.refused", "plugin.unhealthy"})
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RESPONSE = 64 * 1024
#: The message when the config gives none, by event type (else :data:`GENERIC`).
MESSAGES = {
    "job.dead": "{payload.plugin} {payload.command} died (job {payload.job_id}, attempt {payload.attempt} "
    "of {payload.max_attempts}): {payload.last_error}\n{payload.stderr_tail}",
    "job.failed": "{payload.plugin} {payload.command} failed (attempt {payload.attempt} of "
    "{payload.max_attempts}): {payload.last_error}",
    "job.recovered": "{payload.plugin} {payload.command} was re-queued after a crash",
    "breaker.opened": "{payload.plugin} {payload.command}: breaker opened after {payload.failures} failures",
    "breaker.closed": "{payload.plugin} {payload.command}: breaker closed",
    "schedule.skipped": "{payload.plugin}: a run of {payload.schedule} was skipped ({payload.reason})",
    "plugin.refused": "plugin {payload.plugin} refused: {payload.reason}",
    "plugin.unhealthy": "plugin {payload.plugin} unhealthy: {payload.reason}",
}
GENERIC = "{type} from {source}"
DEFAULT_TITLE = "ductile: {type}"
#: Discord refuses longer messages; Slack and the rest get the same cap.
MAX_MESSAGE = 2000
_FIELD = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


def render(template: str, event: Mapping[str, Any]) -> str:
    """``template`` with each ``{dotted.path}`` replaced by that value of ``event`` (text as it
    is, anything else as JSON; a path that is not there: empty). Nothing else is interpreted."""

    def value(match: re.Match[str]) -> str:
        found: Any = event
        for part in match.group(1).split("."):
            if isinstance(found, Mapping) and part in found:
                found = found[part]
            elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                found = found[int(part)]
            else:
                return ""
        if found is None:
            return ""
        return found if isinstance(found, str) else json.dumps(found, sort_keys=True)

    return _FIELD.sub(value, template)


class Settings:
    """The plugin's config, checked (a wrong value is a ConfigError: exit 78, not retried)."""

    def __init__(self, request: plugin.Request) -> None:
        self.url = request.config_str("url")
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            raise plugin.ConfigError(f"url must be an http:// or https:// URL, got {self.url!r}")
        self.format = request.config_str("format", "json")
        if self.format not in FORMATS:
            raise plugin.ConfigError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        self.mode = request.config_str("mode", "post")
        if self.mode not in MODES:
            raise plugin.ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.message = request.config_str("message", "")
        self.title = request.config_str("title", DEFAULT_TITLE)
        self.timeout = request.config_float("timeout", DEFAULT_TIMEOUT)
        self.max_response = request.config_int("max_response_bytes", DEFAULT_MAX_RESPONSE)
        self.priority = request.config_int("priority", 0)
        self.tags = request.config_str("tags", "")
        self.ping_method = request.config_str("ping_method", "GET").upper()
        if self.ping_method not in ("GET", "POST"):
            raise plugin.ConfigError(f"ping_method must be GET or POST, got {self.ping_method!r}")
        headers = request.config.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise plugin.ConfigError("headers must be a mapping of header names to text values")
        self.headers = dict(headers)


def body_of(settings: Settings, event: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The request body and its headers for ``event`` in ``settings.format``."""
    template = settings.message or MESSAGES.get(str(event.get("type")), GENERIC)
    message = render(template, event)[:MAX_MESSAGE]
    title = render(settings.title, event)
    fmt = settings.format
    if fmt == "json":
        return _json(event), {}
    if fmt == "ntfy":
        headers = {"Title": title, "Content-Type": "text/plain; charset=utf-8"}
        if settings.priority:
            headers["Priority"] = str(settings.priority)
        if settings.tags:
            headers["Tags"] = settings.tags
        return message.encode(), headers
    if fmt == "discord":
        return _json({"content": message}), {}
    if fmt == "slack":
        return _json({"text": message}), {}
    if fmt == "gotify":
        return _json({"title": title, "message": message, "priority": settings.priority or 5}), {}
    form = {
        "title": title,
        "message": message,
        "type": str(event.get("type", "")),
        "source": str(event.get("source", "")),
        "event_id": str(event.get("event_id", "")),
        "payload": json.dumps(event.get("payload"), sort_keys=True),
    }
    return urllib.parse.urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def send(settings: Settings, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> int:
    """One HTTP request; its status. A 4xx is a failure not retried, anything transient one that is."""
    merged = {"User-Agent": "ductile-notify/1", "Content-Type": "application/json"}
    merged.update(headers)
    merged.update(settings.headers)  # the operator's word wins (a token, a content type)
    if body is None:
        merged.pop("Content-Type", None)
    request = urllib.request.Request(url, data=body, headers=merged, method=method)  # noqa: S310 - http(s) only
    where = _redacted(url)
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as answer:  # noqa: S310 - scheme checked
            answer.read(settings.max_response)
            return int(answer.status)
    except urllib.error.HTTPError as e:
        e.read(settings.max_response)
        e.close()
        if 400 <= e.code < 500 and e.code not in (408, 429):
            raise plugin.Fail(
                f"{method} {where}: HTTP {e.code} {e.reason} (not retried)", retry=False
            ) from None
        raise plugin.Fail(f"{method} {where}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise plugin.Fail(f"{method} {where}: {reason}") from None


def _redacted(url: str) -> str:
    """``url`` without its query string and credentials (a token may be in either)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _ping(settings: Settings, *, failed: bool, body: bytes | None) -> plugin.Response:
    url = settings.url.rstrip("/") + "/fail" if failed else settings.url
    method = settings.ping_method if body is None else "POST"
    status = send(settings, method, url, body, {"Content-Type": "text/plain; charset=utf-8"})
    return plugin.ok(result=f"pinged {_redacted(url)}: HTTP {status}")


def handle(request: plugin.Request) -> plugin.Response:
    settings = Settings(request)
    event = dict(request.require_event().raw)
    if settings.mode == "ping":
        template = settings.message or MESSAGES.get(str(event.get("type")), GENERIC)
        text = render(template, event)[:MAX_MESSAGE].encode()
        return _ping(settings, failed=str(event.get("type")) in FAILURES, body=text)
    body, headers = body_of(settings, event)
    status = send(settings, "POST", settings.url, body, headers)
    return plugin.ok(result=f"sent {event.get('type')} to {_redacted(settings.url)}: HTTP {status}")


def poll(request: plugin.Request) -> plugin.Response:
    settings = Settings(request)
    if settings.mode == "ping":
        return _ping(settings, failed=False, body=None)
    instance = request.plugin or "notify"
    event = {"type": f"{instance}.alive", "source": instance, "payload": dict(request.payload)}
    body, headers = body_of(settings, event)
    status = send(settings, "POST", settings.url, body, headers)
    return plugin.ok(result=f"sent to {_redacted(settings.url)}: HTTP {status}")


def health(request: plugin.Request) -> None:
    Settings(request)


if __name__ == "__main__":
    plugin.run({"handle": handle, "poll": poll, "health": health})
