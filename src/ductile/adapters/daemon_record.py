"""What the daemon records in its state directory for the command line: its zone and last good config.

Two files, written by the daemon when it starts and after every reload it
applied, each replaced atomically (written aside, then renamed), mode 0600:

- ``daemon.json``: the daemon's pid, the config file it reads, and the zone
  it plans schedules without a ``timezone`` in (the machine's zone *as the
  daemon sees it*: ``TZ`` of a systemd unit may differ from an operator's
  shell). The command line plans and shows schedules in that zone, so
  ``ductile schedule`` shows the runs the daemon will make (issue 12, item 2).
- ``config.last-good.yaml``: the text of the config the daemon last loaded
  successfully. While the file on disk is broken, the read commands fall back
  to it with a warning (item 7), so the running daemon can still be looked at.

:func:`guess_state_dir` finds the state directory of a config that does not
load: the value under ``service.state_dir`` when the YAML still parses (or a
line that says it), else the default ``./state`` beside the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import datetime
from pathlib import Path

import attrs

from ductile.adapters.config.yaml_tree import read_tree
from ductile.domain.config import DEFAULT_STATE_DIR
from ductile.domain.errors import ConfigError

RECORD_NAME = "daemon.json"
LAST_GOOD_NAME = "config.last-good.yaml"
#: A line ``state_dir: VALUE`` (indented, under ``service:``) in a file YAML cannot read.
_STATE_DIR_LINE = re.compile(r"^\s+state_dir:\s*(['\"]?)([^'\"#\s]+)\1\s*(#.*)?$", re.M)


@attrs.frozen(kw_only=True)
class DaemonRecord:
    pid: int
    #: The zone of schedules without a ``timezone`` (an IANA key such as ``Europe/Berlin``).
    zone: str
    #: The config file the daemon reads (absolute), None when it was given a Config value.
    config: str | None
    #: When the daemon last loaded its config (start or applied reload), ISO-8601 UTC.
    loaded_at: str
    #: Where the last good config's text is, None when there is none.
    last_good: str | None = None


def _write_atomically(path: Path, data: bytes) -> None:
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(aside, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise


def write_record(
    state_dir: str, *, zone: str, config: str | None, config_text: str | None, loaded_at: datetime
) -> DaemonRecord:
    """Record the daemon's zone and, when given, its config's text. Raises OSError."""
    folder = Path(state_dir)
    last_good: str | None = None
    if config_text is not None:
        last_good = str(folder / LAST_GOOD_NAME)
        _write_atomically(folder / LAST_GOOD_NAME, config_text.encode("utf-8"))
    record = DaemonRecord(
        pid=os.getpid(),
        zone=zone,
        config=config,
        loaded_at=loaded_at.isoformat(),
        last_good=last_good,
    )
    _write_atomically(folder / RECORD_NAME, (json.dumps(attrs.asdict(record), indent=2) + "\n").encode())
    return record


def read_record(state_dir: str) -> DaemonRecord | None:
    """The record in ``state_dir``, None when there is none or it cannot be read."""
    try:
        raw = json.loads((Path(state_dir) / RECORD_NAME).read_text(encoding="utf-8"))
        return DaemonRecord(
            pid=int(raw["pid"]),
            zone=str(raw["zone"]),
            config=None if raw.get("config") is None else str(raw["config"]),
            loaded_at=str(raw["loaded_at"]),
            last_good=None if raw.get("last_good") is None else str(raw["last_good"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_last_good(record: DaemonRecord) -> str | None:
    """The text of the last good config, None when it is gone."""
    if record.last_good is None:
        return None
    try:
        return Path(record.last_good).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def guess_state_dir(config_path: Path) -> str:
    """The state directory a config that does not load names (see the module's docs)."""
    try:
        text = config_path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        text = ""
    written: object = None
    try:
        tree = read_tree(text)
        service = tree.value.get("service") if isinstance(tree.value, dict) else None
        written = service.get("state_dir") if isinstance(service, dict) else None
    except ConfigError:
        match = _STATE_DIR_LINE.search(text)
        written = match.group(2) if match else None
    if not isinstance(written, str) or not written.strip() or "${" in written:
        written = DEFAULT_STATE_DIR
    return os.path.normpath(os.path.join(config_path.parent, os.path.expanduser(written)))
