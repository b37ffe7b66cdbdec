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
- :func:`preflight` (:func:`preflight_all` for several) — the same checks
  before the first run, for ``config check``, ``plugins`` and ``status``: the
  ``#!`` line, the interpreter, and for a Python plugin whether its
  interpreter can import every module the entrypoint imports at its top level
  (``ductile.plugin`` included), run by that very interpreter with the
  plugin's environment; one start of each distinct interpreter checks all its
  plugins (ADR 0069).

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
from collections.abc import Mapping, Sequence

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

#: Run by the plugins' own interpreter, for each (file, working directory) pair of its argv:
#: which top-level imports of the file it cannot find, one line per file as soon as known:
#: ``ductile-preflight {"missing": [...]}``, or ``{"error": ...}`` (the last line Python
#: would print for the exception) when the file cannot be read, or ``{}``: no answer (the
#: file is checked again alone). Each file is checked as if alone: in its working directory,
#: its own folder first on ``sys.path``, the import machinery as it was at the start. A
#: module an earlier check imported from that check's folders (a dotted name imports its
#: parents) is forgotten; one from elsewhere (the standard library, ``PYTHONPATH``,
#: site-packages: the same for every plugin of this interpreter and environment) is kept,
#: as importing it again is not always possible (an extension module may refuse a second
#: initialisation); a file whose folders hold a name such a kept module has (which would
#: shadow it) gets no answer.
_IMPORT_CHECK = """
import ast, importlib, importlib.util, json, os, sys
base_path, base_meta, base_hooks = list(sys.path), list(sys.meta_path), list(sys.path_hooks)
base_modules = set(sys.modules)

def missing_of(path):
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
    return sorted(set(missing))

def places(module):
    spec = getattr(module, '__spec__', None)
    found = list(getattr(spec, 'submodule_search_locations', None) or [])
    origin = getattr(spec, 'origin', None) or getattr(module, '__file__', None)
    if origin and os.path.isabs(origin):
        found.append(origin)
    return [os.path.realpath(p) for p in found]

def folders_of(path, cwd):
    return {os.path.realpath(os.path.dirname(path)), os.path.realpath(cwd)}

def forget(folders):
    for name in set(sys.modules) - base_modules:
        module = sys.modules.get(name)
        if module is None or any(p.startswith(f + os.sep) for p in places(module) for f in folders):
            sys.modules.pop(name, None)

def shadowed(folders):
    kept = {name.split('.')[0] for name in set(sys.modules) - base_modules}
    for folder in folders:
        try:
            if kept & {entry.split('.')[0] for entry in os.listdir(folder)}:
                return True
        except OSError:
            return True
    return False

def answer_of(path, cwd):
    try:
        os.chdir(cwd)
    except OSError:
        return {}
    if not sys.flags.isolated and shadowed(folders_of(path, cwd)):
        return {}
    try:
        return {'missing': missing_of(path)}
    except Exception as e:
        import traceback
        return {'error': ''.join(traceback.format_exception_only(type(e), e)).strip().splitlines()[-1]}

for path, cwd in zip(sys.argv[1::2], sys.argv[2::2]):
    sys.path[:], sys.meta_path[:], sys.path_hooks[:] = base_path, base_meta, base_hooks
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    print('ductile-preflight ' + json.dumps(answer_of(path, cwd)), flush=True)
    forget(folders_of(path, cwd))
"""


def preflight(executable: str, *, env: Mapping[str, str], cwd: str) -> str | None:
    """Why ``executable`` would fail to start, before it ever ran; None when it looks runnable."""
    return preflight_all([(executable, cwd)], env=env)[0]


