"""Plugins as another user, and the owners the trust check accepts (issue 19, items 15 and 16; ADR 0041).

Real processes, real users: the daemon runs as root (as the suite does), the
plugin as ``nobody``. A plugin run by the daemon's own user can read the
daemon's secrets (``/proc/<daemon pid>/environ``, the config file); one run
as ``nobody`` can read neither. Skipped, loudly, when not run as root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugins import gated, shell_plugin
from tests.support.site import Site, log_match, wait_until

NOT_ROOT = "NOT TESTED: running plugins as another user needs root (the suite runs as root in CI)"
SECRET = "s3cr3t-of-the-daemon"

#: Tries the two ways to the daemon's secrets and says which worked, in its state.
SNOOP = shell_plugin(
    """
cat > /dev/null
if grep -q "$SECRET_NAME" "/proc/$PPID/environ" 2>/dev/null; then environ=readable; else environ=denied; fi
if cat "$CONFIG_PATH" >/dev/null 2>&1; then config=readable; else config=denied; fi
format='{"status": "ok", "state_updates": '
format="$format"'{"uid": %s, "home": "%s", "user": "%s", "environ": "%s", "config": "%s"}}\\n'
printf "$format" "$(id -u)" "$HOME" "$USER" "$environ" "$config"
"""
)


@pytest.fixture
def open_site() -> Iterator[Site]:
    """A site under a fresh directory of /tmp that every user may traverse (mode 0755), so that
    ``nobody`` can reach the plugins; its state directory stays private (0700, root)."""
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    root = Path(tempfile.mkdtemp(prefix="ductile-users-", dir="/tmp"))
    root.chmod(0o755)
    site = Site(root)
    try:
        yield site
    finally:
        try:
            site.teardown()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def snoop_site(site: Site, **service: Any) -> None:
    site.plugin("snoop", SNOOP.replace("$SECRET_NAME", SECRET).replace("$CONFIG_PATH", str(site.config_path)))
    site.plugin("mine", SNOOP.replace("$SECRET_NAME", SECRET).replace("$CONFIG_PATH", str(site.config_path)))
    site.write_config(
        {"snoop": {}, "mine": {"user": "root"}},
        endpoints=[{"path": "/hook", "plugin": "snoop", "secret": "${WEBHOOK_SECRET}"}],
        service=service,
    )
    site.config_path.chmod(0o600)  # as docs/operations.md says


def state_of(site: Site, plugin: str) -> dict[str, Any]:
    rows = site.query("SELECT state FROM plugin_state WHERE plugin = ?", (plugin,))
    return json.loads(rows[0][0]) if rows else {}


def run_both(site: Site) -> None:
    env = site.env()
    env["WEBHOOK_SECRET"] = SECRET  # in the daemon's environment, as an EnvironmentFile would put it
    site.env = lambda: env  # type: ignore[method-assign]
    daemon = site.start()
    for plugin in ("snoop", "mine"):
        job_id = site.run_job(plugin)
        daemon.wait_for_log(
            log_match("succeeded", job_id=job_id, component="dispatcher"), 15, f"{plugin} to run"
        )


def test_a_plugin_of_the_daemons_own_user_can_read_its_secrets(open_site: Site) -> None:
    """What docs/plugins.md warns of: same user, same secrets."""
    snoop_site(open_site)
    run_both(open_site)
    assert state_of(open_site, "snoop") | {"home": None} == {
        "uid": 0,
        "home": None,
        "user": state_of(open_site, "snoop")["user"],
        "environ": "readable",
        "config": "readable",
    }


def test_a_plugin_run_as_nobody_reads_neither_the_environment_nor_the_config(open_site: Site) -> None:
    nobody = pwd.getpwnam("nobody")
    snoop_site(open_site, plugin_user="nobody")
    run_both(open_site)
    assert state_of(open_site, "snoop") == {
        "uid": nobody.pw_uid,
        "home": nobody.pw_dir,
        "user": "nobody",
        "environ": "denied",
        "config": "denied",
    }
    # plugins.<name>.user overrides service.plugin_user: "mine" runs as root.
    assert state_of(open_site, "mine")["uid"] == 0
    assert state_of(open_site, "mine")["environ"] == "readable"


def test_a_plugin_its_user_cannot_run_or_could_rewrite_is_refused_with_the_reason(open_site: Site) -> None:
    site = open_site
    for name in ("hidden", "writable", "fine"):
        site.plugin(name, SNOOP)
    (site.plugins_dir / "hidden").chmod(0o700)  # nobody cannot enter it
    (site.plugins_dir / "writable" / "run").chmod(0o757)  # nobody could rewrite it... (others: rwx)
    site.write_config(
        {"hidden": {}, "writable": {}, "fine": {}, "ghost": {"user": "no-such-user-here"}},
        service={"plugin_user": "nobody"},
    )
    site.plugin("ghost", SNOOP)
    doc = site.cli_json("plugins")
    refused = {r["name"]: r["reason"] for r in doc["refused"]}
    assert [p["name"] for p in doc["loaded"]] == ["fine"]
    assert "user nobody (service.plugin_user) cannot" in refused["hidden"]
    assert "world-writable" in refused["writable"] or "could rewrite what it runs" in refused["writable"]
    assert "plugins.ghost.user: there is no user 'no-such-user-here'" in refused["ghost"]


def test_a_queued_job_whose_entrypoint_is_handed_to_another_user_is_refused_before_its_spawn(
    open_site: Site,
) -> None:
    site = open_site
    site.plugin("slow", gated(site, "slow"))
    site.plugin("target", SNOOP)
    site.write_config({"slow": {}, "target": {}})
    daemon = site.start()
    site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the slow job to hold the dispatcher")
    job_id = site.run_job("target")  # queued, trusted when it was queued
    entry = site.plugins_dir / "target" / "run"
    os.chown(entry, pwd.getpwnam("nobody").pw_uid, -1)
    site.release()
    daemon.wait_for_log(log_match("refused before spawn", job_id=job_id), 15, "the refusal")
    job = site.job(job_id)["job"]
    assert job["last_error"] is not None
    assert f"entrypoint {entry} is owned by uid" in job["last_error"]
    assert site.out_lines("target.runs") == []
