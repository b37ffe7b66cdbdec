"""The command line for what protocol v2 brought: pause, resume, facts, custom commands,
several schedules, aliases, done one-shots and the route-depth count.

The same harness as ``test_cli.py``: a real config in ``tmp_path``, the
in-memory store, a fake clock; the verbs run in-process through ``main``.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest

from ductile.domain.classify import classify
from ductile.domain.job import SubmittedBy
from ductile.domain.schedule import EXHAUSTED, PlannedRun
from ductile.domain.settle import SettleContext
from ductile.fakes.spawner import ok
from ductile.ports.store_values import ROUTE_DEPTH_DROPS
from tests.support import builders
from tests.unit.test_cli import NOW, TTL, Harness, write_plugin

V2_MANIFEST = """\
manifest_spec: ductile.plugin
manifest_version: 1
name: feeds
version: 2.0.0
protocol: 2
entrypoint: run.sh
concurrency_safe: false
commands:
  - {name: poll, type: read}
  - {name: sync, type: write}
fact_outputs:
  - {when: {command: poll}, from: state_updates, fact_type: feeds.snapshot, compatibility_view: mirror_object}
"""

SCHEDULES = """\
plugins:
  feeds:
    schedules:
      - {id: morning, cron: "30 7 * * *", timezone: UTC}
      - {id: hourly, every: 1h, not_on: [sat, sun]}
      - {id: once, at: "2026-11-23T09:00:00Z", command: sync}
  check:
    uses: feeds
