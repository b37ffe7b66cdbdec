"""The YAML config reader: defaults, YAML rules, ${VAR}, every error kind with path and line."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ductile.adapters.config import MAX_CONFIG_BYTES, MAX_DEPTH, machine_timezone, parse_config
from ductile.adapters.config.envsubst import substitute
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.config import Config, LogLevel, PluginConfig, Timeouts, WebhooksConfig
from ductile.domain.errors import ConfigError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import CatchUp, Window

EXAMPLES = Path(__file__).parent / "config_examples"
BASE = "/srv/ductile"
LOCAL = ZoneInfo("Europe/Paris")
ENV = {
    "GITHUB_WEBHOOK_SECRET": "gh-secret",
    "WITHINGS_SECRET": "w-secret",
    "HOME": "/home/op",
}
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(
        text, source="test.yaml", base_dir=BASE, env=ENV if env is None else env, local_tz=LOCAL
    )


def error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value


def example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


# =========================================================================== defaults


def test_an_empty_file_is_all_defaults() -> None:
    config = parse("")
    assert config.service.state_dir == "/srv/ductile/state"
    assert config.plugins_dir == "/srv/ductile/plugins"
    assert config.service.tick_interval == timedelta(seconds=60)
    assert config.service.dedupe_ttl == timedelta(hours=24)
    assert config.service.job_log_retention == timedelta(days=30)
    assert config.service.log_level is LogLevel.INFO
    assert config.plugins == {}
    assert config.routes == ()
    assert config.webhooks is None
    assert config.source == "test.yaml"


@pytest.mark.parametrize(
    "text", ["# nothing but a comment\n", "---\n", "~\n", "service:\nplugins:\nroutes:\n"]
)
def test_empty_documents_and_empty_sections_are_defaults(text: str) -> None:
    assert parse(text) == parse("")


def test_a_plugin_without_settings_gets_every_default() -> None:
    plugin = parse("plugins:\n  withings:\n").plugins["withings"]
    assert plugin == PluginConfig(name="withings")
    assert plugin.enabled is True
    assert plugin.schedule is None
    assert plugin.config == {}
    assert plugin.retry == RetryPolicy(max_attempts=4, backoff_base=timedelta(seconds=30))
    assert plugin.timeouts == Timeouts(
        poll=timedelta(seconds=60),
        handle=timedelta(seconds=120),
        health=timedelta(seconds=10),
        init=timedelta(seconds=30),
    )
    assert plugin.circuit_breaker == BreakerPolicy(threshold=3, reset_after=timedelta(minutes=30))
    assert plugin.max_outstanding_polls == 1


def test_partial_sections_keep_the_other_defaults() -> None:
    plugin = parse("plugins: {p: {retry: {max_attempts: 9}, timeouts: {poll: 5m}}}").plugins["p"]
    assert plugin.retry == RetryPolicy(max_attempts=9, backoff_base=timedelta(seconds=30))
    assert plugin.timeouts.poll == timedelta(minutes=5)
    assert plugin.timeouts.handle == timedelta(seconds=120)


def test_schedule_defaults() -> None:
    schedule = parse("plugins: {p: {schedule: {every: 5m}}}").plugins["p"].schedule
    assert schedule is not None
    assert schedule.every == timedelta(minutes=5)
    assert schedule.cron is None
    assert schedule.jitter == timedelta(0)
    assert schedule.window is None
    assert schedule.tz is LOCAL  # the machine's zone, as handed in
    assert schedule.catch_up is CatchUp.SKIP
    assert schedule.command == "poll"
    assert schedule.emit is None


def test_webhook_defaults() -> None:
    webhooks = parse("webhooks:\n  endpoints:\n    - {path: /h, plugin: p, secret: s}\n").webhooks
    assert webhooks is not None
    assert (webhooks.host, webhooks.port) == ("127.0.0.1", 8081)
    (endpoint,) = webhooks.endpoints
    assert endpoint.signature_header == "X-Hub-Signature-256"
    assert endpoint.max_body_size == 1_048_576
    assert endpoint.event_type == "webhook"
    assert endpoint.dedupe_header is None
    assert parse("webhooks: {}").webhooks == WebhooksConfig()
    assert parse("webhooks:").webhooks is None  # null is "not given"


# =========================================================================== examples


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_parses(name: str) -> None:
    config = parse(example(name))
    assert config.service.state_dir.startswith("/")
    assert config.plugins_dir.startswith("/")


def test_the_full_example() -> None:
    config = parse(example("full.yaml"))
    withings = config.plugins["withings"]
    schedule = withings.schedule
    assert schedule is not None
    assert schedule.every == timedelta(hours=6)
    assert schedule.jitter == timedelta(minutes=30)
    assert schedule.window == Window(time(6, 0), time(22, 0))
    assert schedule.tz == ZoneInfo("Europe/Berlin")
    assert schedule.catch_up is CatchUp.RUN_ONCE
    assert withings.config == {
        "client_id": "abc123",
        "client_secret": "w-secret",
        "country": "NO",
        "since": "2024-01-01",
        "units": {"weight": "kg", "height": "cm"},
        "metrics": ["weight", "fat_ratio"],
    }
    assert withings.retry == RetryPolicy(max_attempts=5, backoff_base=timedelta(seconds=60))
    assert withings.timeouts == Timeouts(
        poll=timedelta(seconds=300),
        handle=timedelta(seconds=300),
        health=timedelta(seconds=10),
        init=timedelta(seconds=30),
    )
    morning = config.plugins["morning"].schedule
    assert morning is not None
    assert morning.cron == "30 7 * * 1-5"
    assert morning.emit == EmittedEvent(type="morning.digest", payload={})
    assert config.plugins["github-handler"] == PluginConfig(name="github-handler")
    assert config.routes == (
        Route(source="withings", event_type="new_health_data", target="health-analyzer"),
        Route(source="morning", event_type="morning.digest", target="health-analyzer"),
    )
    assert config.webhooks is not None
    (endpoint,) = config.webhooks.endpoints
    assert endpoint.path == "/hook/github"
    assert endpoint.plugin == "github-handler"
    assert endpoint.secret == "gh-secret"
    assert endpoint.dedupe_header == "X-GitHub-Delivery"
    assert endpoint.max_body_size == 1024 * 1024


def test_anchors_and_merge_keys() -> None:
    config = parse(example("anchors.yaml"))
    crm = config.plugins["crm-sync"]
    assert crm.retry == RetryPolicy(max_attempts=8, backoff_base=timedelta(minutes=2))
    assert crm.timeouts.poll == timedelta(minutes=10)
    assert crm.schedule is not None
    assert crm.schedule.tz == ZoneInfo("America/New_York")
    assert crm.schedule.window == Window(time(9, 0), time(17, 30))
    invoices = config.plugins["invoices"]
    # Merging is shallow: the plugin's own 'retry' replaces the merged one whole.
    assert invoices.retry == RetryPolicy(max_attempts=2)
    assert invoices.schedule is not None
    assert invoices.schedule.cron == "0 9 * * 1"


def test_the_overnight_example() -> None:
    config = parse(example("overnight.yaml"), env={"HOME": "/home/op"})
    assert config.service.state_dir == "/var/lib/ductile"
    assert config.service.log_level is LogLevel.DEBUG
    assert config.plugins_dir == "/home/op/ductile-plugins"
    backup = config.plugins["backup"]
    assert backup.schedule is not None
    assert backup.schedule.window == Window(time(22, 0), time(6, 0))
    assert backup.schedule.every == timedelta(days=1)
    assert backup.config == {
        "target": "s3://bucket/${HOST}",
        "keep": 14,
        "compress": True,
        "ratio": 0.5,
        "note": None,
    }
    assert backup.max_outstanding_polls == 2
    assert config.webhooks is not None
    assert (config.webhooks.host, config.webhooks.port) == ("::1", 9000)
    first, second = config.webhooks.endpoints
    assert first.secret == "change-me"
    assert first.max_body_size == 25 * 1024 * 1024
    assert second.signature_header == "X-Signature"
    assert second.event_type == "manual.backup"


def test_parsing_is_deterministic() -> None:
    assert parse(example("full.yaml")) == parse(example("full.yaml"))


# =========================================================================== YAML value rules


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("NO", "NO"),  # the Norway problem
        ("yes", "yes"),
        ("off", "off"),
        ("Y", "Y"),
        ("2024-01-01", "2024-01-01"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
        ("06:00", "06:00"),
        ("1:30", "1:30"),
        ("0755", "0755"),
        ("0x1F", "0x1F"),
        ("0o17", "0o17"),
        ("1_000", "1_000"),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("0", 0),
        ("-3", -3),
        ("+3", 3),
        ("1.5", 1.5),
        ("1e3", "1e3"),  # YAML 1.1 reads text, 1.2 a number: kept as text
        ("1.5e3", "1.5e3"),
        ("1.5e+3", 1500.0),
        ("-.5", "-.5"),
        ("01.5", 1.5),
        (".5", 0.5),
        ("'5'", "5"),
        ('"true"', "true"),
        ("!!str 5", "5"),
        ("!!int '5'", 5),
        ("!!float 3", 3.0),
        ("!!bool 'true'", True),
        ("!!null ''", None),
        ("a b c", "a b c"),
        ("'it''s'", "it's"),
    ],
)
def test_plain_values_follow_core_rules(written: str, value: Any) -> None:
    got = parse(f"plugins:\n  p:\n    config:\n      v: {written}\n").plugins["p"].config["v"]
    assert got == value
    assert type(got) is type(value)


def test_block_scalars_and_lists_in_plugin_config() -> None:
    text = (
        "plugins:\n  p:\n    config:\n      text: |\n        line one\n        line two\n"
        "      items:\n        - 1\n        - [a, {b: null}]\n"
    )
    assert parse(text).plugins["p"].config == {
        "text": "line one\nline two\n",
        "items": [1, ["a", {"b": None}]],
    }


# =========================================================================== errors, with path and line


def assert_error(err: ConfigError, path: str, line: int | None, *fragments: str) -> None:
    assert err.path == path, str(err)
    assert err.line == line, str(err)
    first = err.detail.splitlines()[0]
    for fragment in fragments:
        assert fragment in first, str(err)
    assert "please report" not in str(err)


ERRORS: list[tuple[str, str, int | None, tuple[str, ...]]] = [
    # unknown keys, with a suggestion
    ("servce: {}\n", "servce", 1, ("unknown key 'servce'", "did you mean 'service'?")),
    (
        "plugins:\n  p:\n    retry: {max_attempts: 5, backof_base: 1s}\n",
        "plugins.p.retry.backof_base",
        3,
        ("unknown key 'backof_base'", "did you mean 'backoff_base'?"),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, jiter: 5m}\n",
        "plugins.p.schedule.jiter",
        3,
        ("did you mean 'jitter'?",),
    ),
    (
        "routes:\n  - {from: a, event_type: x, to: b, command: poll}\n",
        "routes[0].command",
        2,
        ("unknown key 'command'",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, emit: {type: t, dedupe_key: k}}\n",
        "plugins.p.schedule.emit.dedupe_key",
        3,
        ("unknown key 'dedupe_key'",),
    ),
    # YAML structure
    ("plugins:\n  p: {}\n  p: {}\n", "plugins.p", 3, ("duplicate key 'p'", "first at line 2")),
    (
        "plugins:\n  p:\n    config:\n      a: 1\n      b: 2\n      a: 3\n",
        "plugins.p.config.a",
        6,
        ("duplicate key 'a'",),
    ),
    ("plugins:\n  p:\n    config: {404: x}\n", "plugins.p.config", 3, ("keys must be text", "'404'")),
    ("plugins:\n  p:\n    config: {true: x}\n", "plugins.p.config", 3, ("keys must be text",)),
    ("plugins:\n  p:\n    config: {? [a]: x}\n", "plugins.p.config", 3, ("a key must be text",)),
    ("plugins:\n  p:\n    config: {x: .nan}\n", "plugins.p.config.x", 3, ("not-a-number", "quote it")),
    ("plugins:\n  p:\n    config: {x: -.inf}\n", "plugins.p.config.x", 3, ("infinity",)),
    ("plugins:\n  p:\n    config: {x: 1.0e+999}\n", "plugins.p.config.x", 3, ("too large",)),
    (
        "plugins:\n  p:\n    config: {x: " + "9" * 101 + "}\n",
        "plugins.p.config.x",
        3,
        ("more than 100 digits",),
    ),
    (
        "plugins:\n  p:\n    config: {x: !!binary aGk=}\n",
        "plugins.p.config.x",
        3,
        ("tag !!binary is not supported",),
    ),
    (
        "plugins:\n  p:\n    config: {x: !!python/object/apply:os.system [ls]}\n",
        "plugins.p.config.x",
        3,
        ("is not supported",),
    ),
    ("plugins:\n  p:\n    config: {x: !!int abc}\n", "plugins.p.config.x", 3, ("not a valid !!int",)),
    (
        "plugins:\n  p:\n    config: &a {x: *a}\n",
        "plugins.p.config.x",
        3,
        ("refers to a block that contains it",),
    ),
    ("plugins:\n  p:\n    config: {x: *nowhere}\n", "", 3, ("YAML syntax error", "undefined alias")),
    ("plugins:\n  p:\n\tconfig: {}\n", "", 3, ("tabs",)),
    ("plugins:\n  p: [\n", "", 3, ("YAML syntax error",)),
    ("plugins:\n  p:\n    schedule: {cron: * * * * *}\n", "", 3, ("must be quoted",)),
    ("a: 1\n---\nb: 2\n", "", 2, ("single document",)),
    ("plugins:\n  p:\n    config: {x: \x07}\n", "", 3, ("U+0007",)),
    ("- a\n- b\n", "", 1, ("expected a mapping", "a list")),
    ("just text\n", "", 1, ("expected a mapping",)),
    ("service: [a]\n", "service", 1, ("expected a mapping", "a list")),
    ("plugins: [a, b]\n", "plugins", 1, ("expected a mapping",)),
    ("plugins:\n  p: 5\n", "plugins.p", 2, ("expected a mapping", "a number (5)")),
    ("routes: {from: a}\n", "routes", 1, ("expected a list", "a mapping")),
    ("plugins:\n  p:\n    config: [1, 2]\n", "plugins.p.config", 3, ("expected a mapping",)),
    # plugin names
    (
        "plugins:\n  .hidden: {}\n",
        'plugins[".hidden"]',
        2,
        ("not a valid plugin name", "not starting with '.'"),
    ),
    ("plugins:\n  a b: {}\n", 'plugins["a b"]', 2, ("not a valid plugin name",)),
    ("plugins:\n  a/b: {}\n", 'plugins["a/b"]', 2, ("not a valid plugin name",)),
    # types
    (
        "plugins:\n  p:\n    enabled: yes\n",
        "plugins.p.enabled",
        3,
        ("expected true or false", "write true or false"),
    ),
    ("plugins:\n  p:\n    enabled: 1\n", "plugins.p.enabled", 3, ("expected true or false",)),
    (
        "plugins:\n  p:\n    retry: {max_attempts: '5'}\n",
        "plugins.p.retry.max_attempts",
        3,
        ("expected a whole number", "remove the quotes"),
    ),
    (
        "plugins:\n  p:\n    retry: {max_attempts: 0}\n",
        "plugins.p.retry.max_attempts",
        3,
        ("must be at least 1, got 0",),
    ),
    (
        "plugins:\n  p:\n    retry: {max_attempts: 2.5}\n",
        "plugins.p.retry.max_attempts",
        3,
        ("expected a whole number",),
    ),
    (
        "plugins:\n  p:\n    retry: {max_attempts: true}\n",
        "plugins.p.retry.max_attempts",
        3,
        ("expected a whole number",),
    ),
    (
        "plugins:\n  p:\n    retry: {max_attempts: 99999999999}\n",
        "plugins.p.retry.max_attempts",
        3,
        ("at most 1,000,000",),
    ),
    (
        "plugins:\n  p:\n    circuit_breaker: {threshold: 0}\n",
        "plugins.p.circuit_breaker.threshold",
        3,
        ("at least 1",),
    ),
    (
        "plugins:\n  p:\n    max_outstanding_polls: -1\n",
        "plugins.p.max_outstanding_polls",
        3,
        ("at least 1",),
    ),
    ("service:\n  log_level: loud\n", "service.log_level", 2, ("expected one of debug, info, warn, error",)),
    ("service:\n  log_level: 3\n", "service.log_level", 2, ("expected one of",)),
    # durations and sizes
    ("service:\n  tick_interval: 60\n", "service.tick_interval", 2, ("needs a unit", "'60s'")),
    ("service:\n  dedupe_ttl: 1.5h\n", "service.dedupe_ttl", 2, ("is not a duration",)),
    ("service:\n  job_log_retention: 0s\n", "service.job_log_retention", 2, ("longer than zero",)),
    ("service:\n  tick_interval: [1]\n", "service.tick_interval", 2, ("expected a duration", "a list")),
    ("plugins:\n  p:\n    timeouts: {poll: forever}\n", "plugins.p.timeouts.poll", 3, ("is not a duration",)),
    (
        "plugins:\n  p:\n    retry: {backoff_base: 20y}\n",
        "plugins.p.retry.backoff_base",
        3,
        ("is not a duration",),
    ),
    (
        "plugins:\n  p:\n    circuit_breaker: {reset_after: 11000d}\n",
        "plugins.p.circuit_breaker.reset_after",
        3,
        ("longer than ten years",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /h, plugin: p, secret: s, max_body_size: 1048576}\n",
        "webhooks.endpoints[0].max_body_size",
        3,
        ("needs a unit",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /h, plugin: p, secret: s, max_body_size: 1TB}\n",
        "webhooks.endpoints[0].max_body_size",
        3,
        ("unknown unit",),
    ),
    # schedules
    (
        "plugins:\n  p:\n    schedule: {jitter: 5m}\n",
        "plugins.p.schedule",
        3,
        ("needs one of 'every'", "'cron'", "'at'", "'after'"),
    ),
    (
        "plugins:\n  p:\n    schedule:\n      every: 1h\n      cron: '0 * * * *'\n",
        "plugins.p.schedule.cron",
        5,
        ("one of 'every', 'cron', 'at' or 'after', not every and cron",),
    ),
    (
        "plugins:\n  p:\n    schedule:\n      every: 30m\n      jitter: 30m\n",
        "plugins.p.schedule.jitter",
        5,
        ("must be shorter than 'every'",),
    ),
    (
        "plugins:\n  p:\n    schedule: {cron: '0 7 * *'}\n",
        "plugins.p.schedule.cron",
        3,
        ("exactly 5 fields",),
    ),
    ("plugins:\n  p:\n    schedule: {cron: '61 7 * * *'}\n", "plugins.p.schedule.cron", 3, ("not valid",)),
    ("plugins:\n  p:\n    schedule: {cron: '0 0 31 2 *'}\n", "plugins.p.schedule.cron", 3, ("never fires",)),
    ("plugins:\n  p:\n    schedule: {cron: '@daily'}\n", "plugins.p.schedule.cron", 3, ("nicknames",)),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, timezone: Europe/Berln}\n",
        "plugins.p.schedule.timezone",
        3,
        ("unknown timezone 'Europe/Berln'", "did you mean 'Europe/Berlin'?"),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, timezone: '+02:00'}\n",
        "plugins.p.schedule.timezone",
        3,
        ("unknown timezone",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, timezone: ../../etc/passwd}\n",
        "plugins.p.schedule.timezone",
        3,
        ("unknown timezone",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, catch_up: always}\n",
        "plugins.p.schedule.catch_up",
        3,
        ("expected one of skip, run_once",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, command: init}\n",
        "plugins.p.schedule.command",
        3,
        ("cannot run 'init'",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, command: poll, emit: {type: t}}\n",
        "plugins.p.schedule.emit",
        3,
        ("either 'command'",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, emit: {payload: {}}}\n",
        "plugins.p.schedule.emit.type",
        3,
        ("required key 'type' is missing",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1h, emit: {type: ''}}\n",
        "plugins.p.schedule.emit.type",
        3,
        ("must not be empty",),
    ),
    (
        "plugins:\n  p:\n    schedule:\n      every: 1h\n"
        "      preferred_window: {start: '25:00', end: '06:00'}\n",
        "plugins.p.schedule.preferred_window.start",
        5,
        ("time of day", "'25:00'"),
    ),
    (
        "plugins:\n  p:\n    schedule:\n      every: 1h\n"
        "      preferred_window: {start: '06:00', end: '06:00'}\n",
        "plugins.p.schedule.preferred_window.end",
        5,
        ("must differ",),
    ),
    (
        "plugins:\n  p:\n    schedule:\n      every: 1h\n      preferred_window: {start: '06:00'}\n",
        "plugins.p.schedule.preferred_window.end",
        5,
        ("required key 'end' is missing",),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 6 hours}\n",
        "plugins.p.schedule.every",
        3,
        (
            "'6 hours' is not a duration; use a whole number and a unit (ms, s, m, h, d, w), "
            "e.g. '30s', '5m', "
            "'1h30m' (or one of: hourly, daily, weekly, monthly)",
        ),
    ),
    (
        "plugins:\n  p:\n    schedule: {every: 1ms}\n",
        "plugins.p.schedule.every",
        3,
        ("at least 1s", "did you mean minutes"),
    ),
    # routes
    (
        "routes:\n  - {from: a, event_type: x, to: b}\n  - {from: a, event_type: x}\n",
        "routes[1].to",
        3,
        ("required key 'to' is missing",),
    ),
    (
        "routes:\n  - {from: a, event_type: x, to: b}\n  - {from: a, event_type: x, to: b}\n",
        "routes[1]",
        3,
        ("same route as routes[0]",),
    ),
    ("routes:\n  - {from: a, event_type: 7, to: b}\n", "routes[0].event_type", 2, ("expected text",)),
    ("routes:\n  - {from: a, event_type: x, to: ../b}\n", "routes[0].to", 2, ("not a valid plugin name",)),
    ("routes:\n  - null\n", "routes[0].event_type", 2, ("required key",)),
    # webhooks
    ("webhooks:\n  listen: 8081\n", "webhooks.listen", 2, ("host:port",)),
    ("webhooks:\n  listen: localhost\n", "webhooks.listen", 2, ("host:port",)),
    ("webhooks:\n  listen: 127.0.0.1:65536\n", "webhooks.listen", 2, ("not a port number",)),
    ("webhooks:\n  listen: 127.0.0.1:http\n", "webhooks.listen", 2, ("not a port number",)),
    ("webhooks:\n  listen: ::1:80\n", "webhooks.listen", 2, ("in brackets",)),
    ("webhooks:\n  listen: '[zz]:80'\n", "webhooks.listen", 2, ("not an IPv6 address",)),
    ("webhooks:\n  listen: 'bad host:80'\n", "webhooks.listen", 2, ("not a host name",)),
    (
        "webhooks:\n  endpoints:\n    - {path: hook, plugin: p, secret: s}\n",
        "webhooks.endpoints[0].path",
        3,
        ("must start with '/'",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: '/a b', plugin: p, secret: s}\n",
        "webhooks.endpoints[0].path",
        3,
        ("not a URL path",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: s}\n"
        "    - {path: /a, plugin: q, secret: t}\n",
        "webhooks.endpoints[1].path",
        4,
        ("already used by endpoints[0]",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /healthz, plugin: p, secret: s}\n",
        "webhooks.endpoints[0].path",
        3,
        ("health endpoint",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: ''}\n",
        "webhooks.endpoints[0].secret",
        3,
        ("secret is empty",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /a, plugin: p}\n",
        "webhooks.endpoints[0].secret",
        3,
        ("required key 'secret' is missing",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: s, signature_header: 'X Sig'}\n",
        "webhooks.endpoints[0].signature_header",
        3,
        ("not an HTTP header name",),
    ),
    (
        "webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: s, dedupe_header: 'a:b'}\n",
        "webhooks.endpoints[0].dedupe_header",
        3,
        ("not an HTTP header name",),
    ),
    ("webhooks:\n  endpoints: {path: /a}\n", "webhooks.endpoints", 2, ("expected a list",)),
    # paths
    ("service:\n  state_dir: ''\n", "service.state_dir", 2, ("must not be empty",)),
    ("plugins_dir: 5\n", "plugins_dir", 1, ("expected text",)),
]


@pytest.mark.parametrize(("text", "path", "line", "fragments"), ERRORS)
def test_each_error_names_its_path_and_line(
    text: str, path: str, line: int | None, fragments: tuple[str, ...]
) -> None:
    assert_error(error(text), path, line, *fragments)


def test_the_message_reads_path_line_then_problem() -> None:
    err = error("plugins:\n  withings:\n    retry:\n      max_attempts: 0\n")
    assert str(err) == "plugins.withings.retry.max_attempts (line 4): must be at least 1, got 0"


def test_all_structural_problems_are_listed_in_file_order() -> None:
    text = (
        "service:\n"
        "  log_level: loud\n"  # 2
        "plugins:\n"
        "  p:\n"
        "    enabled: maybe\n"  # 5
        "routes:\n"
        "  - {from: a}\n"  # 7
    )
    err = error(text)
    assert (err.path, err.line) == ("service.log_level", 2)
    lines = str(err).splitlines()
    assert lines[1].startswith("  also plugins.p.enabled (line 5): expected true or false")
    assert any(line.startswith("  also routes[0].to (line 7): required key 'to'") for line in lines)
    assert len(lines) == 4  # log_level, enabled, event_type, to


def test_a_flood_of_problems_is_cut_short() -> None:
    text = "plugins:\n" + "".join(f"  p{i}: {{enabled: nope}}\n" for i in range(30))
    lines = str(error(text)).splitlines()
    assert len(lines) == 12
    assert lines[-1] == "  ... and 19 more"


def test_a_secret_is_never_echoed() -> None:
    err = error("webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: 918273645}\n")
    assert "918273645" not in str(err)
    assert err.path == "webhooks.endpoints[0].secret"
    config = parse("webhooks:\n  endpoints:\n    - {path: /a, plugin: p, secret: hunter2}\n")
    assert "hunter2" not in repr(config)


def test_x_keys_at_the_top_hold_anchors_and_are_ignored() -> None:
    config = parse("x-defaults: &d {max_attempts: 7}\nplugins: {p: {retry: *d}}\n")
    assert config.plugins["p"].retry.max_attempts == 7
    err = error("plugins:\n  p:\n    x-note: hi\n")
    assert err.path == "plugins.p.x-note"


# =========================================================================== size and bombs


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        refs = ", ".join([f"*{chr(96 + level)}"] * 10)
        lines.append(f"x-{chr(97 + level)}: &{chr(97 + level)} [{refs}]")
    err = error("\n".join(lines) + "\n")
    assert "expands to more than 100,000 values" in str(err)
    assert err.line is not None


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_flow_nesting_is_refused(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    err = error("x-deep: " + opening * 5000 + closing * 5000 + "\n")
    assert f"more than {MAX_DEPTH} levels" in str(err)
    assert err.line == 1


def test_deep_block_nesting_is_refused() -> None:
    text = "plugins:\n  p:\n    config:\n" + "".join(
        " " * (6 + 2 * i) + f"k{i}:\n" for i in range(MAX_DEPTH + 5)
    )
    err = error(text)
    assert f"more than {MAX_DEPTH} levels" in str(err)


def test_too_long_text_is_refused() -> None:
    err = error("#" * (MAX_CONFIG_BYTES + 1))
    assert "longer than" in str(err)


# =========================================================================== ${VAR}


def test_variables_are_substituted_in_every_string_value() -> None:
    env = {
        "S": "sekrit",
        "D": "/data",
        "P": "withings",
        "T": "90s",
        "L": "warn",
        "W": "07:00",
        "Z": "Asia/Tokyo",
    }
    text = (
        "service: {state_dir: '${D}/state', tick_interval: '${T}', log_level: '${L}'}\n"
        "plugins:\n"
        "  withings:\n"
        "    schedule: {every: 1h, preferred_window: {start: '${W}', end: '08:00'}, timezone: '${Z}'}\n"
        "    config: {token: '${S}', list: ['a-${P}', {deep: '${S}'}], n: 5}\n"
        "routes: [{from: '${P}', event_type: e, to: other}]\n"
        "webhooks: {endpoints: [{path: '/hook/${P}', plugin: '${P}', secret: '${S}'}]}\n"
    )
    config = parse(text, env)
    assert config.service.state_dir == "/data/state"
    assert config.service.tick_interval == timedelta(seconds=90)
    assert config.service.log_level is LogLevel.WARN
    plugin = config.plugins["withings"]
    assert plugin.config == {"token": "sekrit", "list": ["a-withings", {"deep": "sekrit"}], "n": 5}
    assert plugin.schedule is not None
    assert plugin.schedule.window == Window(time(7, 0), time(8, 0))
    assert plugin.schedule.tz == ZoneInfo("Asia/Tokyo")
    assert config.routes[0].source == "withings"
    assert config.webhooks is not None
    assert config.webhooks.endpoints[0].path == "/hook/withings"
    assert config.webhooks.endpoints[0].secret == "sekrit"


@pytest.mark.parametrize("value", ["a: b\n- c", "{x: [1, 2]}", "${OTHER}", "&a *a", "'\"", "$$", "\n\n---\n"])
def test_a_variable_cannot_inject_structure(value: str) -> None:
    config = parse("plugins: {p: {config: {v: '${V}', w: ok}}}", {"V": value, "OTHER": "no"})
    assert config.plugins["p"].config == {"v": value, "w": "ok"}


@pytest.mark.parametrize(
    ("written", "env", "value"),
    [
        ("$${X}", {}, "${X}"),
        ("a$$b", {}, "a$b"),
        ("$$$${X}", {}, "$${X}"),
        ("$$${X}", {"X": "1"}, "$1"),
        ("cost: 5$", {}, "cost: 5$"),
        ("$X and $", {"X": "1"}, "$X and $"),
        ("${X:-fallback}", {}, "fallback"),
        ("${X:-fallback}", {"X": ""}, "fallback"),
        ("${X:-fallback}", {"X": "set"}, "set"),
        ("${X:-}", {}, ""),
        ("${X:-a:-b}", {}, "a:-b"),
        ("${X}", {"X": ""}, ""),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("pre-${A}-post", {"A": "mid"}, "pre-mid-post"),
    ],
)
def test_substitution_rules(written: str, env: dict[str, str], value: str) -> None:
    assert parse(f"plugins: {{p: {{config: {{v: '{written}'}}}}}}", env).plugins["p"].config["v"] == value


def test_an_unset_variable_names_itself_the_key_and_the_line() -> None:
    text = (
        "webhooks:\n  endpoints:\n    - path: /hook/github\n      plugin: gh\n"
        "      secret: ${GITHUB_WEBHOOK_SECRET}\n"
    )
    err = error(text, {})
    assert_error(
        err, "webhooks.endpoints[0].secret", 5, "environment variable GITHUB_WEBHOOK_SECRET is not set"
    )


def test_an_unset_variable_deep_in_plugin_config() -> None:
    err = error("plugins:\n  p:\n    config:\n      auth:\n        - token: ${API_TOKEN}\n", {})
    assert_error(err, "plugins.p.config.auth[0].token", 5, "API_TOKEN is not set")


def test_a_secret_empty_after_substitution_is_an_error() -> None:
    err = error("webhooks: {endpoints: [{path: /a, plugin: p, secret: '${S}'}]}", {"S": ""})
    assert_error(err, "webhooks.endpoints[0].secret", 1, "secret is empty after substituting")


@pytest.mark.parametrize(
    ("written", "fragment"),
    [
        ("${X", "without a closing"),
        ("${1X}", "not a variable reference"),
        ("${}", "not a variable reference"),
        ("${X-y}", "not a variable reference"),
        ("${ X }", "not a variable reference"),
    ],
)
def test_malformed_references(written: str, fragment: str) -> None:
    err = error(f"plugins: {{p: {{config: {{v: '{written}'}}}}}}", {"X": "1"})
    assert_error(err, "plugins.p.config.v", 1, fragment)


def test_numbers_and_booleans_may_come_from_the_environment() -> None:
    text = "plugins: {p: {enabled: '${ON}', max_outstanding_polls: '${N}', retry: {max_attempts: '${M:-6}'}}}"
    plugin = parse(text, {"ON": "false", "N": "3"}).plugins["p"]
    assert (plugin.enabled, plugin.max_outstanding_polls, plugin.retry.max_attempts) == (False, 3, 6)
    assert_error(error(text, {"ON": "no", "N": "3"}), "plugins.p.enabled", 1, "from the environment")
    assert_error(
        error(text, {"ON": "true", "N": "3.5"}), "plugins.p.max_outstanding_polls", 1, "from the environment"
    )
    assert_error(error(text, {"ON": "true", "N": "0"}), "plugins.p.max_outstanding_polls", 1, "at least 1")


def test_keys_are_not_substituted() -> None:
    assert parse("plugins: {p: {config: {'${K}': v}}}", {"K": "x"}).plugins["p"].config == {"${K}": "v"}


@PROPERTY
@given(st.text())
def test_text_without_a_dollar_is_untouched(text: str) -> None:
    assume("$" not in text)
    assert substitute(text, {}) == text


@PROPERTY
@given(st.text(), st.dictionaries(st.sampled_from(["A", "X", "_b", "NAME_2"]), st.text(max_size=5)))
def test_escaping_every_dollar_gives_the_text_back(text: str, env: dict[str, str]) -> None:
    assert substitute(text.replace("$", "$$"), env) == text


@PROPERTY
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), st.text(), st.text(), st.text())
def test_a_reference_becomes_exactly_its_value(name: str, value: str, before: str, after: str) -> None:
    esc_before, esc_after = before.replace("$", "$$"), after.replace("$", "$$")
    assert substitute(f"{esc_before}${{{name}}}{esc_after}", {name: value}) == before + value + after


# =========================================================================== paths


@pytest.mark.parametrize(
    ("written", "resolved"),
    [
        ("./state", "/srv/ductile/state"),
        ("state", "/srv/ductile/state"),
        ("../var/state", "/srv/var/state"),
        ("/var/lib/ductile", "/var/lib/ductile"),
        ("~/state", "/home/op/state"),
        ("~", "/home/op"),
        ("a//b/./c/", "/srv/ductile/a/b/c"),
    ],
)
def test_directories_resolve_against_the_config_directory(written: str, resolved: str) -> None:
    config = parse(f"service: {{state_dir: '{written}'}}\nplugins_dir: '{written}'\n")
    assert config.service.state_dir == resolved
    assert config.plugins_dir == resolved


# =========================================================================== machine zone


def test_machine_timezone_is_a_real_zone_on_this_machine() -> None:
    zone = machine_timezone()
    assert isinstance(zone, ZoneInfo)
    assert str(zone)  # a key, e.g. 'Etc/UTC' or 'Europe/Berlin'


def test_machine_timezone_follows_tz_and_knows_dst() -> None:
    zone = machine_timezone(env={"TZ": "Europe/Berlin"})
    assert zone == ZoneInfo("Europe/Berlin")
    winter = datetime(2026, 1, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset()
    summer = datetime(2026, 7, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset()
    assert (winter, summer) == (timedelta(hours=1), timedelta(hours=2))


# =========================================================================== properties: only ConfigError

SAMPLE: dict[str, Any] = yaml.safe_load(example("full.yaml").replace("${", "$${"))

GARBAGE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "0s",
            "6h",
            "daily",
            "1MB",
            "06:00",
            "${X}",
            "${",
            "$$",
            "Europe/Berlin",
            "/p",
            "x:1",
            "yes",
            "NO",
            "* * * * *",
            "@daily",
            "poll",
            "skip",
            "127.0.0.1:0",
            "ünïcode",
            "a" * 300,
        ]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
GARBAGE_KEYS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["every", "cron", "to", "from", "<<", "x-y", "enabled", "service", "plugins", "name"]),
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(tree: Any, data: st.DataObject) -> Any:
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path = data.draw(st.sampled_from(_paths(tree)))
        if not path:
            tree = data.draw(st.one_of(GARBAGE_VALUES, st.just(tree)))
            continue
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = data.draw(st.sampled_from(["drop", "rename", "replace", "duplicate", "wrap", "null"]))
        if op == "drop":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[data.draw(GARBAGE_KEYS)] = parent.pop(last)
        elif op == "replace":
            parent[last] = data.draw(GARBAGE_VALUES)
        elif op == "duplicate":
            if isinstance(parent, list):
                parent.append(copy.deepcopy(parent[last]))
            else:
                parent[data.draw(GARBAGE_KEYS)] = copy.deepcopy(parent[last])
        elif op == "wrap":
            parent[last] = [parent[last]]
        else:
            parent[last] = None
    return tree


def only_config_or_config_error(text: str, env: dict[str, str] | None = None) -> None:
    try:
        config: Config | None = parse(text, env)
        err = None
    except ConfigError as e:
        config, err = None, e
    if err is None:
        assert isinstance(config, Config)
        return
    assert "please report" not in str(err), str(err)
    assert str(err).strip()
    if err.line is not None:  # lines as YAML counts them (\r, NEL, LS and PS break lines too)
        assert 1 <= err.line <= len(re.split(r"\r\n|[\n\r\x85\u2028\u2029]", text))


@PROPERTY
@given(st.data())
def test_a_mutated_config_gives_a_config_or_a_config_error(data: st.DataObject) -> None:
    tree = _mutate(SAMPLE, data)
    try:
        text = yaml.safe_dump(tree, allow_unicode=True)
    except yaml.YAMLError:  # pragma: no cover - safe_dump handles every value we draw
        return
    only_config_or_config_error(text)


TEXT_OPS = st.sampled_from(["delete", "duplicate", "insert", "indent", "dedent", "truncate", "swap"])


@PROPERTY
@given(st.data())
def test_text_edits_give_a_config_or_a_config_error(data: st.DataObject) -> None:
    lines = example("full.yaml").splitlines()
    snippet = st.one_of(
        st.text(max_size=10),
        st.sampled_from(
            [": ", "- ", "&a ", "*a", "<<: *a", "!!str", "? ", "{", "[", "'", '"', "#", "\t", "${", "|"]
        ),
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        if not lines:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
        op = data.draw(TEXT_OPS)
        if op == "delete":
            del lines[at]
        elif op == "duplicate":
            lines.insert(at, lines[data.draw(st.integers(min_value=0, max_value=len(lines) - 1))])
        elif op == "insert":
            col = data.draw(st.integers(min_value=0, max_value=len(lines[at])))
            lines[at] = lines[at][:col] + data.draw(snippet) + lines[at][col:]
        elif op == "indent":
            lines[at] = "  " + lines[at]
        elif op == "dedent":
            lines[at] = lines[at][2:]
        elif op == "truncate":
            lines[at] = lines[at][: data.draw(st.integers(min_value=0, max_value=len(lines[at])))]
        else:
            other = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
    only_config_or_config_error("\n".join(lines) + "\n", ENV)


YAML_TOKENS = st.sampled_from(
    [
        "a",
        "plugins",
        "service",
        ":",
        ": ",
        "-",
        "- ",
        " ",
        "  ",
        "\n",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&x",
        "*x",
        "<<",
        "!!int",
        "!!str",
        "!",
        "?",
        "'",
        '"',
        "#",
        "|",
        ">",
        "%YAML 1.1",
        "---",
        "...",
        "~",
        "1",
        "1.5",
        ".inf",
        "${A}",
        "$$",
        "\\",
        "\t",
        "\x00",
        "é",
        "\ufeff",
        "@",
        "`",
    ]
)


@PROPERTY
@given(st.one_of(st.text(max_size=200), st.lists(YAML_TOKENS, max_size=60).map("".join)))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    only_config_or_config_error(text)


# NEL, LS and PS are line breaks to YAML: PyYAML's emitter writes them raw inside quotes, and
# any YAML reader (PyYAML's own too) folds them back into a space. Not something a user types.
JSON_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x85\u2028\u2029"), max_size=20)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT
    | st.sampled_from(
        [
            "NO",
            "yes",
            "off",
            "2024-01-01",
            "06:00",
            "0755",
            "0x1F",
            "1_000",
            "1:30",
            "~",
            "null",
            "true",
            ".inf",
            "1e3",
            "<<",
            "!!str",
            "${NOT_SET}",
            "$$",
        ]
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=6))
def test_plugin_config_survives_yaml_exactly(value: dict[str, Any]) -> None:
    # Any JSON object a user writes as YAML (as safe_dump writes it) reaches the plugin unchanged.
    text = yaml.safe_dump({"plugins": {"p": {"config": _escape_dollars(value)}}}, allow_unicode=True)
    assert parse(text).plugins["p"].config == value


def _escape_dollars(value: Any) -> Any:
    """What a user writes for a literal '$' in a value (keys are never substituted)."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: _escape_dollars(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape_dollars(item) for item in value]
    return value


@PROPERTY
@given(
    st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=3000)).map(
        lambda d: timedelta(milliseconds=d // timedelta(milliseconds=1) or 1)
    ),
    st.integers(min_value=1, max_value=1_000_000),
)
def test_durations_and_counts_round_trip(duration: timedelta, count: int) -> None:
    text = (
        f"plugins: {{p: {{retry: {{max_attempts: {count}, backoff_base: {format_duration(duration)}}}, "
        f"circuit_breaker: {{threshold: {count}, reset_after: {format_duration(duration)}}}}}}}"
    )
    plugin = parse(text).plugins["p"]
    assert plugin.retry == RetryPolicy(max_attempts=count, backoff_base=duration)
    assert plugin.circuit_breaker == BreakerPolicy(threshold=count, reset_after=duration)


@pytest.mark.parametrize(
    "text",
    [
        "service:\n  bogus:\n",
        "service:\n  tick_intervall:\n",
        "plugins:\n  a:\n    retry:\n      max_attemps:\n",
    ],
)
def test_an_unknown_key_is_refused_even_with_an_empty_value(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert "unknown" in str(err.value).lower() or "not a" in str(err.value).lower()
