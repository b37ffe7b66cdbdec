"""The forecast: ``ductile simulate`` on the config in force, run as a child process.

The simulation is the real engine on a simulated clock, store and plugins: it
reads the config file and the plugins' manifests and touches nothing else
(never the state directory). It takes seconds to minutes of CPU for a week of
a busy config, so the dashboard runs it as its own process (``nice``d, in its
own process group), one at a time, bounded by :data:`TIMEOUT`, and keeps the
last result; the page shows the run's progress by reloading itself. Of the
document it keeps what the page shows: the summary per plugin, routed chains,
breaker openings and other events, DST days, and the first :data:`RUNS_KEPT` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from typing import Any

import attrs
from starlette.responses import RedirectResponse, Response

from ductile.app.api.errors import ApiError
from ductile.app.ui.guard import Handler, Visit
from ductile.log import Log

_log = Log("ui")
#: The longest a forecast may run (seconds) before it is killed.
TIMEOUT = 300.0
DAYS = (1, 3, 7)
RUNS_KEPT = 300
#: The most output read from the simulation (its JSON lists every simulated job).
MAX_OUTPUT = 256 * 1024 * 1024


@attrs.define(kw_only=True)
class Forecast:
    days: int
    started: float
    #: The trimmed document once finished; None while running or after a failure.
    doc: dict[str, Any] | None = None
    error: str | None = None
    took: float | None = None

    @property
    def running(self) -> bool:
        return self.doc is None and self.error is None


def _trim(doc: dict[str, Any]) -> dict[str, Any]:
    runs = doc.get("runs", [])
    kept = {k: doc.get(k) for k in ("start", "end", "seed", "plugins", "events", "dst", "routes", "summary")}
    return {**kept, "runs": runs[:RUNS_KEPT], "runs_total": len(runs)}


class Forecasts:
    """The one forecast running or last finished."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.last: Forecast | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, config_path: str, days: int) -> Forecast:
        """Start a forecast of ``days`` unless one is running (that one is returned)."""
        if self.last is not None and self.last.running:
            return self.last
        forecast = Forecast(days=days, started=time.monotonic())
        self.last = forecast
        self._task = asyncio.create_task(self._run(forecast, config_path), name="ductile-forecast")
        return forecast

    async def _run(self, forecast: Forecast, config_path: str) -> None:
        argv = [sys.executable, "-m", "ductile", "simulate", "--config", config_path]
        argv += ["--days", str(forecast.days), "--json"]
        nice = shutil.which("nice")
        if nice is not None:  # the daemon's own work comes first
            argv = [nice, "-n", "10", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=MAX_OUTPUT,
            )
        except OSError as e:
            forecast.error = f"could not start ductile simulate: {e}"
            return
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except (TimeoutError, asyncio.CancelledError) as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            forecast.error = f"the forecast took over {self.timeout:g}s and was stopped"
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        forecast.took = time.monotonic() - forecast.started
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip()
            forecast.error = text[-4000:] or f"ductile simulate exited with {proc.returncode}"
            return
        try:
            forecast.doc = _trim(json.loads(out))
        except ValueError as e:
            forecast.error = f"ductile simulate printed something that is not JSON: {e}"
        _log.info("forecast finished", days=forecast.days, seconds=round(forecast.took, 1))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def handlers(forecasts: Forecasts) -> tuple[Handler, Handler]:
    """The forecast page and the action that starts one."""

    async def page(visit: Visit) -> Response:
        last = forecasts.last
        elapsed = None if last is None else time.monotonic() - last.started
        return visit.page("forecast.html", forecast=last, elapsed=elapsed, choices=DAYS)

    async def start(visit: Visit) -> Response:
        text = visit.form.get("days", "")
        days = int(text) if text.isdigit() and int(text) in DAYS else None
        if days is None:
            raise ApiError(422, "invalid days", f"days: one of {', '.join(map(str, DAYS))}")
        source = visit.ctx.engine.runtime.config.source
        if source is None:
            raise ApiError(422, "no config file", "this instance was not started from a config file")
        forecasts.start(source, days)
        return RedirectResponse("/ui/forecast", 303)

    return page, start
