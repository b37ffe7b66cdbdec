"""Plugin state (D9): one JSON object per plugin, shallow-merged, ≤ 1 MiB."""

from __future__ import annotations

import json
from typing import Any

import attrs

MAX_STATE_BYTES = 1024 * 1024


def state_size(state: dict[str, Any]) -> int:
    """Bytes of the compact UTF-8 JSON form, the form the store keeps."""
    return len(serialize_state(state))


def serialize_state(state: dict[str, Any]) -> bytes:
    return _COMPACT.encode(state).encode()


#: ``json.dumps`` with these options builds a new encoder per call; this one is built once.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@attrs.frozen
class MergeResult:
    state: dict[str, Any]
    size: int
    rejected: str | None = None
    #: The accepted state's compact JSON (``serialize_state(state)``); empty when rejected.
    text: bytes = attrs.field(default=b"", eq=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.rejected is None


def merge_state(
    current: dict[str, Any], updates: dict[str, Any], *, limit: int = MAX_STATE_BYTES
) -> MergeResult:
    """Replace top-level keys of ``current`` with those of ``updates``.

    When the merged state would exceed ``limit`` the update is rejected and
    ``current`` is returned unchanged with the reason.
    """
    merged = {**current, **updates}
    text = serialize_state(merged)
    size = len(text)
    if size > limit:
        return MergeResult(
            current,
            state_size(current),
            f"state would be {size:,} bytes, over the {limit:,}-byte limit; update rejected",
        )
    return MergeResult(merged, size, text=text)
