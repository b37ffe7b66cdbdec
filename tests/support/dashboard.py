"""A site with the API's dashboard, and a signed-in HTTP client for it (plain HTTP tests and
the browser tests share the site).

Plugins: ``feeds`` (a recorder), ``slow`` (gated: runs until the site's release
file appears), ``broken`` (always fails, no retry, writes hostile HTML to
stderr), ``hostile`` (succeeds, with hostile HTML in its stderr and its state).
``digest`` (scheduled every 3 h, for the schedule pages: it may run during a test, so
tests never count all jobs or all plugins' runs).
``reader`` (protocol 2: ``poll`` of type read with an input_schema, ``sync`` of type
write; two schedules, ``hourly`` and ``nightly``).
Tokens: ``admin`` (``*``) and ``viewer`` (read scopes only).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import httpx

from tests.support.plugins import gated, recorder, v2_folder
from tests.support.site import Daemon, Site, wait_until

ADMIN = "admin-dashboard-token-0123"
VIEWER = "viewer-dashboard-token-0123"
TOKENS = [
    {"name": "admin", "token": ADMIN, "scopes": ["*"]},
    {"name": "viewer", "token": VIEWER, "scopes": ["jobs:ro", "plugin:ro", "events:ro"]},
]
HOSTILE = "<script>window.pwned=1</script><img src=x onerror=alert(1)>"
WAIT = 20.0
#: A protocol 2 plugin: a read command whose input_schema becomes a form, a write command.
READER_MANIFEST = """
manifest_spec: ductile.plugin
manifest_version: 1
name: reader
version: 2.0.0
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
        fresh: {type: boolean}
  - name: sync
    type: write
    description: writes somewhere
    input_schema: {target: string}
fact_outputs:
  - when: {command: sync}
    from: state_updates
    fact_type: reader.snapshot
    compatibility_view: mirror_object
"""
READER_SCRIPT = f"""#!{sys.executable} -I
import json, sys
req = json.load(sys.stdin)
if req["command"] == "sync":
    snapshot = {{"synced": req.get("payload", {{}}).get("target")}}
    print(json.dumps({{"status": "ok", "result": "synced", "state_updates": snapshot}}))
else:
    print(json.dumps({{"status": "ok", "result": "done"}}))
"""


def dashboard_site(site: Site) -> Daemon:
    site.plugin("feeds", recorder(site, "feeds"))
    site.plugin("slow", gated(site, "slow"))
    broken = '{"status": "error", "error": "upstream said no", "retry": false}'
    site.plugin("broken", recorder(site, "broken", response=broken, before=f"echo '{HOSTILE}' >&2"))
    hostile = '{"status": "ok", "state_updates": {"note": "' + HOSTILE + '"}}'
    site.plugin("hostile", recorder(site, "hostile", response=hostile, before=f"echo '{HOSTILE}' >&2"))
    site.plugin("digest", recorder(site, "digest"))
    v2_folder(site.plugins_dir, "reader", READER_MANIFEST, READER_SCRIPT)
    plugins: dict[str, Any] = {
        "feeds": {},
        "slow": {},
        "broken": {},
        "hostile": {},
        "digest": {"schedule": {"every": "3h", "jitter": "40m"}},
        "reader": {"schedules": [{"id": "hourly", "every": "1h"}, {"id": "nightly", "cron": "0 3 * * *"}]},
    }
    site.write_config(plugins, api={"tokens": TOKENS}, endpoints=None)
    return site.start()


class Browserless:
    """An HTTP client signed in to the dashboard with ``token`` (cookies kept)."""

    def __init__(self, daemon: Daemon, token: str | None = ADMIN) -> None:
        assert daemon.api_port is not None
        self.url = f"http://127.0.0.1:{daemon.api_port}"
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        if token is not None:
            response = self.client.post("/ui/login", data={"token": token, "next": "/ui/"})
            assert response.status_code == 303, response.text

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def csrf(self, path: str = "/ui/") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get(path).text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(path, data=data or {})

    def trigger(self, plugin: str, command: str = "poll") -> str:
        """Queue through the API (the dashboard's own form is tested separately)."""
        response = self.client.post(
            f"/plugin/{plugin}/{command}", headers={"authorization": f"Bearer {ADMIN}"}
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/job/{job_id}", headers={"authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    def wait_status(self, job_id: str, *statuses: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            doc = self.job(job_id)
            return doc if doc["job"]["status"] in statuses else None

        return wait_until(reached, WAIT, f"job {job_id} to be {' or '.join(statuses)}")

    def close(self) -> None:
        self.client.close()
