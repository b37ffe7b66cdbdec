"""The runtime: the one answer to "what state is this plugin in, and why", and whether its init is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from ductile.app.runtime import InitState, PluginState, PluginStatus, Runtime, init_fingerprint
from ductile.domain.config import PluginConfig
from ductile.domain.plugin import Discovery, Plugin, Refusal
from ductile.ports.store import InitRecord
from tests.support.builders import PLUGINS_DIR, directory, every, executable, make_config, manifest

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def plugin(name: str, *commands: str) -> Plugin:
    return Plugin(manifest=manifest(name, *commands), directory=directory(name), executable=executable(name))


def runtime(*, unhealthy: dict[str, str] | None = None) -> Runtime:
    """alpha (loaded, scheduled), beta (loaded, with init), gamma (refused), delta (disabled
    on disk), epsilon (configured as disabled and without a directory: refused)."""
    config = make_config(
        PluginConfig(name="alpha", schedule=every(timedelta(minutes=5)), config={"k": 1}),
        PluginConfig(name="beta", schedule=every(timedelta(minutes=5))),
        PluginConfig(name="delta", enabled=False),
        PluginConfig(name="epsilon", enabled=False),
    )
    discovery = Discovery(
        plugins={"alpha": plugin("alpha", "poll", "handle"), "beta": plugin("beta", "poll", "init")},
        refused=(
            Refusal(name="gamma", directory=directory("gamma"), reason="entrypoint is not executable"),
            Refusal(name="epsilon", directory=directory("epsilon"), reason="no such directory"),
        ),
        disabled=("delta",),
    )
    return Runtime(config=config, discovery=discovery, unhealthy=unhealthy or {})


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("alpha", PluginStatus(PluginState.LOADED)),
        ("beta", PluginStatus(PluginState.UNHEALTHY, "init failed: no token")),
        ("gamma", PluginStatus(PluginState.REFUSED, "entrypoint is not executable")),
        ("delta", PluginStatus(PluginState.DISABLED)),
        ("epsilon", PluginStatus(PluginState.REFUSED, "no such directory")),
        ("ghost", PluginStatus(PluginState.ABSENT)),
    ],
)
def test_status_of_says_what_state_a_plugin_is_in_and_why(name: str, status: PluginStatus) -> None:
    assert runtime(unhealthy={"beta": "init failed: no token"}).status_of(name) == status


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("alpha", None),
        ("beta", "plugin 'beta' is unhealthy: init failed: no token"),
        ("gamma", "plugin 'gamma' is refused: entrypoint is not executable"),
        ("delta", "plugin 'delta' is disabled"),
        ("epsilon", "plugin 'epsilon' is refused: no such directory"),
        ("ghost", f"plugin 'ghost' is not loaded (no such plugin in {PLUGINS_DIR})"),
    ],
)
def test_why_not_runnable_words_the_status(name: str, reason: str | None) -> None:
    assert runtime(unhealthy={"beta": "init failed: no token"}).why_not_runnable(name, "poll") == reason


def test_a_loaded_plugin_is_not_runnable_for_a_command_its_manifest_lacks() -> None:
    assert runtime().why_not_runnable("alpha", "init") == (
        "plugin 'alpha' does not support 'init' (its manifest lists: handle, poll)"
    )


def record(rt: Runtime, name: str, *, ok: bool, error: str | None = None, stale: bool = False) -> InitRecord:
    fingerprint = "0" * 16 if stale else init_fingerprint(rt.plugins[name], rt.settings(name))
    return InitRecord(plugin=name, fingerprint=fingerprint, ok=ok, error=error, at=AT)


def test_init_is_pending_when_never_run_or_when_the_manifest_or_config_changed() -> None:
    rt = runtime()
    assert rt.init_status("beta", None).state is InitState.PENDING
    assert rt.init_status("beta", record(rt, "beta", ok=True, stale=True)).state is InitState.PENDING


def test_init_is_ok_or_failed_with_the_reason_by_the_record_of_the_same_fingerprint() -> None:
    rt = runtime()
    ok = rt.init_status("beta", record(rt, "beta", ok=True))
    assert (ok.state, ok.reason) == (InitState.OK, None)
    assert ok.fingerprint == init_fingerprint(rt.plugins["beta"], rt.settings("beta"))
    failed = rt.init_status("beta", record(rt, "beta", ok=False, error="no token"))
    assert (failed.state, failed.reason) == (InitState.FAILED, "init failed: no token")
    silent = rt.init_status("beta", record(rt, "beta", ok=False))
    assert silent.reason == "init failed: no reason recorded"


def test_a_plugin_without_init_has_none_to_run() -> None:
    assert runtime().init_status("alpha", None).state is InitState.NONE


def test_schedules_and_targets_are_read_only_views_not_copies() -> None:
    rt = runtime(unhealthy={"beta": "init failed: no token"})
    assert set(rt.schedules()) == {"alpha/default"}  # beta is unhealthy: not scheduled
    assert set(rt.targets()) == {"alpha", "beta"}
    assert rt.schedules() is rt.schedules()
    assert rt.targets() is rt.targets()
    with pytest.raises(TypeError):
        rt.schedules()["beta"] = rt.settings("alpha").schedule  # type: ignore[index]
    with pytest.raises(TypeError):
        del rt.targets()["alpha"]  # type: ignore[attr-defined]


def test_the_config_fingerprint_leaves_out_what_is_each_hosts_own() -> None:
    """Nodes of one shared store compare fingerprints (ADR 0034): two hosts' configs that differ
    only in their own directories, worker count, listeners and store URL agree; a plugin's
    setting does not."""
    from ductile.app.runtime import config_fingerprint
    from ductile.domain.config import ApiConfig, StoreConfig, WebhooksConfig

    discovery = Discovery(plugins={"alpha": plugin("alpha", "poll")})
    alpha = PluginConfig(name="alpha", schedule=every(timedelta(minutes=5)))
    base = make_config(alpha)
    host_b = attrs.evolve(
        base,
        service=attrs.evolve(base.service, state_dir="/var/lib/other", max_workers=4),
        webhooks=WebhooksConfig(host="10.0.0.2", port=9001),
        api=ApiConfig(host="127.0.0.1", port=9999),
        store=StoreConfig(url="postgresql://b@db/ductile"),
    )
    base = attrs.evolve(
        base, webhooks=WebhooksConfig(host="10.0.0.1", port=9000), api=ApiConfig(host="127.0.0.1", port=8080)
    )
    assert config_fingerprint(base, discovery) == config_fingerprint(host_b, discovery)
    other = make_config(PluginConfig(name="alpha", schedule=every(timedelta(minutes=6))))
    assert config_fingerprint(other, discovery) != config_fingerprint(base, discovery)
