#!/usr/bin/env python3
"""builtin:switch — classify an event by one field and emit the type of the case it matches.

``field`` is a dotted path into the event's envelope (``type``, ``source``,
``payload.status``, ``payload.items.0.kind``). ``cases`` are tried in order;
each has a ``match`` kind (``exact``, ``prefix``, ``contains``, ``regex``), a
``value`` and the event type to ``emit``. The first case that matches emits
its type with the event's payload; when none does, ``default`` is emitted, or
nothing without one. A value that is not text is compared as JSON (``200``,
``true``); a field that is not there matches no case. The config (every
regex) is checked before anything is emitted: a mistake is an error naming
the case, never retried. Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ductile import plugin

KINDS = ("exact", "prefix", "contains", "regex")
#: The most of a field's text a regex is run against (a huge value is not scanned whole).
MAX_SUBJECT = 64 * 1024


class _Absent:
    """A field path that leads nowhere."""


ABSENT = _Absent()


class Case:
    """One checked case: ``match`` of ``value``, emitting ``emit``."""

    def __init__(self, index: int, raw: object) -> None:
        where = f"cases[{index}]"
        if not isinstance(raw, Mapping):
            raise plugin.ConfigError(f"{where} must be a mapping with match, value and emit")
        unknown = sorted(str(k) for k in raw if k not in ("match", "value", "emit"))
        if unknown:
            raise plugin.ConfigError(
                f"{where} has unknown key(s) {', '.join(unknown)}; known: match, value, emit"
            )
        self.kind = raw.get("match", "exact")
        if self.kind not in KINDS:
            raise plugin.ConfigError(f"{where}.match must be one of {', '.join(KINDS)}, got {self.kind!r}")
        value = raw.get("value")
        if not isinstance(value, str):
            raise plugin.ConfigError(f"{where}.value must be text, got {type(value).__name__}")
        self.value = value
        emit = raw.get("emit")
        if not isinstance(emit, str) or not emit.strip():
            raise plugin.ConfigError(f"{where}.emit must be a non-empty event type")
        self.emit = emit
        self.pattern: re.Pattern[str] | None = None
        if self.kind == "regex":
            try:
                self.pattern = re.compile(value)
            except re.error as e:
                raise plugin.ConfigError(f"{where}.value is not a valid regex ({e}): {value!r}") from None

    def matches(self, subject: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(subject[:MAX_SUBJECT]) is not None
        if self.kind == "exact":
            return subject == self.value
        if self.kind == "prefix":
            return subject.startswith(self.value)
        return self.value in subject


class Settings:
    """The plugin's config, checked (a wrong value is a ConfigError: not retried)."""

    def __init__(self, request: plugin.Request) -> None:
        self.field = request.config_str("field")
        if not self.field or any(not part for part in self.field.split(".")):
            raise plugin.ConfigError(
                f"field must be a dotted path such as payload.status, got {self.field!r}"
            )
        cases = request.config.get("cases")
        if not isinstance(cases, list) or not cases:
            raise plugin.ConfigError("cases must be a non-empty list of {match, value, emit}")
        self.cases = [Case(i, raw) for i, raw in enumerate(cases)]
        default = request.config.get("default")
        if default is not None and (not isinstance(default, str) or not default.strip()):
            raise plugin.ConfigError("default must be an event type (text), or left out")
        self.default: str | None = default


def lookup(path: str, envelope: Mapping[str, Any]) -> object:
    """The value at dotted ``path`` in ``envelope`` (list items by index); :data:`ABSENT` if none."""
    found: Any = envelope
    for part in path.split("."):
        if isinstance(found, Mapping) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            return ABSENT
    return found


def as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def handle(request: plugin.Request) -> plugin.Response:
    settings = Settings(request)
    event = request.require_event()
    envelope = dict(event.raw)
    value = lookup(settings.field, envelope)
    payload = dict(event.payload) if isinstance(event.payload, Mapping) else {"payload": event.payload}
    chosen: str | None = None
    why: str
    if value is ABSENT:
        why = f"{settings.field} is not in the event"
    else:
        subject = as_text(value)
        for index, case in enumerate(settings.cases):
            if case.matches(subject):
                chosen, why = case.emit, f"cases[{index}] ({case.kind} {case.value!r}) matched"
                break
        else:
            why = "no case matched"
    if chosen is None:
        chosen = settings.default
        why += "; default" if chosen else "; no default: nothing emitted"
    if chosen is None:
        return plugin.ok(result=why)
    return plugin.ok(events=[plugin.event(chosen, payload)], result=f"{why}: emitted {chosen}")


def health(request: plugin.Request) -> None:
    Settings(request)


if __name__ == "__main__":
    plugin.run({"handle": handle, "health": health})
