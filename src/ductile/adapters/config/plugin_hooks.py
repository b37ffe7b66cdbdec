"""The structure hooks of a plugin's commands, schedules and environment (protocol v2's keys).

The same kind of hooks as :mod:`~ductile.adapters.config.hooks` (one plain
value in, one checked value out, a :class:`Problem` naming what is wrong), for
the values several schedules per plugin, custom commands and environment
pass-through brought: a scheduled command, the ``timeouts`` table, ``at``,
``not_on``, a schedule id, environment names and values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NewType

from ductile.adapters.config.hooks import duration_hook, section, text_value
from ductile.adapters.config.messages import Problem, describe, shorten
from ductile.domain.config import Timeouts
from ductile.domain.errors import ScheduleError
from ductile.domain.schedule import SCHEDULE_ID, weekdays
from ductile.domain.suggest import did_you_mean

ScheduledCommand = NewType("ScheduledCommand", str)
#: ``timeouts``: the four standard commands and a v2 manifest's own, by name.
TimeoutTable = NewType("TimeoutTable", Timeouts)
#: A schedule's one-shot instant (``at``); without an offset it is in the schedule's zone.
Instant = NewType("Instant", datetime)
Weekdays = NewType("Weekdays", frozenset[int])
ScheduleId = NewType("ScheduleId", str)
EnvName = NewType("EnvName", str)
EnvValues = NewType("EnvValues", dict[str, str])

_STANDARD_COMMANDS = ("poll", "handle", "health", "init")
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: ``env.pass`` and ``env.set`` cannot name these: ductile sets them for every run.
RESERVED_ENV_PREFIX = "DUCTILE_"


def command_hook(value: object, _: Any) -> str:
    """A scheduled command: ``poll``, ``handle``, ``health``, or a v2 manifest's own (not ``init``)."""
    text = text_value(value).strip()
    if text == "init":
        raise Problem("a schedule cannot run 'init' (it runs when the plugin is new or changed)")
    if not _COMMAND_NAME.fullmatch(text) or len(text) > 100:
        raise Problem(
            f"'{shorten(text)}' is not a command name: poll, handle, health, or a command of the "
            "plugin's manifest (use 'emit' to fire an event instead)"
        )
    return text


def timeouts_hook(value: object, _: Any) -> Timeouts:
    """``timeouts``: durations by command. A name close to a standard command is a typo
    (``pol``); any other command name is kept for the plugin's manifest to have (discovery
    refuses the plugin when it does not)."""
    given = section(value)
    standard: dict[str, timedelta] = {}
    custom: dict[str, timedelta] = {}
    for key, item in given.items():
        if item is None:
            continue
        name = str(key)
        if name in _STANDARD_COMMANDS:
            standard[name] = _timeout_value(item, name)
            continue
        hint = did_you_mean(name, _STANDARD_COMMANDS)
        if hint or not _COMMAND_NAME.fullmatch(name) or len(name) > 100:
            raise Problem(
                f"unknown key '{shorten(name)}'{hint}; allowed here: {', '.join(_STANDARD_COMMANDS)}, "
                "or a command of the plugin's v2 manifest",
                name,
            )
        custom[name] = _timeout_value(item, name)
    return Timeouts(**standard, custom=custom)


def _timeout_value(value: object, key: str) -> timedelta:
    try:
        return duration_hook(value, None)
    except Problem as p:
        raise Problem(p.message, key) from None


def instant_hook(value: object, _: Any) -> datetime:
    """An RFC 3339 / ISO-8601 instant for ``at``; naive when written without an offset."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise Problem(f"expected a time like '2026-12-24T18:00:00+01:00', got {describe(value)}")
    text = text_value(value).strip()
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise Problem(
            f"'{shorten(text)}' is not a time: write ISO-8601 like '2026-12-24T18:00:00+01:00' "
            "(without an offset it is in the schedule's timezone)"
        ) from None


def weekdays_hook(value: object, _: Any) -> frozenset[int]:
    if not isinstance(value, list):
        raise Problem(f"expected a list of weekdays like [sat, sun], got {describe(value)}")
    items: list[object] = []
    for index, raw in enumerate(value):
        item: object = raw
        if isinstance(raw, str):
            item = text_value(raw)
        elif not isinstance(raw, int) or isinstance(raw, bool):
            raise Problem(
                f"expected a weekday (mon ... sun, or 0-6 with 0 for Sunday), got {describe(item)}", index
            )
        items.append(item)
    try:
        return weekdays(items)
    except ScheduleError as e:
        raise Problem(str(e)) from None


def schedule_id_hook(value: object, _: Any) -> str:
    text = text_value(value) if isinstance(value, str) else str(value) if isinstance(value, int) else None
    if text is None or not SCHEDULE_ID.fullmatch(text):
        shown = shorten(text) if text is not None else describe(value)
        raise Problem(
            f"'{shown}' is not a schedule id: letters, digits, '_' and '-' (at most 64), "
            "starting with a letter or digit"
        )
    return text


def env_name_hook(value: object, _: Any) -> str:
    text = text_value(value).strip() if isinstance(value, str) else None
    if text is None or not _ENV_NAME.fullmatch(text) or len(text) > 200:
        raise Problem(f"{describe(value)} is not an environment variable name (letters, digits, '_')")
    if text.startswith(RESERVED_ENV_PREFIX):
        raise Problem(f"{text} is set by ductile for every run and cannot be passed or set")
    return text


def env_values_hook(value: object, _: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, item in section(value).items():
        try:
            name = env_name_hook(str(key), None)
        except Problem as p:
            raise Problem(p.message, str(key)) from None
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise Problem(f"expected text, got {describe(item)}", str(key))
        try:
            values[name] = text_value(item) if isinstance(item, str) else str(item)
        except Problem as p:
            raise Problem(p.message, str(key)) from None
        if "\x00" in values[name]:
            raise Problem("an environment value cannot hold a NUL character", str(key))
    return values


#: The hooks of this module, by type (the converter registers them with the others).
PLUGIN_HOOKS: tuple[tuple[Any, Callable[[object, Any], Any]], ...] = (
    (ScheduledCommand, command_hook),
    (TimeoutTable, timeouts_hook),
    (Instant, instant_hook),
    (Weekdays, weekdays_hook),
    (ScheduleId, schedule_id_hook),
    (EnvName, env_name_hook),
    (EnvValues, env_values_hook),
)
