#!/usr/bin/env python3
"""builtin:folder_watch — one event per file created, changed or removed under a folder.

Each ``poll`` lists the regular files under ``path`` whose name matches
``pattern`` (a glob, ``*`` by default; in ``recursive`` mode the pattern is
matched against the path relative to the folder too, so ``*.csv`` and
``in/*.csv`` both work) and takes a digest of each: ``mtime`` (modification
time and size, the default) or ``sha256`` of the content. Compared with the
listing kept in state, each new file emits ``file.created``, each changed
one ``file.changed`` and each gone one ``file.removed``, with ``path``,
``relative``, ``folder``, ``old_digest`` and ``new_digest``. The first poll
only records what is there.

Nothing outside the folder is looked at: directories reached through a
symlink are not descended into, and a file whose real path (symlinks
resolved) is outside the folder is skipped. At most ``max_files`` files are
watched (the first in sorted order; the run's result says when more were
there), so a folder that fills up cannot make the state grow without bound.
Standard library only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ductile import plugin

MODES = ("mtime", "sha256")
DEFAULT_MAX_FILES = 10_000
CHUNK = 1024 * 1024
KINDS = {"created": "file.created", "changed": "file.changed", "removed": "file.removed"}


class Settings:
    """The plugin's config, checked (a wrong value is a ConfigError: not retried)."""

    def __init__(self, request: plugin.Request) -> None:
        self.folder = os.path.expanduser(request.config_str("path"))
        if not os.path.isabs(self.folder):
            raise plugin.ConfigError(
                f"path must be an absolute folder path (or start with ~), got {self.folder!r}"
            )
        self.pattern = request.config_str("pattern", "*")
        self.recursive = request.config_bool("recursive", False)
        self.max_files = request.config_int("max_files", DEFAULT_MAX_FILES)
        if self.max_files < 1:
            raise plugin.ConfigError(f"max_files must be at least 1, got {self.max_files}")
        self.mode = request.config_str("mode", "mtime")
        if self.mode not in MODES:
            raise plugin.ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def real_folder(self) -> str:
        """The folder with its symlinks resolved; a retryable failure when it is not a folder now."""
        real = os.path.realpath(self.folder)
        if not os.path.isdir(real):
            raise plugin.Fail(f"{self.folder} is not a folder (missing, or not a directory)")
        return real


def candidates(settings: Settings, root: str) -> Iterator[str]:
    """Relative paths (``/``-separated) of the entries under ``root`` matching the pattern."""
    for here, dirs, files in os.walk(root, followlinks=False, onerror=None):
        dirs.sort()
        rel_dir = os.path.relpath(here, root)
        for name in sorted(files):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if fnmatch.fnmatchcase(name, settings.pattern) or fnmatch.fnmatchcase(rel, settings.pattern):
                yield rel
        if not settings.recursive:
            return


def inside(root: str, rel: str) -> bool:
    """Whether ``rel`` under ``root`` is a regular file whose real path stays inside ``root``."""
    real = os.path.realpath(os.path.join(root, rel))
    return os.path.commonpath([root, real]) == root and os.path.isfile(real)


def digest(path: str, mode: str) -> str | None:
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


def listing(settings: Settings, root: str) -> tuple[dict[str, str], list[str], bool]:
    """``{relative: digest}`` of the watched files, those skipped, and whether there were more."""
    found: dict[str, str] = {}
    outside: list[str] = []
    for rel in candidates(settings, root):
        if not inside(root, rel):
            outside.append(rel)
            continue
        if len(found) >= settings.max_files:
            return found, outside, True
        value = digest(os.path.join(root, rel), settings.mode)
        if value is not None:
            found[rel] = value
    return found, outside, False


def changes(before: Mapping[str, Any], after: Mapping[str, str]) -> list[tuple[str, str, Any, str | None]]:
    """(kind, relative path, old digest, new digest) for each difference, sorted by path."""
    out: list[tuple[str, str, Any, str | None]] = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel), after.get(rel)
        if old is None and new is not None:
            out.append(("created", rel, None, new))
        elif new is None:
            out.append(("removed", rel, old, None))
        elif old != new:
            out.append(("changed", rel, old, new))
    return out


def poll(request: plugin.Request) -> plugin.Response:
    settings = Settings(request)
    root = settings.real_folder()
    now, outside, more = listing(settings, root)
    key = {
        "folder": root,
        "pattern": settings.pattern,
        "recursive": settings.recursive,
        "mode": settings.mode,
    }
    known = request.state.get("files")
    first = not isinstance(known, Mapping) or request.state.get("watch") != key
    events = []
    if not first and isinstance(known, Mapping):
        for kind, rel, old, new in changes(known, now):
            path = os.path.join(root, rel)
            payload = {
                "path": path,
                "relative": rel,
                "folder": root,
                "change": kind,
                "old_digest": old,
                "new_digest": new,
            }
            events.append(plugin.event(KINDS[kind], payload))
    result = f"{len(now)} file(s) watched" + (
        ", first look recorded" if first else f", {len(events)} change(s)"
    )
    logs: list[dict[str, str]] = []
    if outside:
        logs.append(
            {
                "level": "warn",
                "message": f"skipped (outside {root} through a symlink, or not a file): "
                + ", ".join(outside[:20]),
            }
        )
    if more:
        result += f"; more than max_files ({settings.max_files}): only the first are watched"
        logs.append({"level": "warn", "message": result})
    return plugin.ok(events=events, state_updates={"files": now, "watch": key}, logs=logs, result=result)


def health(request: plugin.Request) -> None:
    Settings(request).real_folder()


if __name__ == "__main__":
    plugin.run({"poll": poll, "health": health})