"""


@pytest.fixture
def h(tmp_path: object) -> Harness:
    harness = Harness(tmp_path)  # type: ignore[arg-type]
    folder = harness.plugins / "feeds-folder"
    write_plugin(harness.plugins, "feeds-folder")
    (folder / "manifest.yaml").write_text(V2_MANIFEST)
    harness.write_config(SCHEDULES)
    return harness


# --------------------------------------------------------------------------- pause and resume


def test_pause_and_resume_a_plugin_and_one_of_its_schedules(h: Harness) -> None:
    code, out, _ = h("pause", "feeds/hourly")
    assert code == 0
    assert out.startswith(
        "paused feeds/hourly: its due runs enqueue nothing until `ductile resume feeds/hourly`"
    )
    code, out, _ = h("pause", "feeds/hourly")
    assert out == "feeds/hourly was already paused\n"
    code, doc = h.json("pause", "feeds")
    assert doc == {"plugin": "feeds", "schedule": None, "changed": True, "paused": ["feeds", "feeds/hourly"]}
    code, out, _ = h("resume", "feeds")
    assert out.splitlines() == [
        "resumed feeds (all its schedules): its next planned run goes as usual",
        "still paused: feeds/hourly",
    ]
    code, doc = h.json("resume", "feeds/hourly")
    assert (doc["changed"], doc["paused"]) == (True, [])
    code, out, _ = h("resume", "feeds/hourly")
    assert (code, out) == (0, "feeds/hourly was not paused\n")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ghost", "no plugin named 'ghost'"),
        ("feeds/weekly", "plugin 'feeds' has no schedule 'weekly' (its schedules: morning, hourly, once)"),
        ("feeds/", "expected <plugin> or <plugin>/<schedule-id>"),
        ("/hourly", "expected <plugin> or <plugin>/<schedule-id>"),
    ],
)
def test_pause_refuses_what_is_not_there(h: Harness, target: str, message: str) -> None:
    code, out, err = h("pause", target)
    assert (code, out) == (2, "")
    assert message in err
    assert asyncio.run(h.store.pauses()) == []


def test_resume_without_a_database_creates_none(h: Harness) -> None:
    h.db_exists = False
    code, out, _ = h("resume", "feeds")
    assert (code, out) == (0, "feeds was not paused\n")
    assert h.opened == [False]


def test_plugins_and_schedule_show_pauses_and_every_schedule(h: Harness) -> None:
    asyncio.run(h.store.pause("feeds", "hourly", now=NOW))
    _, doc = h.json("plugins")
    feeds = next(p for p in doc["loaded"] if p["name"] == "feeds")
    assert (feeds["protocol"], feeds["concurrency_safe"], feeds["paused"]) == (2, False, False)
    assert [(s["id"], s["paused"]) for s in feeds["schedules"]] == [
        ("morning", False),
        ("hourly", True),
        ("once", False),
    ]
    check = next(p for p in doc["loaded"] if p["name"] == "check")
    assert (check["uses"], check["schedules"]) == ("feeds", [])
    _, out, _ = h("plugins")
    assert re.search(r"^  check \(uses feeds\)\s+2\.0\.0\s+poll,sync\s+-$", out, re.M)
    assert "hourly (paused): every 1h not sat,sun" in out
    _, doc = h.json("schedule", "--to", "+3h")
    runs = [(r["plugin"], r["schedule"], r["kind"], r["paused"]) for r in doc["runs"]]
    assert ("feeds", "hourly", "not_yet_planned", True) in runs
    assert ("feeds", "morning", "not_yet_planned", False) in runs
    assert ("feeds", "once", "not_yet_planned", False) in runs
    _, out, _ = h("schedule", "--to", "+3h")
    assert re.search(r"^feeds\s+hourly\s+.*not yet planned \(paused\)$", out, re.M)


def test_a_done_one_shot_is_listed_once_as_done(h: Harness) -> None:
    config_schedule = PlannedRun(
        key="feeds/once",
        fingerprint=_fingerprint(h, "once"),
        nominal_at=NOW + timedelta(hours=2),
        planned_at=EXHAUSTED,
        offset=timedelta(0),
    )
    asyncio.run(h.store.put_planned(config_schedule))
    _, doc = h.json("schedule", "--to", "+1d")
    assert doc["done"] == [
        {
            "plugin": "feeds",
            "schedule": "once",
            "nominal_at": "2026-11-23T09:00:00Z",
            "nominal_local": "2026-11-23T09:00:00+00:00",
        }
    ]
    assert all(r["schedule"] != "once" for r in doc["runs"])
    _, out, _ = h("schedule", "--to", "+1d")
    assert "done: feeds/once (a one-shot; it was due at 2026-11-23T09:00:00+00:00)" in out


def _fingerprint(h: Harness, schedule_id: str) -> str:
    from ductile.adapters.config import load_config

    schedule = load_config(h.config).plugin("feeds").schedule_by_id(schedule_id)
    assert schedule is not None
    return schedule.fingerprint()


# --------------------------------------------------------------------------- run


def test_run_queues_a_custom_command_with_a_payload(h: Harness) -> None:
    code, doc = h.json("run", "feeds", "--command", "sync", "--payload", '{"scope": "all"}')
    assert code == 0
    job = asyncio.run(h.store.get_job(doc["job_id"]))
    assert job is not None
    assert (job.command, job.payload, job.submitted_by) == ("sync", {"scope": "all"}, SubmittedBy.CLI)


def test_run_refuses_a_command_the_manifest_lacks_and_notes_a_payload_a_v1_plugin_will_not_see(
    h: Harness,
) -> None:
    code, _, err = h("run", "feeds", "--command", "frob")
    assert code == 1
    assert "does not support 'frob' (its manifest lists: poll, sync)" in err
    write_plugin(h.plugins, "old")
    code, _, err = h("run", "old", "--payload", '{"a": 1}')
    assert code == 0
    assert "plugin 'old' speaks protocol 1: the payload is kept with the job" in err


# --------------------------------------------------------------------------- facts, job, status


def test_facts_lists_a_plugins_facts_newest_first(h: Harness) -> None:
    rule_ctx = SettleContext(now=NOW + timedelta(seconds=2), fact=_rule())

    async def record(n: int) -> None:
        job = builders.job(f"f{n}", "feeds", "poll", created_at=NOW + timedelta(seconds=n))
        await h.store.enqueue(job, actor=job.submitted_by, now=job.created_at, dedupe_ttl=TTL)  # type: ignore[arg-type]
        claimed = await h.store.claim(job.id, job.created_at)
        assert claimed is not None
        end = classify(ok(state_updates={"n": n}, result=f"run {n}"))
        await h.store.settle(job.id, end, ctx=rule_ctx, dedupe_ttl=TTL, token=claimed.claim_token)

    asyncio.run(record(1))
    asyncio.run(record(2))
    _, doc = h.json("facts", "feeds")
    assert [(f["seq"], f["fact_type"], f["job_id"], f["body"]) for f in doc["facts"]] == [
        (2, "feeds.snapshot", "f2", {"n": 2}),
        (1, "feeds.snapshot", "f1", {"n": 1}),
    ]
    _, doc = h.json("facts", "feeds", "--limit", "1", "--type", "feeds.snapshot")
    assert [f["job_id"] for f in doc["facts"]] == ["f2"]
    _, out, _ = h("facts", "feeds")
    assert out.splitlines()[0].split() == ["SEQ", "AT", "TYPE", "JOB", "BODY"]
    assert re.search(r'^2\s+\S+\s+feeds\.snapshot\s+f2\s+\{"n":2\}$', out, re.M)
    _, out, _ = h("facts", "feeds", "--type", "nope")
    assert out == "no facts of type nope of feeds\n"
    _, out, _ = h("job", "f2")
    assert re.search(r"^\s+result\s+run 2$", out, re.M)
    _, doc = h.json("job", "f2")
    assert doc["runs"][0]["result"] == "run 2"


def _rule() -> object:
    from ductile.domain.plugin import FactOutput

    return FactOutput(command="poll", fact_type="feeds.snapshot")


def test_status_counts_the_events_a_routing_loop_dropped(h: Harness) -> None:
    h.store.tx.counters[ROUTE_DEPTH_DROPS] = 3
    _, doc = h.json("status", "--no-health")
    assert doc["routing"] == {"max_route_depth": 20, "dropped_at_depth": 3}
    _, out, _ = h("status", "--no-health")
    assert "routing: 3 event(s) not routed: their chain reached service.max_route_depth (20)" in out


def test_config_check_lists_every_schedule_by_id(h: Harness) -> None:
    code, doc = h.json("config", "check")
    assert [(s["plugin"], s["schedule"], s["problem"]) for s in doc["schedules"]] == [
        ("feeds", "morning", None),
        ("feeds", "hourly", None),
        ("feeds", "once", None),
    ]
    h.write_config("plugins:\n  feeds:\n    schedules:\n      - {id: x, every: 1h, command: frob}\n")
    code, doc = h.json("config", "check")
    assert code == 1
    assert doc["problems"] == ["plugins.feeds.schedules[0]: plugin 'feeds' does not support 'frob'"]
    assert json.dumps(doc)  # one document
