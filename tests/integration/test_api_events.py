"""``GET /events``: the activity log as Server-Sent Events, on real uvicorn.

* resuming with ``Last-Event-ID`` across a restart of the real daemon gives
  every entry once, in order, including those the CLI appended while the
  daemon was down;
* a client that does not read is disconnected once its buffer fills, and
  meanwhile the dispatcher runs jobs as usual;
* filters, the heartbeat, the headers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ductile.app.bootstrap import Ductile
from ductile.domain.activity import Activity, Kind
from tests.support.plugins import recorder
from tests.support.site import Site

TOKEN = "events-token-0123456789"
WAIT = 20.0

Event = dict[str, Any]


def read_events(
    url: str, *, last_id: int | None = None, params: dict[str, Any] | None = None,
    until: Callable[[list[Event]], bool], timeout: float = WAIT, comments: list[str] | None = None,
) -> list[Event]:  # fmt: skip
    """Follow the stream until ``until(events)`` holds; each event ``{id, event, data}``."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    frame: Event = {}
    with httpx.stream("GET", url + "/events", headers=headers, params=params,
                      timeout=httpx.Timeout(10.0, read=timeout)) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        for line in response.iter_lines():
            if line.startswith(":") and comments is not None:
                comments.append(line)
            elif line.startswith("id: "):
                frame["id"] = int(line[4:])
            elif line.startswith("event: "):
                frame["event"] = line[7:]
            elif line.startswith("data: "):
                frame["data"] = json.loads(line[6:])
            elif line == "" and frame:
                events.append(frame)
                frame = {}
            if until(events) or time.monotonic() > deadline:
                break
    assert until(events), f"the stream did not deliver what was expected; got {events[-5:]}"
    return events


def jobs_finished(job_ids: set[str]) -> Callable[[list[Event]], bool]:
    def done(events: list[Event]) -> bool:
        ended = {e["data"]["job_id"] for e in events if e.get("event") == "job.succeeded"}
        return job_ids <= ended

    return done


def test_resume_across_a_restart_has_no_gap_and_no_duplicate(site: Site) -> None:
    site.plugin("tick", recorder(site, "tick"))
    site.write_config({"tick": {}}, api={"tokens": [{"name": "ev", "token": TOKEN, "scopes": ["*"]}]})
    daemon = site.start()
    url = f"http://127.0.0.1:{daemon.api_port}"
    first = {site.run_job("tick") for _ in range(3)}
    before = read_events(url, last_id=0, until=jobs_finished(first))
    last = before[-1]["id"]

    daemon.terminate()
    queued_while_down = site.run_job("tick")  # the CLI appends job.queued itself
    daemon = site.start()
    url = f"http://127.0.0.1:{daemon.api_port}"
    after = read_events(url, last_id=last, until=jobs_finished({queued_while_down}))

    ids = [e["id"] for e in before + after]
    assert ids == sorted(set(ids)), "ids repeat or go backwards"
    # Nothing missing: the whole log, read in one go from the start, is exactly what the two
    # reads saw (up to the newest entry they reached).
    whole = read_events(url, last_id=0, until=lambda events: bool(events) and events[-1]["id"] >= ids[-1])
    assert [e["id"] for e in whole if e["id"] <= ids[-1]] == ids
    kinds = [(e["event"], e["data"]["job_id"]) for e in after]
    assert ("job.queued", queued_while_down) in kinds
    assert ("job.succeeded", queued_while_down) in kinds


