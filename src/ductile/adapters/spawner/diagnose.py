"""Why a plugin could not start: the failures retrying cannot fix, named by their real cause.

A plugin that cannot start fails the same way on every attempt, so it must
not be retried (D3) and its message must say what to fix. Three moments:

- :func:`exec_failure` — ``exec`` itself failed (``Popen`` raised): no
  ``#!`` line (ENOEXEC), a ``#!`` line ending in a carriage return (the file
  has Windows line endings: the kernel looks for ``/bin/sh\\r``), an
  interpreter that does not exist, a file that is not executable. Running out
  of processes or descriptors (EAGAIN, EMFILE, ENOMEM) is not a start failure:
  that is the machine's state, and a retry may well succeed.
- :func:`after_exit` — the process ran but the plugin never did: ``env`` found
  no ``python3\\r`` (a CRLF line) or no such program on the plugin's ``PATH``
  (exit 127), or a Python plugin died importing a module before it answered
  (``ModuleNotFoundError`` as the last line of stderr, nothing on stdout).
  Looked at only when the exit code is 1, 126 or 127 and stdout is empty.
- :func:`preflight` — the same checks before the first run, for ``config
  check``, ``plugins`` and ``status``: the ``#!`` line, the interpreter, and
  for a Python plugin whether its interpreter can import every module the
  entrypoint imports at its top level (``ductile.plugin`` included), run by
  that very interpreter with the plugin's environment.

The kinds are :class:`~ductile.domain.outcome.StartFailure`; the domain
(:func:`~ductile.domain.classify.classify`) decides that none is retried.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping

import attrs

from ductile.domain.outcome import SpawnOutcome, StartFailure
from ductile.ports.spawner import SpawnRequest

#: Bytes read from an executable's first line.
_PEEK = 256
#: How long the Python import check of :func:`preflight` may take.
PREFLIGHT_TIMEOUT = 10.0
_PYTHON = re.compile(r"^(python|pypy)[0-9.]*$")
_IMPORT_ERROR = re.compile(r"^(ModuleNotFoundError|ImportError): (.+)$")
_CRLF_FIX = "the file has Windows line endings: convert it with dos2unix (or sed -i 's/\\r$//' FILE)"


@attrs.frozen
class Diagnosis:
    """A start failure: its kind and the message naming its cause."""

    kind: StartFailure | None
    message: str


def first_line(path: str) -> bytes:
    """The file's first line (at most 256 bytes), b'' when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(_PEEK).split(b"\n", 1)[0]
    except OSError:
        return b""


def _shebang(line: bytes) -> list[str]:
    """The interpreter and its arguments of a ``#!`` line ([] for none); a trailing CR is kept."""
    if not line.startswith(b"#!"):
        return []
    text = line[2:].decode("utf-8", "replace").lstrip(" \t")
    return text.split(" ") if text else []


def _env_target(words: list[str]) -> str | None:
    """The program ``#!/usr/bin/env [-S] NAME`` runs, None when the line does not use env."""
    if not words or os.path.basename(words[0].rstrip("\r")) != "env":
        return None
    rest = " ".join(words[1:]).split()
    while rest and rest[0].startswith("-"):
        rest = rest[1:]
    return rest[0] if rest else None


def exec_failure(exc: BaseException, request: SpawnRequest) -> Diagnosis:
    """What an ``exec`` that raised means (see the module's docs)."""
    exe = request.executable
    if not isinstance(exc, OSError):
        return Diagnosis(None, f"{exe}: cannot start: {exc}")
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    why = f"{exc.strerror or exc} ({code})"
    if exc.filename is not None and exc.filename == request.cwd and exc.filename != exe:
        return Diagnosis(None, f"{exe}: working directory {request.cwd}: {why}")
    if exc.errno == errno.ENOEXEC:
        return Diagnosis(
            StartFailure.NOT_A_PROGRAM,
            f"{exe}: no #! line and not a program this system runs ({code}): "
            "start the file with a line such as #!/bin/sh or #!/usr/bin/env python3",
        )
    if exc.errno in (errno.ENOENT, errno.EACCES) and os.path.isfile(exe):
        if exc.errno == errno.EACCES and not os.access(exe, os.X_OK):
            return Diagnosis(StartFailure.NOT_EXECUTABLE, f"{exe}: not executable: {why}; run chmod +x {exe}")
        words = _shebang(first_line(exe))
        if words:
            found = _interpreter_problem(exe, words, dict(request.env))
            if found is not None:
                return found
            return Diagnosis(StartFailure.NO_INTERPRETER, f"{exe}: bad interpreter {words[0]!r}: {why}")
    return Diagnosis(None, f"{exe}: {why}")


