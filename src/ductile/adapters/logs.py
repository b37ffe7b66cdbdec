"""Core logs on stdout: JSON lines (D18), or readable lines on a terminal.

Each JSON line: ``timestamp``, ``level`` (debug/info/warn/error), ``component``,
``plugin`` and ``job_id`` when relevant, ``message``, then any extra fields.
A line is always writable: one that quotes a lone surrogate (from bad input)
is written with JSON's escapes for it instead of losing it to an encoding
error.
stdout is reserved for logs: plugins' output never reaches it (their stderr
is logged as a message of its own, tagged with the plugin).

When stdout is a terminal (``ductile start`` in a shell), the same records
are printed for a person (:class:`TextFormatter`): local time, level,
component, plugin, message, then the extra fields as ``key=value``.
``--log-format json|text`` chooses explicitly; a pipe, a file or the journal
gets JSON.
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


class TextFormatter(logging.Formatter):
    """One record for a person: ``10:04:01.250 INFO  dispatcher counter  poll succeeded  job_id=… …``.

    Local time of day (the date when it is not today's), the level, the
    component and plugin, the message's first line, the job id and the extra
    fields, then the message's other lines indented (a plugin's stderr).
    Nothing is dropped that the JSON line has.
    """

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created).astimezone()
        today = datetime.now().astimezone().date()
        stamp = at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"
        if at.date() != today:
            stamp = at.strftime("%Y-%m-%d ") + stamp
        level = LEVEL_NAMES.get(record.levelno, record.levelname.lower()).upper()
        component = getattr(record, "component", None) or record.name.removeprefix("ductile.")
        plugin = getattr(record, "plugin", None)
        who = f"{component} {plugin}" if plugin else str(component)
        first, *rest = record.getMessage().split("\n")
        extras: list[str] = []
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            extras.append(f"job_id={job_id}")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            extras += [f"{k}={_text(v)}" for k, v in fields.items() if k not in _CORE]
        line = f"{stamp} {level:<5} {who}  {first}"
        if extras:
            line += "  " + " ".join(extras)
        line += "".join(f"\n    {more}" for more in rest)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if not line.isascii() and has_surrogate(line):  # as for JSON: never lost to an encoding error
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        return line


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


#: ``--log-format`` values: ``auto`` is text on a terminal, JSON otherwise.
LOG_FORMATS = ("auto", "json", "text")


def pick_format(choice: str, stream: IO[str]) -> str:
    """``json`` or ``text`` for ``choice`` (``auto``: text when ``stream`` is a terminal)."""
    if choice != "auto":
        return choice
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "json"


def configure_logging(
    level: str = "info", stream: IO[str] | None = None, *, log_format: str = "json"
) -> logging.Handler:
    """Send ductile's (and uvicorn's) logs to ``stream`` (stdout): ``log_format``
    ``json`` (D18), ``text`` (for a person) or ``auto`` (:func:`pick_format`)."""
    out = stream or sys.stdout
    handler = logging.StreamHandler(out)
    chosen = pick_format(log_format, out)
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
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
