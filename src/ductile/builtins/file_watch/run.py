#!/usr/bin/env python3
"""builtin:file_watch — notice when configured files change; emit ``file.changed``.

Each ``poll`` takes a digest of every file in ``paths``: ``sha256`` of the
content (the default ``mode``), or ``mtime`` (the modification time and the
size: cheaper, blind to a rewrite that keeps both). The digests are kept in
state; a file whose digest moved since the last poll gets one
``file.changed`` event with ``path``, ``old_digest`` and ``new_digest``. The
first sight of a file only records it. A file that is missing (or cannot be
read) has the digest ``null``: its disappearance and its return are changes
like any other, and the run's result names it; it never fails the run.
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from ductile import plugin

MODES = ("sha256", "mtime")
CHUNK = 1024 * 1024


def digest(path: str, mode: str) -> str | None:
    """The digest of the file at ``path`` in ``mode``; None when it is missing or unreadable."""
    try:
        if mode == "mtime":
            info = os.stat(path)
            return f"mtime:{info.st_mtime_ns}:size:{info.st_size}"
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()
    except OSError:
        return None


def paths_of(request: plugin.Request) -> list[str]:
    paths = request.config.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise plugin.ConfigError("paths must be a non-empty list of file paths")
    expanded = [os.path.expanduser(p) for p in paths]
    relative = [p for p in expanded if not os.path.isabs(p)]
    if relative:
        raise plugin.ConfigError(f"paths must be absolute (or start with ~), got {relative[0]!r}")
    return expanded


def mode_of(request: plugin.Request) -> str:
    mode = request.config_str("mode", "sha256")
    if mode not in MODES:
        raise plugin.ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def poll(request: plugin.Request) -> plugin.Response:
    paths, mode = paths_of(request), mode_of(request)
    known = request.state.get("files")
    previous: Mapping[str, Any] = (
        known if isinstance(known, Mapping) and request.state.get("mode") == mode else {}
    )
    now: dict[str, str | None] = {}
    events: list[dict[str, Any]] = []
    missing: list[str] = []
    for path in paths:
        new = now[path] = digest(path, mode)
        if new is None:
            missing.append(path)
        if path in previous and previous[path] != new:
            old = previous[path]
            payload = {
                "path": path,
                "old_digest": old,
                "new_digest": new,
                "mode": mode,
                "exists": new is not None,
            }
            events.append(plugin.event("file.changed", payload))
    result = f"{len(events)} of {len(paths)} file(s) changed"
    logs = [{"level": "warn", "message": f"{p} is missing or unreadable"} for p in missing]
    if missing:
        result += "; missing: " + ", ".join(missing)
    return plugin.ok(events=events, state_updates={"files": now, "mode": mode}, logs=logs, result=result)


def health(request: plugin.Request) -> None:
    paths_of(request)
    mode_of(request)


if __name__ == "__main__":
    plugin.run({"poll": poll, "health": health})
