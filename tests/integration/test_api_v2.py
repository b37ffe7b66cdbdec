"""The operator API with protocol v2 plugins (real daemon, real HTTP on 127.0.0.1):
a ``type: read`` command may be triggered with ``plugin:ro``, a payload that breaks a
command's ``input_schema`` is a 422 naming what is wrong, pause and resume of a plugin
or one schedule, and ``GET /plugin`` showing each schedule."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.integration.test_api import ADMIN, Api
from tests.support.plugins import v2_folder
from tests.support.site import Site

READ_ONLY = "plugin-reader-token-000"
MANIFEST = """
manifest_spec: ductile.plugin
manifest_version: 1
name: reader
version: 1.0.0
protocol: 2
entrypoint: run
commands:
  - name: poll
    type: read
    description: reads a feed
    input_schema:
      type: object
      required: [url]
      properties:
        url: {type: string, pattern: "^https?://"}
        limit: {type: integer, minimum: 1}
  - name: sync
    type: write
    description: writes somewhere
    input_schema: {target: string}
"""
SCRIPT = f"""#!{sys.executable} -I
import json, sys
json.load(sys.stdin)
print(json.dumps({{"status": "ok", "result": "done"}}))
"""


@pytest.fixture
def api(site: Site) -> Iterator[Api]:
    v2_folder(site.plugins_dir, "reader", MANIFEST, SCRIPT)
    site.write_config(
        {"reader": {"schedules": [{"id": "hourly", "every": "1h"}, {"id": "nightly", "cron": "0 3 * * *"}]}},
        api={
            "tokens": [
                {"name": "admin", "token": ADMIN, "scopes": ["*"]},
                {"name": "ro", "token": READ_ONLY, "scopes": ["plugin:ro", "jobs:ro"]},
            ]
        },
    )
    client = Api(site.start())
    try:
        yield client
    finally:
        client.client.close()


def test_a_read_command_needs_only_plugin_ro_and_a_write_command_rw(api: Api) -> None:
    doc = api.ok("POST", "/plugin/reader/poll", READ_ONLY, 202, json={"payload": {"url": "https://x"}})
    assert api.job_done(doc["job_id"])["job"]["status"] == "succeeded"
    refused = api.call("POST", "/plugin/reader/sync", READ_ONLY, json={"payload": {"target": "t"}})
    assert refused.status_code == 403
    assert "plugin:rw:reader" in refused.json()["detail"]
    api.ok("POST", "/plugin/reader/sync", ADMIN, 202, json={"payload": {"target": "t"}})


def test_a_payload_that_breaks_the_input_schema_is_refused_with_what_is_wrong(api: Api) -> None:
    for payload, problem in (
        ({}, "payload.url: is required"),
        ({"url": "ftp://x"}, "payload.url: does not match the pattern"),
        ({"url": "https://x", "limit": 0}, "payload.limit: 0, under the minimum 1"),
    ):
        answer = api.call("POST", "/plugin/reader/poll", json={"payload": payload})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "invalid payload"
        assert problem in answer.json()["detail"]
    compact = api.call("POST", "/plugin/reader/sync", json={"payload": {"target": 3}})
    assert compact.status_code == 422
    assert "payload.target: must be string, not integer" in compact.json()["detail"]
    # nothing refused was queued (the schedules may have queued their own polls)
    assert [j for j in api.ok("GET", "/jobs")["jobs"] if j["submitted_by"] == "api"] == []


def test_pause_and_resume_a_plugin_or_one_schedule(api: Api) -> None:
    schedules = {s["id"]: s for s in api.ok("GET", "/plugin/reader")["schedules"]}
    assert set(schedules) == {"hourly", "nightly"}
    assert all(s["scheduled"] and not s["paused"] and s["next_run_at"] for s in schedules.values())

    paused = api.ok("POST", "/plugin/reader/pause", params={"schedule": "nightly"})
    expected = {"plugin": "reader", "schedule": "nightly", "changed": True, "paused": ["reader/nightly"]}
    assert paused == expected
    schedules = {s["id"]: s for s in api.ok("GET", "/plugin/reader")["schedules"]}
    assert (schedules["nightly"]["paused"], schedules["hourly"]["paused"]) == (True, False)

    assert api.ok("POST", "/plugin/reader/pause")["changed"] is True
    assert api.ok("POST", "/plugin/reader/pause")["changed"] is False
    plugin = api.ok("GET", "/plugin/reader")
    assert plugin["paused"] is True
    assert all(s["paused"] for s in plugin["schedules"])

    resumed = api.ok("POST", "/plugin/reader/resume")
    assert resumed["changed"] is True
    assert resumed["paused"] == ["reader/nightly"]
    assert api.ok("POST", "/plugin/reader/resume", params={"schedule": "nightly"})["paused"] == []


def test_pause_refusals(api: Api) -> None:
    assert api.call("POST", "/plugin/nope/pause").status_code == 404
    missing = api.call("POST", "/plugin/reader/pause", params={"schedule": "weekly"})
    assert missing.status_code == 404
    assert "its schedules: hourly, nightly" in missing.json()["detail"]
    assert api.call("POST", "/plugin/reader/pause", READ_ONLY).status_code == 403
    assert api.call("POST", "/plugin/reader/pause", params={"bogus": "1"}).status_code == 400


def test_ductile_run_checks_the_input_schema_too_and_queues_nothing(api: Api, site: Site) -> None:
    refused = site.cli("run", "reader", "--payload", '{"url": 5}')
    assert refused.returncode == 1
    assert "payload.url: must be string, not integer" in refused.stderr
    assert "Traceback" not in refused.stderr
    queued = site.cli("run", "reader", "--payload", '{"url": "https://x"}')
    assert queued.returncode == 0, queued.stderr
    assert [
        j["submitted_by"] for j in api.ok("GET", "/jobs")["jobs"] if j["submitted_by"] != "scheduler"
    ] == ["cli"]


def test_get_schedule_lists_every_run_in_the_range_not_only_the_next(api: Api) -> None:
    """The schedule index stores each schedule's next run; GET /schedule projects the rest
    from it, as ``ductile schedule`` and the dashboard do."""
    doc = api.ok("GET", "/schedule", params={"from": "now", "to": "+6h"})
    hourly = [r for r in doc["runs"] if r["schedule"] == "reader/hourly"]
    assert len(hourly) in (5, 6), hourly  # every hour for 6 hours, from wherever the grid starts
    assert hourly[0]["kind"] in ("planned", "not_yet_planned")
    assert {r["kind"] for r in hourly[1:]} == {"projected"}
    times = [r["planned_at"] for r in hourly]
    assert times == sorted(times)
    assert doc["cut"] == []
