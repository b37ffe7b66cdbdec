"""The dashboard over plain HTTP against the real daemon: sign-in, the session cookie, scopes,
CSRF, status codes, and hostile plugin output shown as text (the browser tests are in
``tests/browser/``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.dashboard import ADMIN, HOSTILE, VIEWER, Browserless, dashboard_site
from tests.support.site import Site, wait_until


@pytest.fixture
def ui(site: Site) -> Iterator[Browserless]:
    daemon = dashboard_site(site)
    client = Browserless(daemon)
    try:
        yield client
    finally:
        client.close()


def test_sign_in_sets_a_strict_httponly_cookie_and_a_wrong_token_is_refused(ui: Browserless) -> None:
    anonymous = Browserless.__new__(Browserless)
    anonymous.client = ui.client.__class__(base_url=ui.url, timeout=10.0)
    try:
        first = anonymous.client.get("/ui/jobs?status=dead")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=/ui/jobs%3Fstatus%3Ddead"
        refused = anonymous.client.post("/ui/login", data={"token": "nope-nope-nope"})
        assert refused.status_code == 401
        assert "unknown token" in refused.text
        assert "set-cookie" not in refused.headers
        signed = anonymous.client.post("/ui/login", data={"token": VIEWER, "next": "https://evil.example/"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/ui/"  # never off to another site
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/ui" in cookie
        assert VIEWER.lower() not in cookie  # the token itself never goes to the browser
        assert anonymous.client.get("/ui/").status_code == 200
    finally:
        anonymous.client.close()


def test_every_page_renders_with_its_security_headers(ui: Browserless) -> None:
    job = ui.trigger("feeds")
    ui.wait_status(job, "succeeded")
    for path in ("/ui/", "/ui/jobs", f"/ui/job/{job}", f"/ui/job/{job[:10]}", "/ui/plugins",
                 "/ui/plugin/feeds", "/ui/schedule?hours=72"):  # fmt: skip
        response = ui.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    schedule = ui.get("/ui/schedule", params={"hours": "72"}).text
    runs = re.findall(r'<tr><td><a href="/ui/plugin/digest">', schedule)
    assert 23 <= len(runs) <= 25  # every 3 h for 72 h: the stored plan, then the projected grid
    assert "projected" in schedule
    assert ui.get("/ui/job/0000000000000").status_code == 404
    assert ui.get("/ui/plugin/nosuch").status_code == 404
    assert ui.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")
    assert ui.get("/ui/static/../app.py").status_code == 404


def test_the_job_list_filters_and_reports_a_bad_filter(ui: Browserless) -> None:
    good, bad = ui.trigger("feeds"), ui.trigger("broken")
    ui.wait_status(good, "succeeded")
    ui.wait_status(bad, "dead")
    dead = ui.get("/ui/jobs", params={"status": "dead", "plugin": "", "q": "upstream"}).text
    assert bad[:8] in dead
    assert good[:8] not in dead
    everything = ui.get("/ui/jobs").text
    assert good[:8] in everything
    assert bad[:8] in everything
    wrong = ui.get("/ui/jobs", params={"since": "yesterday-ish"})
    assert wrong.status_code == 400
    assert "since: expected an ISO-8601 time" in wrong.text


def test_hostile_plugin_output_is_shown_as_text(ui: Browserless) -> None:
    job, dead = ui.trigger("hostile"), ui.trigger("broken")
    ui.wait_status(job, "succeeded")
    ui.wait_status(dead, "dead")
    for path in (f"/ui/job/{job}", f"/ui/job/{dead}", "/ui/plugin/hostile"):
        page = ui.get(path).text
        assert "<script>window.pwned" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page, path
    plugins = ui.get("/ui/plugins").text
    assert 'aria-label="1 of the last 1 runs succeeded"' in plugins  # hostile
    assert 'aria-label="0 of the last 1 runs succeeded"' in plugins  # broken
    assert "no run yet" in plugins  # feeds and slow (digest may have run on its own schedule)
    download = ui.get(f"/ui/job/{job}/run/1/stderr")
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["content-disposition"].startswith("attachment")
    assert HOSTILE in download.text


def test_actions_need_the_scope_and_the_csrf_token(ui: Browserless, site: Site) -> None:
    job = ui.trigger("broken")
    ui.wait_status(job, "dead")
    viewer = Browserless(site.daemons[-1], VIEWER)
    try:
        page = viewer.get(f"/ui/job/{job}").text
        assert 'id="retry"' not in page
        forbidden = viewer.post(f"/ui/job/{job}/retry", {"csrf": viewer.csrf()})
        assert forbidden.status_code == 403
        assert "jobs:rw" in forbidden.text
    finally:
        viewer.close()
    assert 'id="retry"' in ui.get(f"/ui/job/{job}").text
    assert ui.post(f"/ui/job/{job}/retry").status_code == 403  # no CSRF token
    assert ui.post(f"/ui/job/{job}/retry", {"csrf": "forged"}).status_code == 403
    retried = ui.post(f"/ui/job/{job}/retry", {"csrf": ui.csrf()})
    assert retried.status_code == 303
    new_id = retried.headers["location"].rsplit("/", 1)[1]
    assert ui.job(new_id)["job"]["retry_of"] == job


def test_run_now_queues_through_intake_and_bad_json_is_refused(ui: Browserless) -> None:
    token = ui.csrf("/ui/plugin/feeds")
    queued = ui.post("/ui/plugin/feeds/run/handle", {"csrf": token, "payload": '{"n": 7}'})
    assert queued.status_code == 303
    job_id = queued.headers["location"].rsplit("/", 1)[1]
    done = ui.wait_status(job_id, "succeeded")
    assert done["job"]["submitted_by"] == "api"
    assert done["job"]["payload"]["payload"] == {"n": 7}
    refused = ui.post("/ui/plugin/feeds/run/handle", {"csrf": token, "payload": "{not json"})
    assert refused.status_code == 422
    assert "not JSON" in refused.text
    assert ui.post("/ui/plugin/feeds/run/init", {"csrf": token}).status_code == 422


def test_cancel_reset_reload_and_sign_out(ui: Browserless, site: Site) -> None:
    running = ui.trigger("slow")
    ui.wait_status(running, "running")
    queued = ui.trigger("slow", "handle")
    token = ui.csrf()
    assert 'id="cancel"' in ui.get(f"/ui/job/{queued}").text
    assert ui.post(f"/ui/job/{queued}/cancel", {"csrf": token}).status_code == 303
    assert ui.job(queued)["job"]["last_error"] == "cancelled by admin"
    site.release()
    assert ui.post("/ui/plugin/broken/reset", {"csrf": token}).status_code == 303
    reloaded = ui.post("/ui/reload", {"csrf": token})
    assert reloaded.status_code == 200
    assert "Reloaded" in reloaded.text
    site.config_path.write_text("plugins: [oops\n")
    rejected = ui.post("/ui/reload", {"csrf": token})
    assert rejected.status_code == 422
    assert "old one stays" in rejected.text
    assert ui.post("/ui/logout", {"csrf": token}).status_code == 303
    assert ui.get("/ui/").status_code == 303


def test_a_session_ends_when_its_token_leaves_the_config(ui: Browserless, site: Site) -> None:
    assert ui.get("/ui/").status_code == 200
    config = dict(site.config)
    config["api"] = {**config["api"], "tokens": [t for t in config["api"]["tokens"] if t["name"] != "admin"]}
    site.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    response = ui.client.post("/system/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    assert ui.get("/ui/").status_code == 303
    assert re.search("Sign in", ui.get("/ui/login").text)


def test_ui_enabled_false_turns_the_dashboard_off_at_a_reload(ui: Browserless, site: Site) -> None:
    assert ui.get("/ui/").status_code == 200
    site.config_path.write_text(yaml.safe_dump({**site.config, "ui": {"enabled": False}}, sort_keys=False))
    response = ui.client.post("/system/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    for path in ("/ui/", "/ui/login", "/ui/static/ui.js"):
        assert ui.get(path).status_code == 404, path
    assert ui.client.get("/jobs", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_the_forecast_refuses_bad_input_and_reloads_itself_while_it_runs(ui: Browserless) -> None:
    assert "No forecast yet" in ui.get("/ui/forecast").text
    token = ui.csrf("/ui/forecast")
    assert ui.post("/ui/forecast", {"csrf": token, "days": "2000"}).status_code == 422
    assert ui.post("/ui/forecast", {"days": "1"}).status_code == 403  # no CSRF token
    assert ui.post("/ui/forecast", {"csrf": token, "days": "7"}).status_code == 303
    running = ui.get("/ui/forecast").text
    assert 'http-equiv="refresh"' in running  # reloads itself while it runs (finished: browser test)
    assert 'id="forecast-running"' in running


def _simulations_of(site: Site) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"simulate" in argv and str(site.config_path).encode() in argv:
                found.append(int(entry.name))
    return found


def test_a_stopping_daemon_stops_its_forecast(ui: Browserless, site: Site) -> None:
    assert ui.post("/ui/forecast", {"csrf": ui.csrf("/ui/forecast"), "days": "7"}).status_code == 303
    wait_until(lambda: _simulations_of(site), 15.0, "the simulation to start")
    assert site.daemons[-1].terminate() == 0
    wait_until(lambda: not _simulations_of(site), 10.0, "the simulation to be gone")


def test_pause_and_resume_a_schedule_or_the_whole_plugin(ui: Browserless, site: Site) -> None:
    token = ui.csrf("/ui/plugin/reader")
    paused = ui.post("/ui/plugin/reader/pause", {"csrf": token, "schedule": "nightly"})
    assert paused.status_code == 303
    page = ui.get("/ui/plugin/reader").text
    assert re.search(r"<td>nightly</td>.*?paused", page, re.S)
    assert "Resume nightly" in page
    assert "Pause hourly" in page
    schedule = ui.get("/ui/schedule").text
    mark = r'reader</a> <span class="hint">nightly</span> <span class="status s-failed">paused'
    assert re.search(mark, schedule)
    assert ui.post("/ui/plugin/reader/pause", {"csrf": token}).status_code == 303
    assert "Resume every schedule" in ui.get("/ui/plugin/reader").text
    assert ui.post("/ui/plugin/reader/resume", {"csrf": token}).status_code == 303
    assert ui.post("/ui/plugin/reader/resume", {"csrf": token, "schedule": "nightly"}).status_code == 303
    schedules = ui.get("/ui/plugin/reader").text.split('id="h-schedules"')[1].split("</section>")[0]
    assert "paused" not in schedules
    missing = ui.post("/ui/plugin/reader/pause", {"csrf": token, "schedule": "weekly"})
    assert missing.status_code == 404
    assert "no schedule &#39;weekly&#39;" in missing.text
    viewer = Browserless(site.daemons[-1], VIEWER)
    try:
        page = viewer.get("/ui/plugin/reader").text
        assert "Pause hourly" not in page
        assert viewer.post("/ui/plugin/reader/pause", {"csrf": viewer.csrf()}).status_code == 403
        # A read command runs with plugin:ro; a write command is not offered.
        assert "Run poll now" in page
        assert "Run sync now" not in page
    finally:
        viewer.close()


def test_the_schema_form_builds_the_payload_and_intake_checks_it(ui: Browserless) -> None:
    page = ui.get("/ui/plugin/reader").text
    assert 'name="field.url"' in page
    assert 'name="field.limit"' in page
    assert 'name="field.fresh"' in page
    token = ui.csrf("/ui/plugin/reader")
    queued = ui.post(
        "/ui/plugin/reader/run/poll",
        {"csrf": token, "field.url": "https://example.org/feed", "field.limit": "5", "field.fresh": "on"},
    )
    assert queued.status_code == 303, queued.text
    done = ui.wait_status(queued.headers["location"].rsplit("/", 1)[1], "succeeded")
    assert done["job"]["payload"] == {"url": "https://example.org/feed", "limit": 5, "fresh": True}
    refused = ui.post(
        "/ui/plugin/reader/run/poll", {"csrf": token, "field.url": "ftp://x", "field.limit": ""}
    )
    assert refused.status_code == 422
    assert "input_schema" in refused.text
    assert ui.post("/ui/plugin/reader/run/poll", {"csrf": token, "field.limit": "lots"}).status_code == 422


def test_a_plugin_page_shows_its_commands_with_types_and_schemas_and_its_facts(ui: Browserless) -> None:
    """Item 2: the manifest's commands with their types and schemas, and the facts of a plugin
    that declares fact_outputs (newest first)."""
    before = ui.get("/ui/plugin/reader").text
    assert "No facts yet." in before
    assert re.search(r"<td>poll</td><td>read</td>", before)
    assert re.search(r"<td>sync</td><td>write</td>", before)
    assert "^https?://" in before  # the poll command's input schema
    for target in ("first", "second"):
        response = ui.client.post(
            "/plugin/reader/sync",
            headers={"authorization": f"Bearer {ADMIN}"},
            json={"payload": {"target": target}},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        wait_until(lambda j=job_id: ui.job(j)["job"]["status"] == "succeeded", 20.0, "the sync to finish")
    page = ui.get("/ui/plugin/reader").text
    facts = page[page.index('id="facts"') :]
    assert "reader.snapshot" in facts
    assert facts.index("second") < facts.index("first")  # newest first
    assert "No facts yet." not in page
    assert "reader.snapshot" not in ui.get("/ui/plugin/feeds").text  # no section without fact_outputs
