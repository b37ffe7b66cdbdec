"""Property: whatever a client sends the operator API, the answer is a 2xx or a 4xx, never a 5xx.

Hypothesis against the real app: an embedded ``Ductile`` on real SQLite,
serving on real uvicorn on 127.0.0.1 (in a thread of its own), with a real
token. Requests are drawn over every route of the table: path segments, query
strings (repeated, unknown, non-ASCII, huge numbers), bodies (JSON of any
shape, not JSON at all, NaN, deep nesting) and ``Last-Event-ID`` headers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.app.api import OPS
from ductile.app.bootstrap import Ductile

TOKEN = "property-token-0123456789"
FAST = '#!/bin/sh\ncat >/dev/null\necho \'{"status": "ok"}\'\n'


class Served:
    """Ductile serving in a thread with its own event loop, until :meth:`close`."""

    def __init__(self, config: Path) -> None:
        self.port: int | None = None
        self._ready = threading.Event()
        self._ductile: Ductile | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the API did not start"
        if self._error is not None:
            raise self._error

    def _run(self, config: Path) -> None:
        async def main() -> None:
            async with Ductile(config) as d:
                self._ductile, self._loop = d, asyncio.get_running_loop()
                serving = asyncio.create_task(d.serve())
                while d.api_port is None:  # noqa: ASYNC110 - bound once the listener accepts connections
                    await asyncio.sleep(0.01)
                self.port = d.api_port
                self._ready.set()
                await serving

        try:
            asyncio.run(main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def close(self) -> None:
        if self._loop is not None and self._ductile is not None:
            self._loop.call_soon_threadsafe(self._ductile.stop)
        self._thread.join(30)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("props")
    plugins = root / "plugins"
    folder = plugins / "fast"
    folder.mkdir(parents=True)
    for path in (plugins, folder):
        path.chmod(0o755)
    (folder / "manifest.yaml").write_text(
        "name: fast\nversion: 1.0.0\nprotocol: 1\nentrypoint: run\ncommands: [poll, handle]\n"
    )
    (folder / "run").write_text(FAST)
    (folder / "run").chmod(0o755)
    config = root / "ductile.yaml"
    config.write_text(
        "service: {state_dir: ./state}\nplugins_dir: ./plugins\nplugins: {fast: {}}\n"
        f"api: {{listen: '127.0.0.1:0', tokens: [{{name: p, token: {TOKEN}, scopes: ['*']}}]}}\n"
    )
    served = Served(config)
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{served.port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=httpx.Timeout(10.0, read=2.0),
    )
    try:
        yield client
    finally:
        client.close()
        served.close()


segment = st.one_of(
    st.sampled_from(["fast", "poll", "handle", "nope", "reset", "00000000", "x" * 300]),
    st.text(
        st.characters(codec="utf-8", exclude_characters="/?#", exclude_categories=("Cc", "Cs")),
        min_size=1,
        max_size=20,
    ),
)
query_value = st.one_of(
    st.sampled_from(
        ["dead", "queued", "1", "0", "500", "501", "-1", "1h", "now", "+1d", "2026-01-01T00:00:00Z", "9" * 40,
         "", "nope", "%", "job.*", "job.dead"]
    ),
    st.text(max_size=20),
)  # fmt: skip
query_name = st.one_of(
    st.sampled_from(["status", "plugin", "command", "submitted_by", "since", "until", "q", "limit", "cursor",
                     "from", "to", "type", "after", "schedule"]),
    st.text(max_size=8),
)  # fmt: skip
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
body = st.one_of(
    st.none(),
    json_value.map(lambda v: httpx.Request("POST", "/", json=v).content),
    st.fixed_dictionaries({}, optional={"payload": json_value, "dedupe_key": json_value}).map(
        lambda v: httpx.Request("POST", "/", json=v).content
    ),
    st.sampled_from(
        [b"NaN", b'{"payload": NaN}', b"[" * 10_000, b"\xff\xfe", b'{"a": 1' + b"0" * 5000 + b"}"]
    ),
    st.binary(max_size=64),
)


def _path(template: str, values: list[str]) -> str:
    out = template
    for name, value in zip(("{plugin}", "{command}", "{job_id}"), values, strict=False):
        out = out.replace(name, httpx.URL("/" + value).raw_path.decode()[1:] or "x")
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from(OPS),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]) | st.none(),
    values=st.lists(segment, min_size=3, max_size=3),
    params=st.lists(st.tuples(query_name, query_value), max_size=5),
    content=body,
    last_event_id=st.none() | query_value,
)
def test_any_request_is_answered_2xx_or_4xx(  # noqa: PLR0917 - hypothesis arguments
    api: httpx.Client,
    op: Any,
    method: str | None,
    values: list[str],
    params: list[tuple[str, str]],
    content: bytes | None,
    last_event_id: str | None,
) -> None:
    headers = {}
    if last_event_id is not None and last_event_id.isascii() and last_event_id.isprintable():
        headers["Last-Event-ID"] = last_event_id
    request = api.build_request(
        method or op.method, _path(op.path, values), params=params, content=content, headers=headers
    )
    if op.path == "/events":
        with api.stream(request.method, request.url, headers=request.headers, content=content) as response:
            status = response.status_code  # a live stream: its status is all there is to check
    else:
        status = api.send(request).status_code
    assert status < 500, (request.method, str(request.url), content, status)
    assert 200 <= status < 300 or 400 <= status < 500
