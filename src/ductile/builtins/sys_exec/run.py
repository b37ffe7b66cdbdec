#!/usr/bin/env python3
"""builtin:sys_exec — run one configured command, never through a shell.

``command`` is an argv (``[prog, arg, ...]``): it is executed as it is, so a
value with ``;``, ``$(...)`` or a backquote is one argument, never code. The
job's payload (a schedule's ``payload``, or the routed event's ``payload``)
reaches the command only as environment variables, ``DUCTILE_PAYLOAD_<KEY>``
(the key upper-cased, anything but letters and digits an underscore; a value
that is not text as JSON). An exit code in ``success_exit_codes`` (``[0]``)
is a success that emits ``<instance>.completed`` with the exit code, the
duration and the tails of stdout and stderr; any other is a retryable
failure. The command runs in the plugin's process group: ductile's deadline
stops it with the plugin. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from ductile import plugin

DEFAULT_TAIL = 4096
#: The most of one environment value passed on (a larger one is cut, with a warning).
MAX_VALUE = 64 * 1024
_NOT_NAME = re.compile(r"[^A-Z0-9]")


def argv_of(request: plugin.Request) -> list[str]:
    command = request.config.get("command")
    if (
        not isinstance(command, (list, tuple))
        or not command
        or not all(isinstance(part, str) and "\x00" not in part for part in command)
    ):
        raise plugin.ConfigError("command must be a non-empty list of text: [program, argument, ...]")
    return list(command)


def codes_of(request: plugin.Request) -> frozenset[int]:
    codes = request.config.get("success_exit_codes", [0])
    if not isinstance(codes, (list, tuple)) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in codes
    ):
        raise plugin.ConfigError("success_exit_codes must be a list of whole numbers")
    return frozenset(codes)


def payload_env(values: Mapping[str, Any]) -> dict[str, str]:
    """``DUCTILE_PAYLOAD_<KEY>`` for each top-level key of ``values``."""
    env: dict[str, str] = {}
    for key, value in values.items():
        name = "DUCTILE_PAYLOAD_" + _NOT_NAME.sub("_", str(key).upper())
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        text = text.replace("\x00", "")
        if len(text) > MAX_VALUE:
            plugin.log.warn(f"{name} cut to {MAX_VALUE} characters")
            text = text[:MAX_VALUE]
        env[name] = text
    return env


class Tail:
    """Reads a pipe to its end on a thread, keeping only its last ``keep`` bytes."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        self.keep = keep
        self.data = b""
        self.total = 0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for chunk in iter(lambda: stream.read(65536), b""):
                self.total += len(chunk)
                self.data = (self.data + chunk)[-self.keep :]

    def text(self) -> str:
        self._thread.join()
        return self.data.decode("utf-8", "replace")


def execute(request: plugin.Request, values: Mapping[str, Any]) -> plugin.Response:
    argv = argv_of(request)
    codes = codes_of(request)
    keep = request.config_int("tail_bytes", DEFAULT_TAIL)
    cwd = request.config_str("cwd", None)
    env = dict(os.environ)
    env.update(payload_env(values))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise plugin.Fail(f"could not start {argv[0]}: {e.strerror or e}", retry=False) from None
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = Tail(proc.stdout, keep), Tail(proc.stderr, keep)
    code = proc.wait()
    stderr_tail = err.text()
    result: dict[str, Any] = {
        "argv": argv,
        "exit_code": code,
        "duration_seconds": round(time.monotonic() - started, 3),
        "stdout_tail": out.text(),
        "stderr_tail": stderr_tail,
    }
    if code not in codes:
        detail = stderr_tail.strip().splitlines()[-1:] or [""]
        raise plugin.Fail(f"{argv[0]} exited with {code}: {detail[0]}".rstrip(": "))
    instance = request.plugin or str(request.context.get("ductile_plugin", "sys_exec"))
    return plugin.ok(
        events=[plugin.event(f"{instance}.completed", result)],
        result=f"{argv[0]} exited with {code}",
    )


def poll(request: plugin.Request) -> plugin.Response:
    return execute(request, request.payload)


def handle(request: plugin.Request) -> plugin.Response:
    payload = request.require_event().payload
    return execute(request, payload if isinstance(payload, Mapping) else {"value": payload})


def health(request: plugin.Request) -> None:
    argv = argv_of(request)
    codes_of(request)
    if os.sep not in argv[0] and shutil.which(argv[0]) is None:
        raise plugin.Fail(f"{argv[0]} is not on PATH", retry=False)
    if os.sep in argv[0] and not os.access(argv[0], os.X_OK):
        raise plugin.Fail(f"{argv[0]} is not an executable file", retry=False)


if __name__ == "__main__":
    plugin.run({"poll": poll, "handle": handle, "health": health})