def _interpreter_problem(exe: str, words: list[str], env: Mapping[str, str]) -> Diagnosis | None:
    """A ``#!`` line that cannot work: CRLF, a missing interpreter, a program env cannot find."""
    if any(w.endswith("\r") for w in words):
        shown = " ".join(words).rstrip("\r")
        message = f"{exe}: the #! line '#!{shown}' ends with a carriage return: {_CRLF_FIX}"
        return Diagnosis(StartFailure.CRLF_SHEBANG, message)
    interpreter = words[0]
    if not os.path.isfile(interpreter) or not os.access(interpreter, os.X_OK):
        return Diagnosis(
            StartFailure.NO_INTERPRETER,
            f"{exe}: its interpreter {interpreter} (from the #! line) does not exist or is not executable",
        )
    target = _env_target(words)
    if target is not None and "/" not in target:
        path = env.get("PATH", "")
        if shutil.which(target, path=path) is None:
            return Diagnosis(
                StartFailure.NO_INTERPRETER,
                f"{exe}: '#!{' '.join(words)}': no {target} on the plugin's PATH ({path}); "
                "name the interpreter by its absolute path",
            )
    return None


def after_exit(outcome: SpawnOutcome, request: SpawnRequest) -> SpawnOutcome:
    """``outcome`` with the start failure it hides, if any (see the module's docs)."""
    if outcome.timed_out or outcome.stdout or outcome.exit_code not in (1, 126, 127):
        return outcome
    found: Diagnosis | None = None
    if outcome.exit_code in (126, 127):
        words = _shebang(first_line(request.executable))
        if words:
            found = _interpreter_problem(request.executable, words, request.env)
    else:
        found = _import_error(outcome.stderr_tail, request.executable)
    if found is None:
        return outcome
    return attrs.evolve(outcome, spawn_error=found.message, start_failure=found.kind)


def _import_error(stderr_tail: bytes, exe: str) -> Diagnosis | None:
    lines = [line for line in stderr_tail.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines or "Traceback (most recent call last):" not in stderr_tail.decode("utf-8", "replace"):
        return None
    match = _IMPORT_ERROR.match(lines[-1].strip())
    if match is None:
        return None
    return Diagnosis(
        StartFailure.IMPORT_ERROR,
        f"{exe}: the plugin failed to import a module before it answered: {match.group(2)}",
    )


# --------------------------------------------------------------------------- before the first run

#: Run by the plugin's own interpreter: which top-level imports of the file (argv[1]) it cannot find.
_IMPORT_CHECK = """
import ast, importlib.util, json, os, sys
path = sys.argv[1]
if not sys.flags.isolated:
    sys.path.insert(0, os.path.dirname(path))
with open(path, 'rb') as f:
    tree = ast.parse(f.read(), path)
names = []
for node in tree.body:
    if isinstance(node, ast.Import):
        names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names += [node.module + '.' + a.name for a in node.names if node.module == 'ductile']
        names.append(node.module)
missing = []
for name in names:
    try:
        if importlib.util.find_spec(name) is None:
            missing.append(name)
    except (ImportError, ValueError):
        missing.append(name)
print(json.dumps(sorted(set(missing))))
"""


def preflight(executable: str, *, env: Mapping[str, str], cwd: str) -> str | None:
    """Why ``executable`` would fail to start, before it ever ran; None when it looks runnable."""
    line = first_line(executable)
    if line.startswith(b"\x7fELF"):
        return None
    words = _shebang(line)
    if not words:
        return f"{executable}: no #! line: start the file with a line such as #!/bin/sh"
    found = _interpreter_problem(executable, words, env)
    if found is not None:
        return found.message
    target = _env_target(words) or words[0]
    if not _PYTHON.match(os.path.basename(target)):
        return None
    return _python_imports(executable, words, env=env, cwd=cwd)


def _python_imports(executable: str, words: list[str], *, env: Mapping[str, str], cwd: str) -> str | None:
    argv = [*" ".join(words).split(), "-c", _IMPORT_CHECK, executable]
    try:
        done = subprocess.run(  # the plugin's own interpreter, no shell
            argv,
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            timeout=PREFLIGHT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{executable}: its interpreter could not check the imports: {exc}"
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        return f"{executable}: its interpreter could not read the file: {last[0]}"
    try:
        missing = json.loads(done.stdout)
    except ValueError:
        return None
    if not missing:
        return None
    interpreter = " ".join(words)
    hint = ""
    if any(name == "ductile" or name.startswith("ductile.") for name in missing):
        hint = " (a '-I' or '-E' on the #! line hides the ductile.plugin that ductile provides)"
    return f"{executable}: {interpreter} cannot import {', '.join(missing)}{hint}"
