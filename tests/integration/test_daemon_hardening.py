"""The real daemon against bad values and faults from outside (issue 19, items 8, 9, 11, 13, 17).

Each test reproduces one fault as it was reported against ``ductile start``
and checks what the daemon does now. The HTTP floods (items 10 and 12) are in
``test_http_floods.py``.
"""

from __future__ import annotations

import json

from tests.support.plugins import gated
from tests.support.site import SECRET, Site, signature, wait_until

# --------------------------------------------------------------------------- D1: redelivery during a run


def test_a_redelivery_while_the_first_job_runs_returns_the_running_job(site: Site) -> None:
    """Item 17 (D1 as amended): same delivery id, same job, even while that job runs."""
    site.plugin("slow", gated(site, "slow"), commands=["handle"])
    site.write_config(
        endpoints=[{"path": "/hook/slow", "plugin": "slow", "secret": SECRET, "dedupe_header": "X-Delivery"}]
    )
    daemon = site.start()
    body = json.dumps({"n": 1}).encode()
    headers = {"X-Hub-Signature-256": signature(body), "X-Delivery": "d-1"}

    first = daemon.post("/hook/slow", body, headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    wait_until(lambda: site.runs("slow"), 10, "the first job to start running")
    assert site.job(job_id)["job"]["status"] == "running"

    again = daemon.post("/hook/slow", body, headers)

    assert again.status_code == 202, again.text
    assert again.json()["job_id"] == job_id
    assert site.query("SELECT count(*) FROM jobs") == [(1,)]
    site.release()
    wait_until(lambda: site.job(job_id)["job"]["status"] == "succeeded", 15, "the job to succeed")
    assert len(site.runs("slow")) == 1
