"""What the daemon records for the command line: its zone (item 2) and its last good config (item 7)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.plugins import recorder
from tests.support.site import CLI_TIMEOUT, SCRIPT, Site


def cli_in(site: Site, tz: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in an operator's shell whose TZ is not the daemon's."""
    env = site.env()
    env["TZ"] = tz
    return subprocess.run(
        [str(SCRIPT), *args, "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=CLI_TIMEOUT,
        check=False,
    )


def test_the_cli_shows_the_daemons_stored_plan_in_the_daemons_zone(site: Site) -> None:
    site.plugin("noon", recorder(site, "noon"), commands=["poll"])
    site.write_config({"noon": {"schedule": {"cron": "0 12 * * *"}}})  # no timezone: the machine's
    site.start()  # TZ=UTC (Site.env)
    record = json.loads((site.state / "daemon.json").read_text())
    assert record["zone"] == "UTC"
    done = cli_in(site, "Asia/Tokyo", "schedule", "--json")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["runs"][0]
    assert (first["kind"], first["timezone"]) == ("planned", "UTC"), first
    assert first["planned_at"].endswith("T12:00:00Z")
    text = cli_in(site, "Asia/Tokyo", "schedule")
    assert "planned in the daemon's zone, UTC (this shell's is Asia/Tokyo)" in text.stdout
    plugins = json.loads(cli_in(site, "Asia/Tokyo", "plugins", "--json").stdout)
    assert plugins["loaded"][0]["schedule"]["summary"].endswith(" UTC")


def test_read_commands_fall_back_to_the_last_good_config_while_the_file_is_broken(site: Site) -> None:
    site.plugin("echo", recorder(site, "echo"), commands=["poll"])
    site.write_config({"echo": {"schedule": {"every": "1h"}}})
    site.start()
    job_id = site.run_job("echo")
    good = site.config_path.read_text()
    site.config_path.write_text(good.replace("plugins:", "plugins: [\n", 1))  # not YAML any more

    for verb in (["queue"], ["plugins"], ["logs"], ["job", job_id], ["schedule"], ["status", "--no-health"]):
        done = site.cli(*verb, "--json")
        assert done.returncode in (0, 1), (verb, done.stderr)  # status: 1 only if unhealthy
        json.loads(done.stdout)
        assert f"warning: {site.config_path} does not load" in done.stderr, (verb, done.stderr)
        assert "showing the config the daemon last loaded" in done.stderr
    assert json.loads(site.cli("plugins", "--json").stdout)["loaded"][0]["name"] == "echo"

    check = site.cli("config", "check")
    assert check.returncode == 2, "config check judges the file on disk, never the recorded copy"
    run = site.cli("run", "echo")
    assert run.returncode == 2, "a command that writes never runs on the recorded copy"


def test_a_broken_config_with_no_record_is_still_an_error(site: Site) -> None:
    site.write_config()
    site.config_path.write_text("plugins: [\n")
    done = site.cli("queue")
    assert done.returncode == 2
    assert "warning" not in done.stderr


def test_the_record_follows_an_applied_reload(site: Site, tmp_path: Path) -> None:
    site.plugin("echo", recorder(site, "echo"), commands=["poll"])
    site.write_config()
    daemon = site.start()
    site.write_config({"echo": {"schedule": {"every": "2h"}}})
    site.cli_ok("reload")
    from tests.support.site import log_match, wait_until

    daemon.wait_for_log(log_match("reload", component="reload"), 15, "the reload")
    wait_until(
        lambda: "every: 2h" in (site.state / "config.last-good.yaml").read_text(),
        15,
        "the recorded config to follow the reload",
    )
