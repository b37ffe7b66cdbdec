"""The one error family of ductile.

Every error the system raises on purpose descends from :class:`DuctileError`,
so callers (the CLI above all) can tell "a mistake we explain" from "a bug".
"""

from __future__ import annotations


class DuctileError(Exception):
    """Base of every error ductile raises deliberately."""


class IllegalTransitionError(DuctileError):
    """A job was asked to make a move its state machine does not allow.

    Raising it changes nothing: the job value the caller holds stays valid.
    """

    def __init__(self, job_id: str, status: str, event: str) -> None:
        super().__init__(f"job {job_id}: '{event}' is not allowed from '{status}'")
        self.job_id = job_id
        self.status = status
        self.event = event


class ProtocolError(DuctileError):
    """A plugin's stdout was not exactly one valid protocol-v1 response.

    ``kind`` is a short stable code (``empty``, ``not_json``, ...) that tests
    and logs can match on; the message is for humans.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UnitError(DuctileError, ValueError):
    """A duration or size string could not be understood."""


class ScheduleError(DuctileError, ValueError):
    """A schedule definition is invalid (bad cron, empty window, ...)."""


class ConfigError(DuctileError):
    """The operator's configuration is wrong.

    ``path`` is the key path (``plugins.withings.retry.max_attempts``) and
    ``line`` the 1-based file line where known.
    """

    def __init__(self, message: str, *, path: str = "", line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.detail = message
        where = path or "<config>"
        if line is not None:
            where = f"{where} (line {line})"
        super().__init__(f"{where}: {message}")


class ManifestError(DuctileError, ValueError):
    """A plugin's manifest is invalid; the message is the refusal reason.

    ``path`` is the key path of the value at fault (``("commands", 0, "type")``;
    empty for the manifest as a whole), so that whoever read the file can name
    its line; ``detail`` is the message without it.
    """

    def __init__(self, message: str, *path: str | int) -> None:
        self.detail = message
        self.path: tuple[str | int, ...] = path
        where = manifest_path(path)
        super().__init__(f"{where}: {message}" if where else message)


def manifest_path(path: tuple[str | int, ...]) -> str:
    """``commands[0].type``: a key path as the messages write it."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


class UnknownJobError(DuctileError, LookupError):
    """No job has that id (never queued, or deleted by retention)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id
