"""The spawner's start-failure diagnosis on files (the daemon-level tests are in
tests/integration/test_plugin_start.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ductile.adapters.spawner.diagnose import after_exit, preflight, preflight_all
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


# --------------------------------------------------------------------------- many plugins, one interpreter


def _plugin(root: Path, name: str, text: str, files: dict[str, str] | None = None) -> tuple[str, str]:
    """A plugin folder with its ``run.py`` (and ``files`` beside it): (executable, cwd)."""
    folder = root / name
    folder.mkdir()
    for relative, body in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(body)
    exe = folder / "run.py"
    exe.write_text(text)
    exe.chmod(0o755)
    return str(exe), str(folder)


def _counting_python(tmp_path: Path, *, shared: Path | None = None) -> tuple[str, Path]:
    """A ``python3`` that logs each start to a file, then runs this interpreter (with ``shared``,
    a folder of installed packages, on its ``PYTHONPATH``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    starts = tmp_path / "starts"
    wrapper = bin_dir / "python3"
    path = f'export PYTHONPATH="$PYTHONPATH:{shared}"\n' if shared is not None else ""
    wrapper.write_text(f'#!/bin/sh\necho start >> {starts}\n{path}exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), starts


def _checked_alone(plugins: list[tuple[str, str]]) -> list[str | None]:
    env = plugin_env({"PATH": "/usr/bin:/bin"})
    return [preflight(exe, env=env, cwd=cwd) for exe, cwd in plugins]


def test_preflight_all_checks_the_plugins_of_one_interpreter_in_one_start_as_if_each_were_alone(
    tmp_path: Path,
) -> None:
    """Issue 18: one interpreter start for every plugin with the same #! line (ADR 0069); each
    file still sees only its own folder and none of the modules an earlier file's check loaded
    (here two folders with a package ``helper`` of the same name, one of them with ``sub``)."""
    python, starts = _counting_python(tmp_path)
    plugins = [
        _plugin(tmp_path, "a", f"#!{python}\nimport json\nimport helper.sub\n",
                {"helper/__init__.py": "", "helper/sub.py": ""}),
        _plugin(tmp_path, "b", f"#!{python}\nimport helper.sub\n", {"helper/__init__.py": ""}),
        _plugin(tmp_path, "c", f"#!{python}\nimport no_such_mod_abc\nfrom ductile import plugin\n"),
        _plugin(tmp_path, "d", f"#!{python}\ndef broken(:\n"),
        _plugin(tmp_path, "e", "#!/bin/sh\necho\n"),
        _plugin(tmp_path, "f", f"#!{python}\nimport local_mod\n", {"local_mod.py": ""}),
    ]  # fmt: skip
    found = preflight_all(plugins, env=plugin_env({"PATH": "/usr/bin:/bin"}))
    assert starts.read_text().count("start") == 1
    assert found == _checked_alone(plugins)
    assert found[0] is None
    assert found[1] is not None
    assert found[1].endswith(f"{python} cannot import helper.sub")
    assert found[2] is not None
    assert found[2].endswith("cannot import no_such_mod_abc")
    assert found[3] is not None
    assert "could not read the file: SyntaxError:" in found[3]
    assert found[4] is None
    assert found[5] is None


def test_preflight_all_checks_again_alone_what_the_shared_check_did_not_answer(tmp_path: Path) -> None:
    """A file whose check kills the shared interpreter (here a package that exits the process on
    import) leaves the files after it unanswered: each is then checked alone, and gets the answer
    a check of it alone gives."""
    python, starts = _counting_python(tmp_path)
    plugins = [
        _plugin(tmp_path, "a", f"#!{python}\nimport json\n"),
        _plugin(tmp_path, "b", f"#!{python}\nimport killer.sub\n",
                {"killer/__init__.py": "import os\nos._exit(3)\n"}),
        _plugin(tmp_path, "c", f"#!{python}\nimport no_such_mod_abc\n"),
        _plugin(tmp_path, "d", f"#!{python}\nimport json\n"),
    ]  # fmt: skip
    found = preflight_all(plugins, env=plugin_env({"PATH": "/usr/bin:/bin"}))
    assert starts.read_text().count("start") == 4  # the shared one, then b, c and d alone
    assert found == _checked_alone(plugins)
    assert found[0] is None
    assert found[1] is not None
    assert "could not read the file" in found[1]
    assert found[2] is not None
    assert found[2].endswith("cannot import no_such_mod_abc")
    assert found[3] is None


def test_a_plugin_checked_alone_that_kills_its_check_is_not_checked_twice(tmp_path: Path) -> None:
    """A group of one file is already its check alone: a check that died (or timed out) gives
    its answer at once rather than starting the same check again."""
    python, starts = _counting_python(tmp_path)
    plugin = _plugin(
        tmp_path, "b", f"#!{python}\nimport killer.sub\n", {"killer/__init__.py": "import os\nos._exit(3)\n"}
    )
    [found] = preflight_all([plugin], env=plugin_env({"PATH": "/usr/bin:/bin"}))
    assert starts.read_text().count("start") == 1
    assert found is not None
    assert "could not read the file" in found


def test_preflight_all_starts_each_distinct_interpreter_once(tmp_path: Path) -> None:
    python, starts = _counting_python(tmp_path)
    beside = {"local_mod.py": ""}
    isolated = [_plugin(tmp_path, f"i{n}", f"#!{python} -I\nimport local_mod\n", beside) for n in range(2)]
    plain = [_plugin(tmp_path, f"p{n}", f"#!{python}\nimport local_mod\n", beside) for n in range(3)]
    found = preflight_all([*isolated, *plain], env=plugin_env({"PATH": "/usr/bin:/bin"}))
    assert starts.read_text().count("start") == 2
    assert [p is not None and p.endswith("-I cannot import local_mod") for p in found] == [
        True, True, False, False, False
    ]  # fmt: skip


def test_preflight_all_keeps_what_every_plugin_shares_and_checks_alone_a_plugin_that_shadows_it(
    tmp_path: Path,
) -> None:
    """A package installed for every plugin (here on the interpreter's ``PYTHONPATH``) that an
    earlier check imported stays imported: some extension modules refuse a second
    initialisation (this one refuses any). A plugin with its own module of that name, which
    would shadow it, is checked alone."""
    shared = tmp_path / "shared"
    (shared / "once").mkdir(parents=True)
    (shared / "once" / "__init__.py").write_text(
        "import builtins\nif hasattr(builtins, '_once'):\n    raise ImportError('once per process')\n"
        "builtins._once = True\n"
    )
    (shared / "once" / "sub.py").write_text("")
    python, starts = _counting_python(tmp_path, shared=shared)
    plugins = [
        _plugin(tmp_path, "a", f"#!{python}\nimport once.sub\n"),
        _plugin(tmp_path, "b", f"#!{python}\nimport once.sub\n"),
        _plugin(tmp_path, "c", f"#!{python}\nimport once.sub\n", {"once/__init__.py": ""}),
    ]
    found = preflight_all(plugins, env=plugin_env({"PATH": "/usr/bin:/bin"}))
    assert starts.read_text().count("start") == 2  # the shared one, then c alone
    assert found == _checked_alone(plugins)
    assert found[:2] == [None, None]
    assert found[2] is not None
    assert found[2].endswith("cannot import once.sub")
