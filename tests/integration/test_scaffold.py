"""``ductile init`` and ``ductile new plugin`` write what passes ``config check`` and runs, through
the real daemon started as the README starts it (the venv not on PATH)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.integration.test_plugin_start import ReadmeSite
from tests.support.site import SCRIPT, log_match


@pytest.fixture
def fresh(tmp_path: Path) -> ReadmeSite:
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    return ReadmeSite(tmp_path)


def _run_and_wait(site: ReadmeSite, plugin: str) -> dict[str, object]:
    done = site.cli("run", plugin, "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    outcome: dict[str, object] = json.loads(done.stdout)["outcome"]
    return outcome


def test_init_then_new_plugins_pass_config_check_and_run_through_the_daemon(fresh: ReadmeSite) -> None:
    site = fresh
    try:
        done = site.cli("init", str(site.root))
        assert done.returncode == 0, done.stderr
        hello = site.plugins_dir / "hello"
        assert stat.S_IMODE((hello / "run.sh").stat().st_mode) == 0o755
        check = site.cli("config", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "no problems found" in check.stdout

        daemon = site.start()
        assert _run_and_wait(site, "hello")["status"] == "succeeded"
        daemon.wait_for_log(log_match("hello from ductile", plugin="hello"), 10, "the greeting it read")

        for name, lang in (("shelly", "sh"), ("pythonic", "python")):
            made = site.cli("new", "plugin", name, "--lang", lang)
            assert made.returncode == 0, made.stderr
        check = site.cli("config", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        site.cli_ok("reload")
        daemon.wait_for_log(log_match("plugin loaded", plugin="pythonic"), 15, "the reload to load it")
        for name in ("shelly", "pythonic"):
            assert _run_and_wait(site, name)["status"] == "succeeded", name
        status = json.loads(site.cli("status", "--json").stdout)
        assert all(p["health"]["ok"] for p in status["plugins"]), status["plugins"]
    finally:
        site.teardown()


def test_init_and_new_never_overwrite(fresh: ReadmeSite) -> None:
    site = fresh
    site.config_path.write_text("# mine\n")
    done = site.cli("init", str(site.root))
    assert done.returncode == 1
    assert "already exists: nothing was written" in done.stderr
    assert site.config_path.read_text() == "# mine\n"
    assert not (site.plugins_dir / "hello").exists()

    site.config_path.unlink()
    assert site.cli("init", str(site.root)).returncode == 0
    assert site.cli("new", "plugin", "hello").returncode == 1
    bad = site.cli("new", "plugin", "Bad Name")
    assert bad.returncode == 2
    assert "lower-case letters" in bad.stderr
    assert os.listdir(site.plugins_dir) == ["hello"]
