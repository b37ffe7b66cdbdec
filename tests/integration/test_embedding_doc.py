"""docs/embedding.md cannot rot: its Starlette example runs as written, under uvicorn with its lifespan.

The example (``<!-- test: file app.py -->``) is written to a folder with a
``ductile.yaml`` and a plugin, imported, and served by a real uvicorn on
127.0.0.1. Also here: ``asgi_app`` taken before the instance is open answers
503 until it is (item 16), the errors of the public API (item 18), and
ductile's records reaching the host's ``logging`` with no handler of the
library's own (item 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import uvicorn

import ductile
from ductile import Ductile, UnknownJobError
from tests.support.plugins import plugin_folder, recorder
from tests.support.site import SECRET, Site, signature

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "embedding.md"
BOUND = 15.0


def documented_app() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- test: file app\.py -->\n```python\n(.*?)\n```", text, re.S)
    assert match is not None, "docs/embedding.md lost its example"
    return match.group(1) + "\n"


def load_app(folder: Path) -> ModuleType:
    path = folder / "app.py"
    path.write_text(documented_app())
    spec = importlib.util.spec_from_file_location(f"embedding_doc_app_{id(folder)}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def host_logging() -> Iterator[list[logging.LogRecord]]:
    """A handler of the *host's* on the root logger; the ``ductile`` logger as a library leaves it."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    lib = logging.getLogger("ductile")
    saved = (list(lib.handlers), lib.level, lib.propagate)
    lib.handlers[:], lib.propagate = [], True  # undo what a `ductile start` test in this process did
    lib.setLevel(logging.NOTSET)
    root = logging.getLogger()
    old_level = root.level
    keep = Keep(level=logging.INFO)
    root.addHandler(keep)
    root.setLevel(logging.INFO)
    try:
        yield records
    finally:
        root.removeHandler(keep)
        root.setLevel(old_level)
        lib.handlers[:], lib.propagate = saved[0], saved[2]
        lib.setLevel(saved[1])


def write_site(site: Site) -> None:
    site.plugin("echo", recorder(site, "echo"), commands=["poll"])
    site.plugin("hook", recorder(site, "hook"), commands=["handle"])
    site.write_config(endpoints=[{"path": "/hook/in", "plugin": "hook", "secret": SECRET}])


async def serve_documented_app(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUCTILE_CONFIG", str(site.config_path))
    module = load_app(site.root)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(module.app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    with contextlib.closing(sock), host_logging() as records:
        hosting = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            deadline = asyncio.get_running_loop().time() + BOUND
            while not server.started:
                assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as client:
                await use_the_documented_api(client)
        finally:
            server.should_exit = True
            await asyncio.wait_for(hosting, BOUND)
        assert logging.getLogger("ductile").handlers == [], "the library installed a handler"
        seen = [r for r in records if r.name.startswith("ductile")]
        assert any(r.getMessage() == "poll succeeded" and r.plugin == "echo" for r in seen), [  # type: ignore[attr-defined]
            r.getMessage() for r in seen
        ]
        assert {"dispatcher", "intake", "daemon"} <= {getattr(r, "component", None) for r in seen}


async def use_the_documented_api(client: httpx.AsyncClient) -> None:
    done = await client.post("/jobs/echo", params={"wait": "1"})
    assert done.status_code == 200, done.text
    doc = done.json()
    assert (doc["plugin"], doc["status"], doc["error"]) == ("echo", "succeeded", None)
    shown = await client.get(f"/jobs/{doc['job_id']}")
    assert (shown.status_code, shown.json()["status"]) == (200, "succeeded")

    missing = await client.post("/jobs/ecoh")
    assert missing.status_code == 404
    assert "did you mean 'echo'?" in missing.json()["error"]
    wrong = await client.post("/jobs/echo", params={"command": "handle"})
    assert wrong.status_code == 422
    assert (await client.get("/jobs/no-such-job")).status_code == 404

    body = b'{"from": "the doc"}'
    hook = await client.post(
        "/ductile/hook/in", content=body, headers={"X-Hub-Signature-256": signature(body)}
    )
    assert hook.status_code == 202, hook.text
    assert (await client.get("/ductile/healthz")).json()["plugins_loaded"] == 2


def test_the_documented_starlette_app_runs_as_written(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    write_site(site)
    asyncio.run(serve_documented_app(site, monkeypatch))


def test_asgi_app_taken_before_open_answers_503_until_ready(site: Site) -> None:
    write_site(site)

    async def scenario() -> None:
        d = Ductile(site.config_path, listen=False)
        app = d.asgi_app  # before open: nothing is built yet
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            early = await client.get("/healthz")
            assert (early.status_code, early.headers["retry-after"]) == (503, "1")
            assert early.json() == {"error": "not ready"}
            async with d:
                assert d.asgi_app is app
                assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/healthz")).status_code == 503, "closed: not ready again"

    asyncio.run(scenario())


def test_job_and_wait_name_their_errors(site: Site) -> None:
    write_site(site)

    async def scenario() -> None:
        async with Ductile(site.config_path, listen=False) as d:
            with pytest.raises(UnknownJobError):
                await d.job("nope")
            job_id = await d.enqueue("echo")
            assert (await d.job(job_id)).status is ductile.JobStatus.QUEUED
            with pytest.raises(TimeoutError):
                await d.wait(job_id, timeout=0.05)  # not serving: it cannot finish
            serving = asyncio.create_task(d.serve())
            try:
                job = await d.wait(job_id, timeout=BOUND)
                assert job.status is ductile.JobStatus.SUCCEEDED
            finally:
                d.stop()
                await serving
            with pytest.raises(ductile.UnknownPluginError):
                await d.enqueue("nope")
            with pytest.raises(ductile.UnknownCommandError):
                await d.enqueue("echo", "handle")

    asyncio.run(scenario())


def test_the_public_errors_are_exported_and_one_family() -> None:
    for name in ("UnknownPluginError", "UnknownCommandError", "PluginUnavailableError", "UnknownJobError"):
        assert name in ductile.__all__
        assert issubclass(getattr(ductile, name), ductile.DuctileError)
    assert issubclass(ductile.UnknownPluginError, LookupError)
    assert ductile.LOGGER_NAME == "ductile"


def test_a_plugin_refused_on_disk_is_unavailable_not_unknown(site: Site) -> None:
    plugin_folder(site.plugins_dir, "broken", "#!/bin/sh\n", protocol=9)
    site.write_config()

    async def scenario() -> None:
        async with Ductile(site.config_path, listen=False) as d:
            with pytest.raises(ductile.PluginUnavailableError, match="protocol 9 is not supported"):
                await d.enqueue("broken")

    asyncio.run(scenario())
