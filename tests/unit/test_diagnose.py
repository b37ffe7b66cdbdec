"""The spawner's start-failure diagnosis on files (the daemon-level tests are in
tests/integration/test_plugin_start.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ductile.adapters.spawner.diagnose import after_exit, preflight
from ductile.app.spawn import plugin_env
from ductile.domain.outcome import SpawnOutcome, StartFailure
from ductile.ports.spawner import SpawnRequest


def _script(tmp_path: Path, text: bytes) -> str:
    path = tmp_path / "run"
    path.write_bytes(text)
    path.chmod(0o755)
    return str(path)


def _request(exe: str) -> SpawnRequest:
    return SpawnRequest(executable=exe, cwd=str(Path(exe).parent), stdin=b"", env=plugin_env({}), timeout=5)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b"#!/bin/sh\necho\n", None),
        (b"\x7fELF\x02\x01", None),
        (b"echo hi\n", "no #! line"),
        (b"#!/bin/sh\r\necho\r\n", "carriage return"),
        (b"#!/no/such/sh\n", "does not exist"),
        (b"#!/usr/bin/env no-such-program-xyz\n", "no no-such-program-xyz on the plugin's PATH"),
        (f"#!{sys.executable}\nimport json\n".encode(), None),
        (f"#!{sys.executable}\nimport json, no_such_mod_abc\n".encode(), "cannot import no_such_mod_abc"),
        (f"#!{sys.executable}\nfrom ductile import plugin\n".encode(), None),
        (
            f"#!{sys.executable}\ntry:\n    import no_such_mod_abc\nexcept ImportError:\n    pass\n".encode(),
            None,
        ),
    ],
)
def test_preflight(tmp_path: Path, text: bytes, found: str | None) -> None:
    exe = _script(tmp_path, text)
    problem = preflight(exe, env=plugin_env({"PATH": "/usr/bin:/bin"}), cwd=str(tmp_path))
    if found is None:
        assert problem is None
    else:
        assert problem is not None
        assert found in problem


def test_after_exit_leaves_an_ordinary_failure_alone(tmp_path: Path) -> None:
    exe = _script(tmp_path, b"#!/bin/sh\nno-such-command\n")
    outcome = SpawnOutcome(exit_code=127, stderr_tail=b"run: no-such-command: not found\n")
    assert after_exit(outcome, _request(exe)) is outcome
    answered = SpawnOutcome(exit_code=1, stdout=b'{"status":"error"}', stderr_tail=b"ModuleNotFoundError: x")
    assert after_exit(answered, _request(exe)) is answered


def test_after_exit_names_an_import_error_before_any_answer(tmp_path: Path) -> None:
    exe = _script(tmp_path, b"#!/usr/bin/python3\nimport nope\n")
    tail = b"Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'nope'\n"
    found = after_exit(SpawnOutcome(exit_code=1, stderr_tail=tail), _request(exe))
    assert found.start_failure is StartFailure.IMPORT_ERROR
    assert found.spawn_error is not None
    assert "No module named 'nope'" in found.spawn_error
