"""What happened when the core tried to run a job: the input of settle."""

from __future__ import annotations

import enum
from datetime import timedelta

import attrs

#: D4 caps.
STDOUT_CAP = 10 * 1024 * 1024
STDERR_CAP = 1024 * 1024
STDERR_KEEP = 64 * 1024
#: How much of a bad stdout is kept with the job for debugging.
STDOUT_KEEP = 64 * 1024

_SIGNAL_NAMES = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    24: "SIGXCPU",
    25: "SIGXFSZ",
}


def _bytes_repr(value: bytes) -> str:
    """Outcomes carry up to 10 MiB: their repr names the size, never the bytes."""
    return f"<{len(value)} bytes>"


def signal_name(number: int) -> str:
    return _SIGNAL_NAMES.get(number, f"signal {number}")


class StartFailure(enum.StrEnum):
    """Why the plugin never really started: the same on every attempt, so never retried (D3)."""

    #: ENOEXEC: no ``#!`` line, and not a binary this system runs.
    NOT_A_PROGRAM = "not_a_program"
    #: The ``#!`` interpreter does not exist (or ``env`` finds no such program on ``PATH``).
    NO_INTERPRETER = "no_interpreter"
    #: The ``#!`` line ends with a carriage return: the file has Windows line endings.
    CRLF_SHEBANG = "crlf_shebang"
    #: The entrypoint lost its execute bit.
    NOT_EXECUTABLE = "not_executable"
    #: The interpreter ran, and the program died importing a module before it answered.
    IMPORT_ERROR = "import_error"


@attrs.frozen(kw_only=True)
class SpawnOutcome:
    """The plugin process ran (or exec failed). Filled in by a Spawner."""

    exit_code: int | None = None
    #: Set when the process died of a signal (not one we sent for a timeout).
    signal: int | None = None
    stdout: bytes = attrs.field(default=b"", repr=_bytes_repr)
    stderr_tail: bytes = attrs.field(default=b"", repr=_bytes_repr)
    timed_out: bool = False
    stdout_overflow: bool = False
    duration: float = 0.0
    #: The process could not be started at all (ENOENT, EACCES, ENOEXEC...).
    spawn_error: str | None = None
    #: Set with ``spawn_error`` when the cause is one a retry cannot fix (the spawner says which).
    start_failure: StartFailure | None = None
    #: Set with ``spawn_error`` when the cause is a lack of resources of the machine or the daemon
    #: (too many open files, processes, no memory): not the plugin's fault, not an attempt of it.
    out_of_resources: bool = False

    @property
    def exited(self) -> bool:
        return self.exit_code is not None


@attrs.frozen(kw_only=True)
class NotRun:
    """The core refused to spawn (trust check failed, plugin unhealthy...)."""

    reason: str
    retryable: bool = False


@attrs.frozen(kw_only=True)
class NotStarted:
    """The core could not start the run for lack of resources (a spawn that failed with
    EMFILE, ENFILE, EAGAIN or ENOMEM): the job goes back to the queue, the same attempt,
    after ``retry_in``; neither its attempts nor its breaker count it."""

    reason: str
    retry_in: timedelta = timedelta(seconds=5)


@attrs.frozen(kw_only=True)
class Interrupted:
    """The job was running when the daemon died (crash recovery, D6)."""

    reason: str = "the daemon stopped while the job was running"


Outcome = SpawnOutcome | NotRun | NotStarted | Interrupted
