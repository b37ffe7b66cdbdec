"""The real daemon (``ductile start``) as a subprocess: intake and what it reports.

Signed webhooks become jobs whose events fan out along routes (D8, D11, D15);
bad deliveries leave nothing behind; ``/healthz`` carries real figures (D20);
``ductile run --wait`` is noticed within a second; plugin stderr is logged
(D18). The lifecycle (crash recovery, one instance, SIGTERM, the breaker) is
in ``test_daemon_lifecycle.py``, reloads in ``test_daemon_reload.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime

from tests.support.plugins import gated, python_plugin, recorder
from tests.support.site import SECRET, Site, log_match, requests_of, signature, wait_until

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- webhook -> job -> routes

#: Plugin "a": records its request and emits one event "x" carrying the webhook's payload.
EMITTER = """
import json, sys

request = json.load(sys.stdin)
with open({out!r} + "/a.requests", "a") as f:
    f.write(json.dumps(request) + "\\n")
event = {{"type": "x", "payload": {{"got": request["event"]["payload"], "n": 7}}}}
print(json.dumps({{"status": "ok", "events": [event]}}))
"""


def test_a_signed_webhook_runs_its_plugin_and_each_route_exactly_once(site: Site) -> None:
    site.plugin("a", python_plugin(EMITTER.format(out=str(site.out))), commands=["handle"])
    site.plugin("b", recorder(site, "b"), commands=["handle"])
    site.plugin("c", recorder(site, "c"), commands=["handle"])
    site.write_config(
        routes=[{"from": "a", "event_type": "x", "to": "b"}, {"from": "a", "event_type": "x", "to": "c"}],
        endpoints=[{"path": "/hook/a", "plugin": "a", "secret": SECRET, "event_type": "push"}],
    )
    daemon = site.start()
    payload = {"ref": "main", "commits": [{"id": 1, "message": "fix ünïcode"}], "n": None}
    body = json.dumps(payload).encode()

    response = daemon.post(
        "/hook/a", body, {"X-Hub-Signature-256": signature(body), "Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    for name in ("b", "c"):
        daemon.wait_for_log(log_match("handle succeeded", plugin=name), 15, f"the routed job of {name}")
    # Children are committed with their parent's completion: once the queue is empty, nothing more comes.
    wait_until(lambda: not site.cli_json("queue")["jobs"], 10, "an empty queue")
    assert site.query("SELECT plugin, status FROM jobs ORDER BY plugin") == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "succeeded"),
    ]

    (a_request,) = requests_of(site, "a")
    assert a_request["job_id"] == job_id, "the 202 names the job the plugin received"
    assert a_request["command"] == "handle"
    assert a_request["event"]["type"] == "push"
    assert a_request["event"]["payload"] == payload, "the webhook body reaches the plugin with its shape"
    assert a_request["event"]["headers"]["content-type"] == "application/json"

    (b_request,) = requests_of(site, "b")  # exactly one run each
    (c_request,) = requests_of(site, "c")
    assert b_request["job_id"] != c_request["job_id"]
    for request in (b_request, c_request):
        event = request["event"]
        assert request["command"] == "handle"
        assert event["type"] == "x"
        assert event["payload"] == {"got": payload, "n": 7}
        assert event["source"] == "a"
        assert UUID.match(event["event_id"]), event
        assert instant(event["timestamp"]).tzinfo is not None
    assert b_request["event"]["event_id"] == c_request["event"]["event_id"], "one event, fanned out"

    child = site.job(b_request["job_id"])["job"]
    assert child["parent_job_id"] == job_id
    assert child["source_event_id"] == b_request["event"]["event_id"]
    assert child["submitted_by"] == "route"


# --------------------------------------------------------------------------- refused deliveries


def test_bad_signatures_and_oversize_bodies_are_refused_and_enqueue_nothing(site: Site) -> None:
    site.plugin("a", recorder(site, "a"), commands=["handle"])
    site.write_config(
        endpoints=[{"path": "/hook/a", "plugin": "a", "secret": SECRET, "max_body_size": "1KB"}],
    )
    daemon = site.start()
    body = b'{"hello": "world"}'
    big = json.dumps({"pad": "x" * 2000}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must be found while streaming
        for _ in range(8):
            yield b" " * 512

    answers = {
        "wrong secret": daemon.post("/hook/a", body, {"X-Hub-Signature-256": signature(body, "not-it")}),
        "no signature": daemon.post("/hook/a", body),
        "garbage signature": daemon.post("/hook/a", body, {"X-Hub-Signature-256": b"sha256=zz\xff"}),
        "signed another body": daemon.post("/hook/a", body, {"X-Hub-Signature-256": signature(b"{}")}),
        "declared oversize": daemon.post("/hook/a", big, {"X-Hub-Signature-256": signature(big)}),
        "streamed oversize": daemon.post(
            "/hook/a", chunks(), {"X-Hub-Signature-256": signature(b" " * 4096)}
        ),
    }

    codes = {what: r.status_code for what, r in answers.items()}
    assert codes == {
        "wrong secret": 403,
        "no signature": 403,
        "garbage signature": 403,
        "signed another body": 403,
        "declared oversize": 413,
        "streamed oversize": 413,
    }
    assert answers["wrong secret"].json() == {"error": "forbidden"}, "a 403 carries no detail"
    assert site.cli_json("queue") == {"jobs": []}
    assert site.query("SELECT COUNT(*) FROM jobs") == [(0,)]
    assert not daemon.logs(log_match(component="intake"))
    refused = log_match("webhook refused", level="info", component="http", plugin="a")
    daemon.wait_for_log(refused, 5, "one warning per refusal", count=len(answers))

    # The same counting sees a good delivery: the checks above could have failed.
    good = daemon.post("/hook/a", body, {"X-Hub-Signature-256": signature(body)})
    assert good.status_code == 202
    assert site.query("SELECT id FROM jobs") == [(good.json()["job_id"],)]
    daemon.wait_for_log(log_match("handle succeeded", plugin="a"), 10, "the good delivery's job")
    assert len(requests_of(site, "a")) == 1


# --------------------------------------------------------------------------- /healthz


def test_healthz_reports_the_real_queue_depth_and_plugin_count(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"), commands=["poll"])
    site.plugin("quick", recorder(site, "quick"), commands=["poll"])
    site.write_config(endpoints=[])
    daemon = site.start()
    first = daemon.health()
    assert first["status"] == "ok"
    assert first["queue_depth"] == 0
    assert first["plugins_loaded"] == 2 == len(site.cli_json("plugins")["loaded"])
    assert first["plugins_circuit_open"] == 0

    slow = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 10, "the slow job to start")
    queued = [site.run_job("quick") for _ in range(3)]
    listed = site.cli_json("queue")["jobs"]
    health = daemon.health()

    assert [(j["id"], j["status"]) for j in listed] == [(slow, "running")] + [(q, "queued") for q in queued]
    assert health["queue_depth"] == 3 == sum(j["status"] == "queued" for j in listed)
    assert health["plugins_loaded"] == 2
    assert health["uptime_seconds"] >= first["uptime_seconds"] > 0

    site.release()
    wait_until(lambda: len(site.runs("quick")) == 3, 15, "the queued jobs to run")
    wait_until(lambda: daemon.health()["queue_depth"] == 0, 5, "queue_depth back to 0")


# --------------------------------------------------------------------------- ductile run --wait


def test_run_wait_against_the_running_daemon_returns_within_about_a_second(site: Site) -> None:
    site.plugin("quick", recorder(site, "quick"), commands=["poll"])
    site.write_config()
    site.start()

    began = time.monotonic()
    done = site.cli("run", "quick", "--wait", "--timeout", "20", "--json")
    elapsed = time.monotonic() - began

    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["outcome"]["status"] == "succeeded"
    job = site.job(doc["job_id"])["job"]
    picked_up = (instant(job["started_at"]) - instant(job["created_at"])).total_seconds()
    # The dispatcher waits at most 1 s before it looks at the store again.
    assert picked_up < 1.5, f"the daemon noticed another process's enqueue after {picked_up:.2f}s"
    # One CLI start-up (~0.6 s here), the pick-up (<= 1 s) and the CLI's polling back-off.
    assert elapsed < 4.0, f"ductile run --wait took {elapsed:.2f}s"
    assert [run[0] for run in site.runs("quick")] == [doc["job_id"]]


# --------------------------------------------------------------------------- plugin stderr (D18)


def test_plugin_stderr_is_logged_tagged_with_the_plugin_at_info_unless_the_job_failed(site: Site) -> None:
    site.plugin(
        "noisy",
        recorder(site, "noisy", before="echo 'disk nearly full: 97% ünïcode' >&2; echo 'second line' >&2"),
        commands=["poll"],
    )
    site.plugin(
        "failing",
        recorder(site, "failing", before="echo 'cannot reach the API' >&2", exit_code=3),
        commands=["poll"],
    )
    site.write_config({"failing": {"retry": {"max_attempts": 1}}})
    daemon = site.start()

    job_id = json.loads(site.cli_ok("run", "noisy", "--wait", "--timeout", "20", "--json"))["job_id"]

    line = daemon.wait_for_log(
        log_match("disk nearly full", component="plugin", plugin="noisy"), 5, "the stderr log line"
    )
    assert line["level"] == "info", "a successful run's stderr is diagnostics, not a warning"
    assert line["job_id"] == job_id
    assert line["stream"] == "stderr"
    assert "97% ünïcode" in line["message"]
    assert "second line" in line["message"]
    (run,) = site.job(job_id)["runs"]
    assert "disk nearly full" in run["stderr_tail"], "stderr is kept with the job too"

    site.cli("run", "failing", "--wait", "--timeout", "20")
    line = daemon.wait_for_log(
        log_match("cannot reach the API", component="plugin", plugin="failing"), 5, "the failed run's stderr"
    )
    assert line["level"] == "warn"