def preflight_all(plugins: Sequence[tuple[str, str]], *, env: Mapping[str, str]) -> list[str | None]:
    """:func:`preflight` of each (executable, working directory), in order.

    The import checks of the Python plugins whose ``#!`` lines are the same run in ONE start
    of that interpreter (each file as if alone: :data:`_IMPORT_CHECK`), every distinct
    interpreter at the same time: starting the interpreter is most of a check's cost (~30 ms
    here; ~150 ms more through a pyenv shim). A file the shared check gave no answer for (it
    timed out, or the interpreter died first) is checked again alone, so its answer is the
    one a check of that file alone gives (ADR 0069).
    """
    found: list[str | None] = [None] * len(plugins)
    groups: dict[tuple[str, ...], list[int]] = {}
    for n, (executable, _) in enumerate(plugins):
        static = _static_check(executable, env)
        if isinstance(static, str):
            found[n] = static
        elif static is not None:
            groups.setdefault(tuple(static), []).append(n)
    checks = {words: _ImportCheck(words, [plugins[n] for n in group], env) for words, group in groups.items()}
    for words, group in groups.items():
        check = checks[words]
        # a file checked alone already has its alone answer: never start that check twice
        answers = [check.only()] if len(group) == 1 else check.answers()
        for n, shared in zip(group, answers, strict=True):
            answer = shared if shared is not None else _ImportCheck(words, [plugins[n]], env).only()
            found[n] = _import_problem(plugins[n][0], words, answer)
    return found


def _static_check(executable: str, env: Mapping[str, str]) -> str | list[str] | None:
    """The ``#!`` line's problem; else the words of the Python interpreter to check the
    imports with; None when nothing more is checked (a binary, another interpreter)."""
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
    return words


#: One file's import check: the modules it cannot import, or why the check could not tell.
_Answer = list[str] | str


class _ImportCheck:
    """:data:`_IMPORT_CHECK` of some files by the interpreter of their (same) ``#!`` line,
    started at once; :meth:`answers` waits for it."""

    _PREFIX = b"ductile-preflight "

    def __init__(
        self, words: Sequence[str], plugins: Sequence[tuple[str, str]], env: Mapping[str, str]
    ) -> None:
        self.count = len(plugins)
        argv = [*" ".join(words).split(), "-c", _IMPORT_CHECK, *(part for pair in plugins for part in pair)]
        self.process: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None
        self.stderr = b""
        try:
            self.process = subprocess.Popen(  # the plugins' own interpreter, no shell
                argv,
                env=dict(env),
                cwd=plugins[0][1],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self.failure = f"its interpreter could not check the imports: {exc}"

    def answers(self) -> list[_Answer | None]:
        """Each file's answer, in order; None for a file the check gave no answer for."""
        if self.process is None:  # several files: each is checked again alone (its own cwd)
            return [self.failure if self.count == 1 else None] * self.count
        try:
            out, self.stderr = self.process.communicate(timeout=PREFLIGHT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, self.stderr = self.process.communicate()
            self.failure = (
                f"its interpreter could not check the imports: no answer in {PREFLIGHT_TIMEOUT:g} s"
            )
        return self._parsed(out)

    def only(self) -> _Answer:
        """The answer of the check of one file, or why the check could not tell."""
        (found,) = self.answers()
        if found is not None:
            return found
        if self.failure is None and self.process is not None and self.process.returncode != 0:
            last = self.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            self.failure = f"its interpreter could not read the file: {last[0]}"
        return self.failure if self.failure is not None else []

    def _parsed(self, out: bytes) -> list[_Answer | None]:
        found: list[_Answer | None] = []
        for line in out.splitlines():
            if not line.startswith(self._PREFIX) or len(found) == self.count:
                continue  # the output of whatever a check imported
            try:
                answer = json.loads(line[len(self._PREFIX) :])
            except ValueError:
                answer = None
            if isinstance(answer, dict) and isinstance(answer.get("error"), str):
                found.append(f"its interpreter could not read the file: {answer['error']}")
            elif isinstance(answer, dict) and isinstance(answer.get("missing"), list):
                found.append([str(name) for name in answer["missing"]])
            else:
                found.append(None)
        return found + [None] * (self.count - len(found))


def _import_problem(executable: str, words: Sequence[str], answer: _Answer) -> str | None:
    if isinstance(answer, str):
        return f"{executable}: {answer}"
    if not answer:
        return None
    interpreter = " ".join(words)
    hint = ""
    if any(name == "ductile" or name.startswith("ductile.") for name in answer):
        hint = " (a '-I' or '-E' on the #! line hides the ductile.plugin that ductile provides)"
    return f"{executable}: {interpreter} cannot import {', '.join(answer)}{hint}"
