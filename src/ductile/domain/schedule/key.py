"""The schedule index's key: one planned run per (plugin, schedule id).

The key is the text ``<plugin>/<schedule id>``: a plugin name never holds a
``/`` and a schedule id never does either, so the split is exact. The single
``schedule:`` of a plugin is the schedule ``default`` (ADR 0029). Keeping the
key one text keeps the index's storage and its port as they were.
"""

from __future__ import annotations

import re

#: The id of a plugin's ``schedule:`` (the shorthand for one entry of ``schedules:``).
DEFAULT_SCHEDULE_ID = "default"
#: A schedule id: letters, digits, '_' and '-', starting with a letter or digit.
SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEPARATOR = "/"


def schedule_key(plugin: str, schedule_id: str = DEFAULT_SCHEDULE_ID) -> str:
    return f"{plugin}{SEPARATOR}{schedule_id}"


def split_key(key: str) -> tuple[str, str]:
    """(plugin, schedule id) of a key; a key without a separator is a plugin's default schedule."""
    plugin, sep, schedule_id = key.partition(SEPARATOR)
    return (plugin, schedule_id) if sep else (plugin, DEFAULT_SCHEDULE_ID)
