"""One Chromium for all the browser tests (Debian's, at /usr/bin/chromium: Playwright's own
browser download cannot work here), a fresh context per test.

``DUCTILE_SCREENSHOTS=docs/images`` makes the tests keep their screenshots there
(the ones ``docs/dashboard.md`` shows); otherwise they go to the test's tmp_path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = os.environ.get("DUCTILE_CHROMIUM", "/usr/bin/chromium")
#: Bound (ms) of every wait on the page: generous for a loaded 2-core machine.
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)


# Package scope, not session: while Playwright's sync API is open it runs an event loop in
# the main thread, and every later test calling asyncio.run() would fail ("cannot be called
# from a running event loop"). Closed when the browser tests are done.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    kept = os.environ.get("DUCTILE_SCREENSHOTS")
    folder = Path(kept) if kept else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
