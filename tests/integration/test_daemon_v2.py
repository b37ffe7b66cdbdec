"""The real daemon running plugins written against the ecosystem's protocol v2, unchanged.

Real processes, a real SQLite database, the real CLI. The plugins are written
the way the upstream collection's authors write them: a v2 manifest
(``manifest_spec: ductile.plugin``, command objects, a custom command,
``fact_outputs``, ``concurrency_safe``), a folder whose name is not the
plugin's, Python plugins reading stdin with the standard library (started by
this very interpreter: ``python3`` on PATH is a slow shim here) and shell
plugins. Each test waits on conditions with bounded deadlines; nothing sleeps
and hopes.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tests.support.plugins import gated, plugin_folder, recorder, v2_folder
from tests.support.site import Site, log_match, requests_of, wait_until

WAIT = 30.0


def manifest(name: str, *commands: tuple[str, str], facts: str = "", entrypoint: str = "run") -> str:
    listed = "".join(f"  - name: {c}\n    type: {t}\n    description: the {c} command\n" for c, t in commands)
    return (
        "manifest_spec: ductile.plugin\nmanifest_version: 1\n"
        f"name: {name}\nversion: 0.3.0\nprotocol: 2\nentrypoint: {entrypoint}\n"
        f'description: "{name}, written against protocol v2"\nconcurrency_safe: false\n'
        f"commands:\n{listed}{facts}"
    )


def python(body: str) -> str:
    return f"#!{sys.executable} -I\n" + body.strip("\n") + "\n"


def feed_watch(site: Site) -> str:
    """Polls emit one event (no result of their own), return a result and a snapshot whose
    first version has a key the second drops; sync echoes its payload; health answers."""
    return python(
        f"""
import json, sys
req = json.load(sys.stdin)
with open({str(site.out / "feed_watch.requests")!r}, "a") as f:
    f.write(json.dumps(req) + "\\n")
cmd = req["command"]
if cmd == "poll":
    n = req["state"].get("seen", 0) + 1
    state = {{"seen": n, "by": req["context"]["ductile_plugin"]}}
    if n == 1:
        state["cursor"] = "first"
    print(json.dumps({{
        "status": "ok",
        "result": "%d new item(s)" % n,
        "state_updates": state,
        "events": [{{"type": "feed.item", "payload": {{"n": n}}}}],
        "logs": [
            {{"level": "debug", "message": "nothing else new"}},
            {{"level": "INFO", "message": "poll %d" % n}},
        ],
    }}))
elif cmd == "sync":
    echoed = json.dumps(req.get("payload", {{}}), sort_keys=True)
    print(json.dumps({{"status": "ok", "result": "synced " + echoed}}))
else:
    print(json.dumps({{"status": "ok", "result": "healthy"}}))
"""
    )


def env_dump(site: Site) -> str:
    return python(
        f"""
import json, os, sys
json.load(sys.stdin)
with open({str(site.out / "envdump.json")!r}, "w") as f:
    json.dump(dict(os.environ), f)
