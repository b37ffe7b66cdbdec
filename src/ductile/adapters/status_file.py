"""The running daemon's status file: what ``ductile status`` needs that the database does not hold.

``<state_dir>/daemon-status.json`` holds one JSON object: the daemon's
``pid``, ``updated_at`` and the sections it reports (``scheduler``: failed
ticks, failing schedules, the last error). The daemon rewrites it when a
section changes; ``ductile status`` reads it, and believes it only when its
``pid`` is the one holding the instance lock (a file left by a daemon that
died says nothing of the next one).

Written atomically: a new file (mode 0600, created exclusively, never through
a symlink) renamed over the old one, so a reader sees the old document or the
new one, never half of one. It lives outside the database on purpose: it can
still be written, and read, while the database refuses writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ductile.domain.protocol import iso_utc

STATUS_NAME = "daemon-status.json"
#: A status file larger than this is not a status file of ours.
MAX_STATUS_BYTES = 64 * 1024


def status_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / STATUS_NAME


def write_status(state_dir: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Replace the status file with ``doc`` (atomically; OSError when the disk refuses)."""
    path = status_path(state_dir)
    temporary = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
    data = json.dumps(doc, ensure_ascii=True, allow_nan=False, sort_keys=True).encode("ascii")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a daemon of this pid that died mid-write
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def status_writer(
    state_dir: str | os.PathLike[str], now: Callable[[], datetime]
) -> Callable[[dict[str, Any]], None]:
    """What the daemon publishes its sections with: each document stamped with this
    process's pid and ``now()``, written by :func:`write_status`."""

    def publish(doc: dict[str, Any]) -> None:
        write_status(state_dir, {"pid": os.getpid(), "updated_at": iso_utc(now()), **doc})

    return publish


def read_status(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status document, or None when there is none (or it is not one of ours)."""
    path = status_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_STATUS_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_STATUS_BYTES:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
