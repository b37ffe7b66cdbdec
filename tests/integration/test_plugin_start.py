"""A plugin written as the docs say starts under the README's command; one that cannot start says why.

The README starts the daemon as ``.venv/bin/ductile start`` with the venv not
activated: a docs-style ``#!/usr/bin/env python3`` plugin then runs under the
``python3`` the plugin's PATH finds — not the venv's — and must still import
``ductile.plugin`` (ADR 0020). Plugins that cannot start (no ``#!`` line, a
CRLF ``#!`` line, a missing interpreter, an import error) fail once, are not
retried, and name the real cause; ``config check`` and ``plugins`` say so
before the first run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.site import SCRIPT, Site

#: The plugin's PATH: the system's, without the venv (the README does not activate it).
SYSTEM_PATH = "/usr/bin:/bin"

DOCS_STYLE = """#!/usr/bin/env python3
from ductile import plugin


def poll(request):
    plugin.log.info("polled")
    return plugin.ok(state_updates={"seen": True})


def health(request):
    return None


plugin.run({"poll": poll, "health": health})
"""


def system_python() -> str:
    found = shutil.which("python3", path=SYSTEM_PATH)
    if found is None:
        pytest.skip("no python3 on /usr/bin:/bin")
    return found


class ReadmeSite(Site):
    """The daemon and the CLI run as the README runs them: the console script, venv not on PATH."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PATH"] = SYSTEM_PATH
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(name, None)
        return env


@pytest.fixture
def readme_site(tmp_path: Path) -> ReadmeSite:
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    return ReadmeSite(tmp_path)


def _plugin(site: Site, name: str, script: str | bytes, commands: tuple[str, ...] = ("poll",)) -> None:
    folder = site.plugin(name, "", commands=commands)
    entry = folder / "run"
    if isinstance(script, bytes):
        entry.write_bytes(script)
    else:
        entry.write_text(script)


def test_the_system_python_really_lacks_ductile() -> None:
    """The premise: the interpreter the plugin's #! line finds cannot import ductile by itself."""
    done = subprocess.run(
        [system_python(), "-c", "import ductile"],
        env={"PATH": SYSTEM_PATH},
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        pytest.skip("the system python3 has ductile installed: the premise does not hold here")


def test_a_docs_style_python_plugin_runs_under_the_readme_command(readme_site: ReadmeSite) -> None:
    system_python()
    site = readme_site
    try:
        _plugin(site, "docplug", DOCS_STYLE, commands=("poll", "health"))
        site.write_config({"docplug": {}}, endpoints=None)
        check = site.cli("config", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        site.start()
        done = site.cli("run", "docplug", "--wait", "--timeout", "60", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)["outcome"]
        assert doc["status"] == "succeeded", doc
        status = site.cli("status", "--json")
        plugin = next(p for p in json.loads(status.stdout)["plugins"] if p["name"] == "docplug")
        assert plugin["health"]["ok"], plugin
        assert plugin["cannot_start"] is None
    finally:
        site.teardown()


def test_config_check_and_status_say_when_a_python_plugin_cannot_import_the_helper(
    readme_site: ReadmeSite,
) -> None:
    system_python()
    site = readme_site
    try:
        # -I ignores PYTHONPATH: this interpreter cannot find ductile.plugin.
        _plugin(site, "isolated", DOCS_STYLE.replace("#!/usr/bin/env python3", f"#!{system_python()} -I"))
        site.write_config({"isolated": {}}, endpoints=None)
        check = site.cli("config", "check")
        assert check.returncode == 1
        assert "plugin 'isolated' cannot start" in check.stdout
        assert "cannot import ductile" in check.stdout
        status = json.loads(site.cli("status", "--json", "--no-health").stdout)
        assert "plugin 'isolated' cannot start" in status["problems"]
    finally:
        site.teardown()


#: Plugins that cannot start, and the words that name the cause.
BROKEN = {
    "no-shebang": (b'printf \'{"status":"ok"}\'\n', "no #! line"),
    "crlf-sh": (b'#!/bin/sh\r\nprintf \'{"status":"ok"}\'\r\n', "carriage return"),
    "crlf-env": (b"#!/usr/bin/env python3\r\nprint('{}')\r\n", "carriage return"),
    "no-interpreter": (b"#!/nonexistent/python9\nprint(1)\n", "does not exist"),
    "env-missing": (b"#!/usr/bin/env python9-nosuch\nprint(1)\n", "no python9-nosuch"),
    "import-error": (b"#!/usr/bin/env python3\nimport no_such_module_here\n", "no_such_module_here"),
}


def test_plugins_that_cannot_start_fail_once_with_their_real_cause(readme_site: ReadmeSite) -> None:
    site = readme_site
    try:
        for name, (script, _) in BROKEN.items():
            _plugin(site, name, script)
        site.write_config({name: {} for name in BROKEN}, endpoints=None)
        check = site.cli("config", "check")
        assert check.returncode == 1, check.stdout
        plugins = {p["name"]: p for p in json.loads(site.cli("plugins", "--json").stdout)["loaded"]}
        for name, (_, cause) in BROKEN.items():
            assert f"plugin '{name}' cannot start" in check.stdout
            assert cause in plugins[name]["cannot_start"], (name, plugins[name]["cannot_start"])
        site.start()
        for name, (_, cause) in BROKEN.items():
            done = site.cli("run", name, "--wait", "--timeout", "60", "--json")
            assert done.returncode == 1, done.stdout + done.stderr
            doc = json.loads(done.stdout)["outcome"]
            assert doc["status"] == "dead", (name, doc)
            assert doc["attempt"] == 1, f"{name}: a start failure must not be retried"
            assert cause in doc["last_error"], (name, doc["last_error"])
            assert "not retried" in doc["last_error"]
    finally:
        site.teardown()
