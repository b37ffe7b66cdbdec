"""How a trace line writes an instant (:func:`stamp`) and a job (:func:`ref`), and a trace's hash.

The trace's hash pins these formats: change one and every recorded hash moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime


def stamp(at: datetime) -> str:
    """``2026-03-27T00:00:04.250Z``: the trace's time format (always milliseconds).

    A step stamps the clock's one ``now`` object many times: the last answer is
    kept for the very same object (``is``: a datetime is immutable).
    """
    global _last  # noqa: PLW0603 - a one-entry memo, not shared state
    last_at, text = _last
    if at is not last_at:
        text = at.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
        _last = (at, text)
    return text


_last: tuple[datetime | None, str] = (None, "")


def ref(job_id: str) -> str:
    """The first 8 characters of a job id, as the trace names the job."""
    return job_id[:8]


def trace_hash(lines: Sequence[str]) -> str:
    """The SHA-256 of a whole trace: equal hashes, equal runs, line for line."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