print(json.dumps({{"status": "ok", "result": "dumped"}}))
"""
    )


def write_config(site: Site, plugins: dict[str, Any], **extra: Any) -> None:
    config = site.write_config(plugins, routes=extra.pop("routes", ()), service=extra.pop("service", None))
    config.update(extra)
    site.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def poll_until(site: Site, predicate: Any, what: str) -> Any:
    return wait_until(predicate, WAIT, what)


# --------------------------------------------------------------------------- the ecosystem folder


def _ecosystem(site: Site) -> Path:
    """The plugins of the first root (v2, in folders not named like the plugins) and a second root
    with a copy of one of them and a plugin of its own."""
    v2_folder(
        site.plugins_dir,
        "feed-watch-0.3",
        manifest(
            "feed_watch",
            ("poll", "write"),
            ("sync", "write"),
            ("health", "read"),
            facts=(
                "fact_outputs:\n  - when: {command: poll}\n    from: state_updates\n"
                "    fact_type: feed_watch.snapshot\n    compatibility_view: mirror_object\n"
            ),
        ),
        feed_watch(site),
    )
    v2_folder(site.plugins_dir, "notifier", manifest("notify", ("handle", "write")), recorder(site, "notify"))
    v2_folder(site.plugins_dir, "envdump", manifest("envdump", ("poll", "read")), env_dump(site))
    second = site.root / "more"
    second.mkdir(mode=0o755)
    second.chmod(0o755)
    plugin_folder(second, "notify", recorder(site, "shadow"), commands=("handle",))
    plugin_folder(second, "extra", recorder(site, "extra"), commands=("poll",))
    return second


def test_a_folder_of_unchanged_v2_plugins_is_discovered_routed_and_run(site: Site) -> None:
    second = _ecosystem(site)
    site.env = lambda: {**Site.env(site), "GITHUB_TOKEN": "ghp_passed", "DAEMON_SECRET": "hunter2"}  # type: ignore[method-assign]
    write_config(
        site,
        {
            "feed_watch": {"config": {"feed_url": "https://example.invalid/feed"}},
            "check": {"uses": "feed_watch", "config": {"feed_url": "https://example.invalid/other"}},
            "envdump": {"env": {"pass": ["GITHUB_TOKEN", "NOT_IN_THE_DAEMON"], "set": {"FEED_LANG": "en"}}},
        },
        routes=[{"from": "feed_watch", "event_type": "feed.item", "to": "notify"}],
        plugin_roots=["./plugins", "./more"],
    )
    plugins = site.cli_json("plugins")
    loaded = {p["name"]: p for p in plugins["loaded"]}
    assert sorted(loaded) == ["check", "envdump", "extra", "feed_watch", "notify"]
    assert (loaded["feed_watch"]["protocol"], loaded["feed_watch"]["concurrency_safe"]) == (2, False)
    assert loaded["check"]["uses"] == "feed_watch"
    assert loaded["notify"]["directory"] == str(site.plugins_dir / "notifier")
    [duplicate] = plugins["refused"]
    assert duplicate["name"] == "notify"
    assert str(second / "notify") in duplicate["reason"]
    assert str(site.plugins_dir / "notifier") in duplicate["reason"]

    daemon = site.start()
    first = site.run_job("feed_watch")
    alias = site.run_job("check")
    site.cli_ok("run", "feed_watch", "--command", "sync", "--payload", '{"scope": "all"}')
    site.run_job("envdump")
    poll_until(site, lambda: requests_of(site, "notify"), "the first poll's event to reach notify")
    poll_until(site, lambda: site.job(alias)["job"]["status"] == "succeeded", "the alias's poll")
    site.run_job("feed_watch")
    poll_until(site, lambda: len(requests_of(site, "notify")) >= 2, "the second poll's event to reach notify")
    poll_until(site, (site.out / "envdump.json").exists, "envdump's run")

    _check_requests(site)
    _check_routed_results(site)
    _check_facts_and_state(site, first, alias)
    _check_environment(site)
    # The quiet poll's debug line is logged at debug (not shown at info), never a protocol error.
    assert daemon.logs(log_match("poll 1", component="plugin", level="info"))
    assert not daemon.logs(log_match("nothing else new"))
    assert site.job(first)["runs"][0]["logs"][0] == {"level": "debug", "message": "nothing else new"}


def _check_requests(site: Site) -> None:
    requests = requests_of(site, "feed_watch")
    polls = [r for r in requests if r["command"] == "poll"]
    assert {r["context"]["ductile_plugin"] for r in polls} == {"feed_watch", "check"}
    assert all(r["protocol"] == 2 for r in requests)
    [sync] = [r for r in requests if r["command"] == "sync"]
    assert sync["payload"] == {"scope": "all"}
    assert sync["config"] == {"feed_url": "https://example.invalid/feed"}
    assert list(sync)[:7] == ["protocol", "job_id", "command", "config", "state", "payload", "context"]


def _check_routed_results(site: Site) -> None:
    handled = requests_of(site, "notify")
    for request in handled:
        assert request["protocol"] == 2
        assert request["event"]["type"] == "feed.item"
        assert request["context"]["ductile_upstream_plugin"] == "feed_watch"
        assert request["context"]["ductile_route_depth"] == 1
    results = sorted(r["event"]["payload"]["result"] for r in handled)
    assert results == ["1 new item(s)", "2 new item(s)"]  # the alias's events are its own: not routed


def _check_facts_and_state(site: Site, first: str, alias: str) -> None:
    facts = site.cli_json("facts", "feed_watch")["facts"]
    assert [f["body"] for f in facts] == [
        {"seen": 2, "by": "feed_watch"},
        {"seen": 1, "by": "feed_watch", "cursor": "first"},
    ]
    assert facts[1]["job_id"] == first
    # The state is the newest fact whole: 'cursor' is gone (mirror_object, not a merge).
    rows = site.query("SELECT plugin, state FROM plugin_state ORDER BY plugin")
    states = {plugin: json.loads(state) for plugin, state in rows}
    assert states["feed_watch"] == {"seen": 2, "by": "feed_watch"}
    assert states["check"] == {"seen": 1, "by": "check", "cursor": "first"}  # the alias's own
    assert site.cli_json("facts", "check")["facts"][0]["job_id"] == alias
    assert site.job(first)["runs"][0]["result"] == "1 new item(s)"


def _check_environment(site: Site) -> None:
    env = json.loads((site.out / "envdump.json").read_text())
    assert env["GITHUB_TOKEN"] == "ghp_passed"
    assert env["FEED_LANG"] == "en"
    assert "DAEMON_SECRET" not in env
    assert "NOT_IN_THE_DAEMON" not in env
    assert env["DUCTILE_PLUGIN"] == "envdump"
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "PYTHONPATH"}
    extra = set(env) - allowed - {"GITHUB_TOKEN", "FEED_LANG", "PWD", "SHLVL", "_", "LC_CTYPE"}
    assert {k for k in extra if not k.startswith("DUCTILE_")} == set()
    job_text = json.dumps(site.query("SELECT payload FROM jobs"))
    assert "ghp_passed" not in job_text


# --------------------------------------------------------------------------- schedules


def test_four_schedules_of_one_plugin_are_planned_shown_and_fired(site: Site) -> None:
    at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    v2_folder(
        site.plugins_dir,
        "timed",
        manifest("timed", ("poll", "read"), ("sync", "write")),
        recorder(site, "timed"),
    )
    schedules = [
        {"id": "morning", "cron": "30 7 * * *", "timezone": "Europe/Berlin"},
        {
            "id": "hourly",
            "every": "1h",
            "jitter": "10m",
            "preferred_window": {"start": "06:00", "end": "22:00"},
            "not_on": ["sat", "sun"],
            "timezone": "Europe/Berlin",
        },
        {"id": "once", "at": at.isoformat(), "command": "sync"},
        {"id": "warmup", "after": "1s", "payload": {"warm": True}},
    ]
    write_config(site, {"timed": {"schedules": schedules}})
    site.start()
    # 'hourly' runs first within [now, now + jitter]: rarely, before the warmup.
    [warm] = poll_until(site, lambda: _requests_from(site, "warmup"), "the warmup run")
    assert (warm["command"], warm["payload"]) == ("poll", {"warm": True})
    others = {r["context"]["ductile_schedule"] for r in requests_of(site, "timed")} - {"warmup"}
    assert others <= {"hourly"}

    doc = poll_until(site, lambda: _done(site), "the warmup one-shot to be done")
    runs = doc["runs"]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_id.setdefault(run["schedule"], []).append(run)
    assert set(by_id) == {"morning", "hourly", "once"}
    assert [r["planned_at"] for r in by_id["once"]] == [at.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert by_id["once"][0]["target"] == {"command": "sync"}
    berlin = ZoneInfo("Europe/Berlin")
    for run in by_id["hourly"]:
        local = datetime.fromisoformat(run["planned_at"].replace("Z", "+00:00")).astimezone(berlin)
        assert local.weekday() < 5, run
        assert 6 <= local.hour < 22, run
    for run in by_id["morning"]:
        local = datetime.fromisoformat(run["planned_at"].replace("Z", "+00:00")).astimezone(berlin)
        assert (local.hour, local.minute) == (7, 30)
    assert [(d["plugin"], d["schedule"]) for d in doc["done"]] == [("timed", "warmup")]
    assert len(site.query("SELECT key FROM planned WHERE key LIKE 'timed/%'")) == 4


def _requests_from(site: Site, schedule: str) -> list[dict[str, Any]]:
    return [r for r in requests_of(site, "timed") if r["context"]["ductile_schedule"] == schedule]


def _done(site: Site) -> dict[str, Any] | None:
    doc: dict[str, Any] = site.cli_json("schedule", "--to", "+2d")
    return doc if doc["done"] else None


# --------------------------------------------------------------------------- if_running: cancel


def test_if_running_cancel_stops_the_running_job_and_buries_it_with_the_reason(site: Site) -> None:
    v2_folder(site.plugins_dir, "slow", manifest("slow", ("poll", "write")), gated(site, "slow"))
    write_config(site, {"slow": {"schedules": [{"id": "tick", "every": "2s", "if_running": "cancel"}]}})
    daemon = site.start()
    poll_until(site, lambda: len(site.runs("slow")) >= 2, "a second run after the first was cancelled")
    site.cli_ok("pause", "slow")
    site.release()
    reason = "cancelled: schedule 'tick' fired again (if_running: cancel)"
    first_id = site.runs("slow")[0][0]
    first = poll_until(site, lambda: _terminal(site, first_id), "the stopped job to end")
    assert first["job"]["status"] == "dead"
    assert first["job"]["last_error"] == reason
    assert first["runs"][0]["signal"] == 9  # the process group was killed
    assert daemon.logs(log_match("if_running: cancel", component="scheduler", plugin="slow"))
    assert daemon.logs(log_match("stopped a running job of this schedule", component="scheduler"))


def _terminal(site: Site, job_id: str) -> dict[str, Any] | None:
    doc = site.job(job_id)
    return doc if doc["job"]["status"] in ("succeeded", "dead") else None


# --------------------------------------------------------------------------- a routing loop


def test_a_routing_loop_stops_at_the_depth_limit_and_status_counts_it(site: Site) -> None:
    ping = '{"status": "ok", "events": [{"type": "ping"}]}'
    pong = '{"status": "ok", "events": [{"type": "pong"}]}'
    site.plugin("pinger", recorder(site, "pinger", response=ping))
    site.plugin("ponger", recorder(site, "ponger", response=pong), commands=("handle",))
    write_config(
        site,
        {},
        routes=[
            {"from": "pinger", "event_type": "ping", "to": "ponger"},
            {"from": "ponger", "event_type": "pong", "to": "pinger"},
        ],
        service={"max_route_depth": 4},
    )
    daemon = site.start()
    site.run_job("pinger")
    line = daemon.wait_for_log(log_match("not routed to", component="router"), WAIT, "the loop to be cut")
    assert line["chain"] == "pinger -> ponger -> pinger -> ponger -> pinger"
    assert line["level"] == "warn"
    poll_until(
        site,
        lambda: site.query("SELECT COUNT(*) FROM jobs WHERE status != 'succeeded'")[0][0] == 0,
        "the chain to finish",
    )
    assert [r[0] for r in site.query("SELECT route_depth FROM jobs ORDER BY seq")] == [0, 1, 2, 3, 4]
    status = json.loads(site.cli("status", "--no-health", "--json").stdout)
    assert status["routing"] == {"max_route_depth": 4, "dropped_at_depth": 1}