def test_filters_and_a_fresh_stream_starts_now(site: Site) -> None:
    site.plugin("a", recorder(site, "a"))
    site.plugin("b", recorder(site, "b"))
    site.write_config({"a": {}, "b": {}}, api={"tokens": [{"name": "ev", "token": TOKEN, "scopes": ["*"]}]})
    daemon = site.start()
    url = f"http://127.0.0.1:{daemon.api_port}"
    old = site.run_job("a")
    read_events(url, last_id=0, until=jobs_finished({old}))
    b_job = site.run_job("b")
    events = read_events(url, last_id=0, params={"plugin": "b", "type": ["job.succeeded", "job.queued"]},
                         until=jobs_finished({b_job}))  # fmt: skip
    assert {e["data"]["plugin"] for e in events} == {"b"}
    assert {e["event"] for e in events} == {"job.queued", "job.succeeded"}
    bad = httpx.get(
        url + "/events", params={"type": "job.nope"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert bad.status_code == 400


# ------------------------------------------------------------------------- embedded: slow clients, heartbeat


def _embedded(tmp_path: Path, plugin_dir_script: str) -> Path:
    plugins = tmp_path / "plugins"
    folder = plugins / "fast"
    folder.mkdir(parents=True)
    for path in (plugins, folder):
        path.chmod(0o755)
    (folder / "manifest.yaml").write_text(
        "name: fast\nversion: 1.0.0\nprotocol: 1\nentrypoint: run\ncommands: [poll]\n"
    )
    (folder / "run").write_text(plugin_dir_script)
    (folder / "run").chmod(0o755)
    config = tmp_path / "ductile.yaml"
    config.write_text(
        "service: {state_dir: ./state}\nplugins_dir: ./plugins\nplugins: {fast: {}}\n"
        f"api: {{listen: '127.0.0.1:0', tokens: [{{name: ev, token: {TOKEN}, scopes: ['*']}}]}}\n"
    )
    return config


FAST = '#!/bin/sh\ncat >/dev/null\necho \'{"status": "ok"}\'\n'


async def _until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def test_a_client_that_does_not_read_is_dropped_and_never_slows_dispatch(tmp_path: Path) -> None:
    async def main() -> None:
        async with Ductile(_embedded(tmp_path, FAST)) as d:
            d.feed.buffer = 20
            serving = asyncio.create_task(d.serve())
            port = await _until(lambda: d.api_port, "the API listener")
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(("127.0.0.1", port))
            slow.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            await _until(lambda: d.feed.subscribers == 1, "the slow client's subscription")
            padding = "x" * 2000
            store = d.engine.store
            for i in range(1500):  # far more than the socket buffers and the queue hold
                await store.note(
                    Activity(
                        kind=Kind.CONFIG_RELOADED, at=d.engine.clock.now(), data={"i": i, "pad": padding}
                    )
                )
            d.feed.poke()
            started = time.monotonic()
            job_id = await d.enqueue("fast")
            await _until(lambda: d.feed.subscribers == 0, "the slow client to be dropped")

            async def finished() -> bool:
                got = await store.get_job(job_id)
                return got is not None and got.status.value == "succeeded"

            deadline = time.monotonic() + WAIT
            while not await finished():
                assert time.monotonic() < deadline, "the job did not finish while a client lagged"
                await asyncio.sleep(0.02)
            assert time.monotonic() - started < WAIT
            slow.close()
            d.stop()
            await serving

    asyncio.run(main())


def test_the_heartbeat_comment_keeps_an_idle_stream_alive(tmp_path: Path) -> None:
    async def main() -> None:
        async with Ductile(_embedded(tmp_path, FAST)) as d:
            d.surface.heartbeat = 0.2
            serving = asyncio.create_task(d.serve())
            port = await _until(lambda: d.api_port, "the API listener")
            comments: list[str] = []
            await asyncio.to_thread(
                read_events, f"http://127.0.0.1:{port}", until=lambda events: len(comments) >= 3,
                timeout=10.0, comments=comments,
            )  # fmt: skip
            assert comments[0] == ": ductile event stream"
            assert ": heartbeat" in comments
            d.stop()
            await serving

    asyncio.run(main())


@pytest.mark.parametrize("header", ["abc", "-1", "1" * 30])
def test_a_bad_last_event_id_is_a_400(site: Site, header: str) -> None:
    site.write_config({}, api={"tokens": [{"name": "ev", "token": TOKEN, "scopes": ["*"]}]})
    daemon = site.start()
    response = httpx.get(f"http://127.0.0.1:{daemon.api_port}/events",
                         headers={"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": header})  # fmt: skip
    assert response.status_code == 400


def test_a_refused_plugin_is_in_the_stream(site: Site) -> None:
    site.plugin("good", recorder(site, "good"))
    bad = site.plugin("bad", recorder(site, "bad"))
    (bad / "manifest.yaml").write_text("name: bad\nversion: 1.0.0\nprotocol: 99\nentrypoint: run\n")
    site.write_config({"good": {}}, api={"tokens": [{"name": "ev", "token": TOKEN, "scopes": ["*"]}]})
    daemon = site.start()
    url = f"http://127.0.0.1:{daemon.api_port}"
    events = read_events(
        url, last_id=0, until=lambda events: any(e["event"] == "plugin.refused" for e in events)
    )
    refused = next(e for e in events if e["event"] == "plugin.refused")
    assert refused["data"]["plugin"] == "bad"
    assert "protocol" in refused["data"]["reason"]
