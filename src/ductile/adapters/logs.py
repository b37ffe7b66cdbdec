"""Core logs as JSON lines on stdout (D18).

Each line: ``timestamp``, ``level`` (debug/info/warn/error), ``component``,
``plugin`` and ``job_id`` when relevant, ``message``, then any extra fields.
A line is always writable: one that quotes a lone surrogate (from bad input)
is written with JSON's escapes for it instead of losing it to an encoding
error.
stdout is reserved for logs: plugins' output never reaches it (their stderr
is logged as a message of its own, tagged with the plugin).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from ductile.domain.jsonvalue import has_surrogate

LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_CORE = ("timestamp", "level", "component", "plugin", "job_id", "message")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        body: dict[str, Any] = {
            "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "component": getattr(record, "component", None) or record.name.removeprefix("ductile."),
        }
        for key in ("plugin", "job_id"):
            value = getattr(record, key, None)
            if value is not None:
                body[key] = value
        body["message"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _CORE:
                    body[key] = value
        if record.exc_info:
            body["traceback"] = self.formatException(record.exc_info)
        line = json.dumps(body, ensure_ascii=False, default=str)
        if not line.isascii() and has_surrogate(line):
            # A lone surrogate (a value quoted from bad input) cannot be written as UTF-8: the
            # stream would raise and the line be lost. Escaped, it is still one valid JSON line.
            line = json.dumps(body, ensure_ascii=True, default=str)
        return line


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send ductile's (and uvicorn's) logs to ``stream`` (stdout) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ductile")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(logging.WARNING)
        lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
    return handler
