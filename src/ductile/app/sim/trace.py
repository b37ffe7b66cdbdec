"""How the trace writes an instant and a job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: The last stamp made (a step notes many lines at one instant).
_last_stamp: list[Any] = [None, ""]


def stamp(at: datetime) -> str:
    """``2026-03-27T00:00:04.250Z``: the trace's time format."""
    if _last_stamp[0] == at:
        return str(_last_stamp[1])
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    text = utc.isoformat(timespec="milliseconds")[:-6] + "Z"  # without its "+00:00"
    _last_stamp[:] = [at, text]
    return text


def ref(job_id: str) -> str:
    return job_id[:8]
