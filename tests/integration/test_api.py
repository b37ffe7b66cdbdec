"""The operator API against the real daemon: real uvicorn on 127.0.0.1, real tokens.

Every route, every 401/403/404/409/422, scope narrowing, tokens by hash, a
token never in the log nor in an answer, the OpenAPI document listing exactly
the routes served, the Prometheus text parsed by the Prometheus parser, and the
reload report. The event stream's own tests are in ``test_api_events.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.plugins import recorder
from tests.support.site import SECRET, Daemon, Site, log_match, signature, wait_until

ADMIN = "admin-token-0123456789"
READER = "jobs-reader-token-0123"
FEEDS = "feeds-only-token-01234"
HASHED = "hashed-metrics-token-01"
NOBODY = "no-such-token-000000000"
TOKENS = [
    {"name": "admin", "token": ADMIN, "scopes": ["*"]},
    {"name": "reader", "token": READER, "scopes": ["jobs:ro", "events:ro"]},
    {"name": "feeder", "token": FEEDS, "scopes": ["plugin:rw:feeds", "jobs:ro"]},
    {
        "name": "grafana",
        "token_sha256": hashlib.sha256(HASHED.encode()).hexdigest(),
        "scopes": ["metrics:ro"],
    },
]
WAIT = 15.0


class Api:
    def __init__(self, daemon: Daemon) -> None:
        assert daemon.api_port is not None, "the daemon has no API listener"
        self.daemon = daemon
        self.url = f"http://127.0.0.1:{daemon.api_port}"
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def call(self, method: str, path: str, token: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, token: str = ADMIN, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, token, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        return response.json()

    def job_done(self, job_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            doc: dict[str, Any] = self.ok("GET", f"/job/{job_id}")
            return doc if doc["job"]["status"] in ("succeeded", "dead") else None

        return wait_until(finished, WAIT, f"job {job_id} to finish")


@pytest.fixture
def api(site: Site) -> Iterator[Api]:
    site.plugin("feeds", recorder(site, "feeds"))
    site.plugin("other", recorder(site, "other"))
    site.plugin(
        "broken",
        recorder(site, "broken", response='{"status": "error", "error": "token expired", "retry": false}'),
    )
    site.write_config(
        {"feeds": {"config": {"url": "http://x", "api_key": "sekrit-value"}}, "other": {}, "broken": {}},
        api={"tokens": TOKENS},
        endpoints=[{"path": "/hook/feeds", "plugin": "feeds", "secret": SECRET}],
    )
    client = Api(site.start())
    try:
        yield client
    finally:
        client.client.close()


def test_health_needs_no_token_and_everything_else_does(api: Api) -> None:
    assert api.ok("GET", "/healthz", token=None)["status"] == "ok"  # type: ignore[arg-type]
    for method, path in [("GET", "/jobs"), ("GET", "/openapi.json"), ("POST", "/plugin/feeds/poll"),
                         ("GET", "/metrics"), ("GET", "/events")]:  # fmt: skip
        for token in (None, NOBODY, "Ünïcode-tøken-0123456789"):
            headers = {} if token is None else {"Authorization": f"Bearer {token}".encode()}
            response = api.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"
        for header in (b"Bearer", b"Basic YWRtaW46YWRtaW4=", ADMIN.encode(), b"Bearer  x"):
            response = api.client.request(method, path, headers={"Authorization": header})
            assert response.status_code == 401, (method, path, header)


def test_a_token_without_the_scope_gets_403_naming_it(api: Api) -> None:
    response = api.call("POST", "/system/reload", READER)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "this token lacks the scope system:rw"}
    assert api.call("GET", "/metrics", READER).status_code == 403
    assert api.call("GET", "/jobs", HASHED).status_code == 403


def test_a_narrowed_plugin_scope_reaches_its_plugin_only(api: Api) -> None:
    assert api.call("POST", "/plugin/feeds/poll", FEEDS).status_code == 202
    refused = api.call("POST", "/plugin/other/poll", FEEDS)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "this token lacks the scope plugin:rw:other"
    assert api.call("GET", "/plugins", FEEDS).status_code == 403  # about every plugin: not narrowed
    assert api.call("GET", "/plugin/feeds", FEEDS).status_code == 200  # rw implies ro


def test_a_token_given_by_its_hash_works(api: Api) -> None:
    assert api.call("GET", "/metrics", HASHED).status_code == 200


def test_trigger_queues_through_intake_and_dedupes(api: Api) -> None:
    doc = api.ok("POST", "/plugin/feeds/handle", status=202, json={"payload": {"n": 1}, "dedupe_key": "k1"})
    assert doc["plugin"] == "feeds"
    assert doc["command"] == "handle"
    assert doc["deduplicated"] is False
    done = api.job_done(doc["job_id"])
    # D1: a success blocks its identity within dedupe_ttl: the same key gives the same job.
    again = api.ok("POST", "/plugin/feeds/handle", status=202, json={"payload": {"n": 2}, "dedupe_key": "k1"})
    assert again["deduplicated"] is True
    assert again["job_id"] == doc["job_id"]
    assert done["job"]["submitted_by"] == "api"
    event = done["job"]["payload"]
    assert event["type"] == "api.trigger"
    assert event["payload"] == {"n": 1}
    assert event["source"] == "api"


def test_trigger_refusals(api: Api) -> None:
    assert api.call("POST", "/plugin/nope/poll").status_code == 404
    for own in ("init", "health"):
        assert api.call("POST", f"/plugin/feeds/{own}").status_code == 422
    unknown = api.call("POST", "/plugin/feeds/frobnicate")
    assert unknown.status_code == 422
    assert "does not support" in unknown.json()["detail"]
    for body in (b"[1]", b'{"payload": 3}', b'{"extra": 1}', b'{"dedupe_key": ""}'):
        assert api.call("POST", "/plugin/feeds/poll", content=body).status_code == 422, body
    assert api.call("POST", "/plugin/feeds/poll", content=b"{nope").status_code == 400
    huge = b'{"payload": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
    assert api.call("POST", "/plugin/feeds/poll", content=huge).status_code == 413
    assert api.call("GET", "/plugin/feeds/poll").status_code == 405
    assert api.call("GET", "/nowhere").status_code == 404


def test_jobs_filters_paging_and_prefixes(api: Api) -> None:
    ids = [api.ok("POST", "/plugin/other/poll", status=202)["job_id"]]
    for _ in ids:
        api.job_done(ids[0])
    dead = api.ok("POST", "/plugin/broken/poll", status=202)["job_id"]
    assert api.job_done(dead)["job"]["status"] == "dead"
    listed = api.ok("GET", "/jobs", params={"status": "dead"})
    assert [j["id"] for j in listed["jobs"]] == [dead]
    assert [j["id"] for j in api.ok("GET", "/jobs", params={"q": "TOKEN EXPIRED"})["jobs"]] == [dead]
    assert api.ok("GET", "/jobs", params={"plugin": "other", "since": "1h"})["jobs"][0]["id"] == ids[0]
    page = api.ok("GET", "/jobs", params={"limit": 1})
    assert len(page["jobs"]) == 1
    assert page["next_cursor"]
    rest = api.ok("GET", "/jobs", params={"limit": 1, "cursor": page["next_cursor"]})
    assert rest["jobs"][0]["id"] != page["jobs"][0]["id"]
    assert api.ok("GET", f"/job/{dead[:8]}")["job"]["id"] == dead
    assert api.call("GET", f"/job/{dead[:7]}").status_code == 404  # too short for a prefix
    for bad in ({"status": "nope"}, {"limit": "0"}, {"limit": "501"}, {"since": "yesterday"},
                {"cursor": "!!"}, {"bogus": "1"}):  # fmt: skip
        assert api.call("GET", "/jobs", params=bad).status_code == 400, bad


def test_retry_and_cancel(api: Api, site: Site) -> None:
    dead = api.ok("POST", "/plugin/broken/poll", status=202)["job_id"]
    api.job_done(dead)
    retried = api.ok("POST", f"/job/{dead}/retry", status=202)
    assert retried["retry_of"] == dead
    again = api.job_done(retried["job_id"])
    assert again["job"]["retry_of"] == dead
    assert again["job"]["attempt"] == 1
    assert api.call("POST", f"/job/{dead}/cancel").status_code == 409  # not queued
    assert api.call("POST", "/job/00000000-no-such-job/cancel").status_code == 404
    # A queued job: the daemon is stopped, so nothing claims it.
    site.daemons[-1].terminate()
    queued = site.run_job("other")
    api2 = Api(site.start())
    try:
        # (the restarted daemon may already have claimed it: then 409 is the right answer)
        response = api2.call("POST", f"/job/{queued}/cancel", READER)
        assert response.status_code == 403
        response = api2.call("POST", f"/job/{queued}/cancel")
        if response.status_code == 200:
            assert response.json()["job"]["last_error"] == "cancelled by admin"
        else:
            assert response.status_code == 409
        running_or_done = api2.ok("POST", "/plugin/other/poll", status=202)["job_id"]
        api2.job_done(running_or_done)
        assert api2.call("POST", f"/job/{running_or_done}/retry", READER).status_code == 403
    finally:
        api2.client.close()


def test_plugins_and_plugin(api: Api) -> None:
    doc = api.ok("GET", "/plugins")
    assert [p["name"] for p in doc["loaded"]] == ["broken", "feeds", "other"]
    feeds = api.ok("GET", "/plugin/feeds")
    assert feeds["config"] == {"url": "http://x", "api_key": "********"}
    assert feeds["manifest"]["commands"] == ["handle", "poll"]
    assert "sekrit-value" not in json.dumps(feeds)
    assert api.call("GET", "/plugin/nope").status_code == 404


def test_reset_and_schedule(api: Api) -> None:
    assert api.ok("POST", "/plugin/feeds/reset") == {"plugin": "feeds", "reset": []}
    assert api.call("POST", "/plugin/nope/reset").status_code == 404
    doc = api.ok("GET", "/schedule", params={"from": "now", "to": "+1d"})
    assert doc["runs"] == []
    assert api.call("GET", "/schedule", params={"from": "+1h", "to": "now"}).status_code == 400


def test_reload_reports_changes_and_refusals(api: Api, site: Site) -> None:
    config = dict(site.config)
    config["plugins"] = {**config["plugins"], "other": {"retry": {"max_attempts": 2}}}
    site.config_path.write_text(json.dumps(config))
    doc = api.ok("POST", "/system/reload")
    assert doc["reloaded"] is True
    assert doc["changed"] == ["other"]
    site.config_path.write_text(json.dumps({**config, "surprise": 1}))
    refused = api.call("POST", "/system/reload")
    assert refused.status_code == 422
    assert "surprise" in refused.json()["detail"]
    assert api.call("GET", "/plugins").status_code == 200  # the old config still serves


def test_metrics_parse_with_the_prometheus_parser(api: Api) -> None:
    job = api.ok("POST", "/plugin/other/poll", status=202)["job_id"]
    api.job_done(job)
    body = b'{"n": 1}'
    assert api.daemon.post("/hook/feeds", body, {"X-Hub-Signature-256": signature(body)}).status_code == 202
    assert api.daemon.post("/hook/feeds", body, {"X-Hub-Signature-256": "sha256=00"}).status_code == 403

    def families() -> dict[str, Any] | None:
        text = api.call("GET", "/metrics").text
        found = {f.name: f for f in text_string_to_metric_families(text)}
        runs = found.get("ductile_job_runs")
        ok = runs is not None and any(s.labels.get("plugin") == "other" for s in runs.samples)
        return found if ok else None

    found = wait_until(families, WAIT, "the run to be counted")
    expected = (
        "ductile_queue_depth",
        "ductile_oldest_queued_age_seconds",
        "ductile_run_duration_seconds",
        "ductile_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
        "ductile_plugins_loaded",
    )
    for name in expected:
        assert name in found, name
    loaded = found["ductile_plugins_loaded"].samples[0].value
    assert loaded == 3
    hooks = {
        s.labels["status"]: s.value
        for s in found["ductile_webhook_requests"].samples
        if s.name.endswith("_total")
    }
    assert hooks == {"202": 1.0, "403": 1.0}


def test_openapi_lists_exactly_the_routes_served(api: Api) -> None:
    from ductile.app.api import OPS

    doc = api.ok("GET", "/openapi.json", READER)
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(op.path, op.method) for op in OPS} | {("/healthz", "GET"), ("/openapi.json", "GET")}
    assert documented == served
    # ... and the running app serves each of them: the router never answers 404 or 405 for one
    # (a handler may answer 404 for an unknown job: its detail says so).
    for path, method in sorted(served - {("/events", "GET")}):
        concrete = path.replace("{plugin}", "feeds").replace("{command}", "poll").replace("{job_id}", "x" * 8)
        response = api.call(method, concrete)
        assert response.status_code != 405, (method, path)
        if response.status_code == 404:
            assert response.json()["detail"].startswith("no job"), (method, path, response.text)


def test_no_token_ever_reaches_the_log_or_an_answer(api: Api) -> None:
    for token in (ADMIN, READER, FEEDS, HASHED, NOBODY):
        api.call("GET", "/jobs", token)
        api.call("GET", "/plugin/feeds", token)
    daemon = api.daemon
    daemon.wait_for_log(log_match("GET /plugin/feeds", component="api"), WAIT, "the call log")
    text = "\n".join(json.dumps(line) for line in daemon.snapshot())
    for token in (ADMIN, READER, FEEDS, HASHED, NOBODY):
        assert token not in text
    assert daemon.logs(log_match("GET /jobs -> 200", component="api"))[0]["token"] == "admin"
    assert daemon.logs(log_match("GET /jobs -> 401", component="api"))[0]["token"] is None


def test_one_server_serves_both_when_the_addresses_are_the_same(site: Site) -> None:
    import socket

    with socket.socket() as probe:  # a free port, named in the config (port 0 never counts as shared)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site.plugin("feeds", recorder(site, "feeds"))
    config = site.write_config(
        {"feeds": {}},
        api={"tokens": TOKENS},
        endpoints=[{"path": "/hook/feeds", "plugin": "feeds", "secret": SECRET}],
    )
    config["webhooks"]["listen"] = config["api"]["listen"] = f"127.0.0.1:{port}"
    site.config_path.write_text(json.dumps(config))
    daemon = site.start()
    listening = daemon.logs(log_match("listening", component="http", exact=True))
    assert [line["listener"] for line in listening] == ["webhooks+api"]
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/jobs", headers={"Authorization": f"Bearer {READER}"}).status_code == 200
    body = b'{"via": "shared"}'
    hook = httpx.post(base + "/hook/feeds", content=body, headers={"X-Hub-Signature-256": signature(body)})
    assert hook.status_code == 202
    assert httpx.get(base + "/healthz").json()["status"] == "ok"
    assert httpx.post(base + "/hook/nowhere", content=b"{}").status_code == 404
