"""The dashboard's HTML: the Jinja2 environment (autoescaping everything), its filters,
the static files, and the headers every page carries.

Every value a plugin wrote (stderr, stdout, state, logs, errors) reaches a page
through an escaping template, never ``|safe``; the Content-Security-Policy
allows scripts and styles from this origin only, so even a missed escape could
not run an inline script.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).parent
#: Most characters of a stderr tail or stdout a page renders (the whole text is a download).
VIEW_CAP = 16 * 1024
HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def parse_utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def span(seconds: float) -> str:
    """A duration for people: ``45s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    s = int(abs(seconds))
    if s < 60:
        return f"{abs(seconds):.1f}s" if abs(seconds) < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def relative(text: str | None, now: datetime) -> str:
    """``3m 05s ago`` / ``in 2h 10m`` for an ISO time; ``-`` for None."""
    at = parse_utc(text)
    if at is None:
        return "-"
    delta = (at - now).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(delta)} ago"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def clip(text: str, cap: int = VIEW_CAP) -> str:
    """The last ``cap`` characters of ``text`` (a tail is read from its end)."""
    return text if len(text) <= cap else text[-cap:]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(short=lambda text: (text or "")[:8], span=span, pretty=pretty, clip=clip)
    return env


ENV = _environment()


def page(template: str, *, now: datetime, status: int = 200, **values: Any) -> Response:
    """``template`` rendered with ``values`` (and ``now``, ``ago``), with the dashboard's headers."""
    html = ENV.get_template(template).render(now=now, ago=lambda text: relative(text, now), **values)
    return HTMLResponse(html, status, headers=HEADERS)


def static_files() -> dict[str, tuple[bytes, str]]:
    """The vendored and own front-end files, read once: name -> (bytes, media type)."""
    files = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in STATIC_TYPES:
            files[path.name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    return files
