"""The dashboard in a real Chromium against the real daemon on 127.0.0.1.

Sign in with a token; watch a job run and succeed without a reload (the event
stream); find a dead job through the filters and read its stderr (as text:
the hostile markup it printed never runs); run a command from the form its input_schema generates; a
read-only token sees no retry button and gets 403 when it posts anyway, as
does a form without its CSRF token; the pages at a phone's width. Every wait
is a bounded wait on a condition in the page.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import ADMIN, VIEWER, Browserless, dashboard_site
from tests.support.site import Daemon, Site

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def daemon(site: Site) -> Daemon:
    return dashboard_site(site)


def sign_in(page: Page, daemon: Daemon, token: str = ADMIN, path: str = "/ui/") -> str:
    base = f"http://127.0.0.1:{daemon.api_port}"
    page.goto(base + path)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + path)
    return base


def test_a_job_runs_and_succeeds_on_the_overview_without_a_reload(
    page: Page, daemon: Daemon, site: Site, shots: Path
) -> None:
    sign_in(page, daemon)
    expect(page.locator("body")).to_have_attribute("data-live", "on")  # the event stream is open
    page.evaluate("window.__same_page = true")
    api = Browserless(daemon, token=None)
    try:
        job = api.trigger("slow")
        running = page.locator("#running").get_by_title(job)
        expect(running).to_be_visible()
        page.screenshot(path=shots / "overview.png", full_page=True)
        site.release()
        expect(page.locator("#recent").get_by_title(job)).to_be_visible()
        expect(page.locator("#running")).to_have_count(0)
    finally:
        api.close()
    assert page.evaluate("window.__same_page") is True  # updated in place, never reloaded


def test_a_dead_job_is_found_through_the_filters_with_its_stderr(
    page: Page, daemon: Daemon, shots: Path
) -> None:
    api = Browserless(daemon, token=None)
    try:
        ok, dead = api.trigger("feeds"), api.trigger("broken")
        api.wait_status(ok, "succeeded")
        api.wait_status(dead, "dead")
    finally:
        api.close()
    sign_in(page, daemon, path="/ui/jobs")
    page.get_by_label("Status").select_option("dead")
    page.get_by_label("Plugin").select_option("broken")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/ui/jobs?*status=dead*")
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(1)
    page.screenshot(path=shots / "jobs.png", full_page=True)
    rows.get_by_title(dead).click()
    stderr = page.locator("pre.stderr")
    expect(stderr).to_contain_text("<script>window.pwned=1</script>")
    assert page.evaluate("typeof window.pwned") == "undefined"
    expect(page.get_by_text("upstream said no").first).to_be_visible()
    page.screenshot(path=shots / "job.png", full_page=True)
    page.get_by_role("link", name="Plugins").click()
    row = page.locator("#plugins tr", has=page.get_by_role("link", name="broken", exact=True))
    expect(row.locator(".mark.s-dead")).to_have_count(1)
    page.screenshot(path=shots / "plugins.png", full_page=True)


def test_run_now_with_a_form_from_the_input_schema_creates_a_job(
    page: Page, daemon: Daemon, shots: Path
) -> None:
    sign_in(page, daemon, path="/ui/plugin/reader")
    page.get_by_label("url (required)").fill("https://example.org/feed")
    page.get_by_label("limit").fill("5")
    page.screenshot(path=shots / "plugin.png", full_page=True)
    page.get_by_role("button", name="Run poll now").click()
    page.wait_for_url("**/ui/job/*")
    expect(page.locator("h1 .status")).to_have_text("succeeded")  # live: queued, then succeeded
    expect(page.locator("#h-event")).to_have_text("Payload")
    expect(page.get_by_text('"url": "https://example.org/feed"')).to_be_visible()
    expect(page.get_by_text('"limit": 5')).to_be_visible()


def test_a_read_only_token_sees_no_retry_and_is_refused_when_it_posts(page: Page, daemon: Daemon) -> None:
    api = Browserless(daemon, token=None)
    try:
        dead = api.trigger("broken")
        api.wait_status(dead, "dead")
    finally:
        api.close()
    base = sign_in(page, daemon, VIEWER, path=f"/ui/job/{dead}")
    expect(page.locator("h1 .status")).to_have_text("dead")
    expect(page.locator("#retry")).to_have_count(0)
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    posted = page.request.post(f"{base}/ui/job/{dead}/retry", form={"csrf": csrf}, max_redirects=0)
    assert posted.status == 403
    assert "jobs:rw" in posted.text()
    missing = page.request.post(f"{base}/ui/job/{dead}/retry", form={}, max_redirects=0)
    assert missing.status == 403


def test_the_pages_fit_a_phone(page: Page, daemon: Daemon, shots: Path) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    base = sign_in(page, daemon)
    for path, name in (("/ui/", "overview-phone"), ("/ui/schedule", "schedule-phone"), ("/ui/jobs", None)):
        page.goto(base + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
        if name:
            page.screenshot(path=shots / f"{name}.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(base + "/ui/schedule?hours=24")
    expect(page.locator("svg.timeline circle").first).to_be_attached()
    page.screenshot(path=shots / "schedule.png", full_page=True)


def test_an_open_dashboard_does_not_hold_up_the_daemons_stop(page: Page, daemon: Daemon) -> None:
    """An open tab holds the event stream; stopping must not wait out the listener's graceful
    timeout (5 s) for it, as it did before the daemon ended its streams when stopping."""
    sign_in(page, daemon)
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    started = time.monotonic()
    assert daemon.terminate() == 0
    took = time.monotonic() - started
    assert took < 3.0, f"the daemon took {took:.1f}s to stop with a dashboard open"


@pytest.mark.timeout(150)
def test_the_forecast_shows_what_the_simulation_predicts(page: Page, daemon: Daemon, shots: Path) -> None:
    sign_in(page, daemon, path="/ui/forecast")
    page.get_by_label("Days").select_option("1")
    page.get_by_role("button", name="Forecast").click()
    expect(page.locator("#forecast-done")).to_be_visible(timeout=90_000)  # the page reloads itself
    row = page.locator("#forecast-summary tr", has=page.get_by_role("link", name="digest", exact=True))
    jobs = int(row.locator("td").nth(1).inner_text())
    assert 7 <= jobs <= 9  # every 3 h for a day
    page.screenshot(path=shots / "forecast.png", full_page=True)
