"""The machine's local time zone, for schedules that do not name one.

Always a DST-aware :class:`~zoneinfo.ZoneInfo`, never a fixed offset: read
from ``$TZ``, ``/etc/localtime`` or ``/etc/timezone``, else UTC.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo


def machine_timezone(*, env: Mapping[str, str] | None = None, etc: str | os.PathLike[str] = "/etc") -> tzinfo:
    """The machine's local zone as a DST-aware :class:`ZoneInfo` (never a fixed offset).

    In order: ``$TZ`` (an IANA name, or ``:/path/to/tzfile``); the target of
    the ``/etc/localtime`` symlink (``.../zoneinfo/Europe/Berlin``);
    ``/etc/timezone``; the rules in ``/etc/localtime`` itself (zone key
    ``localtime``); UTC. The symlink comes before ``/etc/timezone`` because
    it is what the C library reads and ``timedatectl`` updates, while
    ``/etc/timezone`` is a Debian leftover that can be stale.
    """
    env = os.environ if env is None else env
    etc_dir = Path(etc)
    tz_var = env.get("TZ", "").strip()
    if tz_var:
        zone = _zone_from_tz_variable(tz_var)
        if zone is not None:
            return zone
    zone = _zone_from_link(etc_dir / "localtime")
    if zone is not None:
        return zone
    zone = _zone_from_timezone_file(etc_dir / "timezone")
    if zone is not None:
        return zone
    zone = _zone_from_tzfile(etc_dir / "localtime", key="localtime")
    if zone is not None:
        return zone
    return zone_by_key("UTC") or UTC


def zone_by_key(key: str) -> ZoneInfo | None:
    """The IANA zone ``key``, or None when there is no such zone (or it cannot be read)."""
    try:
        return ZoneInfo(key)
    except Exception:  # not found, malformed key, unreadable file: just not this one
        return None


def _zone_from_tzfile(file: Path, *, key: str) -> ZoneInfo | None:
    try:
        with open(file, "rb") as handle:
            return ZoneInfo.from_file(handle, key=key)
    except Exception:
        return None


def _key_from_zoneinfo_path(target: str) -> str | None:
    marker = "/zoneinfo/"
    if marker not in target:
        return None
    key = target.split(marker, 1)[1]
    for prefix in ("posix/", "right/"):
        key = key.removeprefix(prefix)
    return key or None


def _zone_from_tz_variable(value: str) -> ZoneInfo | None:
    value = value.removeprefix(":")
    if value.startswith("/"):
        key = _key_from_zoneinfo_path(value)
        zone = zone_by_key(key) if key else None
        return zone or _zone_from_tzfile(Path(value), key=key or value)
    return zone_by_key(value)


def _zone_from_link(link: Path) -> ZoneInfo | None:
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if not os.path.isabs(target):
        target = os.path.normpath(os.path.join(os.path.dirname(link), target))
    for candidate in (target, os.path.realpath(link)):
        key = _key_from_zoneinfo_path(candidate)
        zone = zone_by_key(key) if key else None
        if zone is not None:
            return zone
    return None


def _zone_from_timezone_file(file: Path) -> ZoneInfo | None:
    try:
        first = file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return zone_by_key(first[0].strip()) if first else None
