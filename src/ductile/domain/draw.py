"""A random draw: how randomness enters the domain, as a float in [0, 1).

Domain functions never call a random source: the app draws and passes the
float in (ARCHITECTURE.md, habit 1). This is the one check that a draw lies in
range, used by retry backoff, schedule jitter and the settle context.
"""

from __future__ import annotations

import attrs


def check_draw(draw: float, *, name: str | None = None) -> None:
    """Raise :class:`ValueError` unless ``0 <= draw < 1``; the message names the field ``name`` if given."""
    if not 0.0 <= draw < 1.0:
        what = "a random draw must be" if name is None else f"{name} must be a random draw"
        raise ValueError(f"{what} in [0, 1), got {draw!r}")


def draw_validator(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """:func:`check_draw` as an attrs field validator (the message names the field)."""
    check_draw(value, name=attribute.name)
