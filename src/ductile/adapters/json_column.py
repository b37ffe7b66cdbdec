"""A value stored in a JSON text column (payloads, states, bodies), by every SQL store: compact,
UTF-8 as it is, no NaN; a value JSON cannot hold is a ValueError naming what it was."""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} cannot be stored as JSON: {e}") from e
