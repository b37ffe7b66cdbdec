"""The README's tour says what the code does (issue 12, item 12)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ductile.adapters.config import load_config
from ductile.adapters.http.webhook import FORBIDDEN
from ductile.app.cli.format import schedule_summary
from tests.support.plugins import run_plugin

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "examples" / "ductile.yaml"


def _prose(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_tour_quotes_the_403_body_the_adapter_sends() -> None:
    body = json.dumps(FORBIDDEN, separators=(",", ":"))
    assert f"`403` with the body `{body}`" in _prose(README)
    assert "bare 403" not in README


def test_the_tour_shows_the_counters_schedule_as_ductile_prints_it() -> None:
    config = load_config(EXAMPLE)
    schedule = config.plugins["counter"].schedule
    assert schedule is not None
    summary = schedule_summary(schedule)  # "every 1m jitter 10s window (±5s) <zone>"
    shown = summary.rsplit(" ", 1)[0]
    assert f"`{shown}`" in _prose(README), summary


def test_the_tour_states_the_redelivery_rule_of_d1() -> None:
    prose = _prose(README)
    assert "while the first job is still queued or running" in prose
    assert "may run twice" not in prose


def test_the_example_hello_plugin_says_its_configured_greeting() -> None:
    ran = run_plugin(ROOT / "examples" / "plugins" / "hello" / "run.sh", config={"greeting": "good morning"})
    assert ran.job.status.value == "succeeded", ran.job.last_error
    assert [line.message for line in ran.settlement.run.logs] == ["good morning"]


def test_the_example_routes_every_death_to_a_builtin_notify_alias() -> None:
    from ductile.adapters.plugin_dir import FilesystemCatalog

    config = load_config(EXAMPLE)
    found = FilesystemCatalog().discover(config)
    assert not found.refused, found.refused
    assert found.plugins["alert"].base == "notify"
    assert found.plugins["oops"].base == "sys_exec"
    alerts = config.alerts(set(found.plugins))
    assert [(r.event_type, r.target) for r in alerts.routes] == [("job.dead", "alert")]
    assert "python3 examples/receiver.py" in README
    assert "ductile run oops" in README


def test_the_example_serves_the_dashboard_the_tour_opens() -> None:
    config = load_config(EXAMPLE)
    assert config.api is not None
    assert config.ui_enabled
    assert f"http://{config.api.host}:{config.api.port}/ui/" in README
    demo = next(t for t in config.api.tokens if t.name == "demo")
    assert demo.secret is not None
    assert f"`{demo.secret.decode()}`" in README
