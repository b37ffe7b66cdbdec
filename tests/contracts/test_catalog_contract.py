"""The Catalog contract: the rules every catalog shares (ADR 0012).

Run against the dictionary fake (``ductile.fakes.catalog.DictCatalog``) and
the daemon's catalog on a real plugins directory
(``ductile.adapters.plugin_dir.FilesystemCatalog``). The reasons' wording is
each implementation's own; what a reason must *name* is part of the contract.
"""

from __future__ import annotations

from ductile.domain.config import PluginConfig
from ductile.domain.plugin import Discovery
from tests.support.cases import CatalogCase


def reasons(found: Discovery) -> dict[str, str]:
    return {r.name: r.reason for r in found.refused}


# --------------------------------------------------------------------------- discovery


def test_a_plugin_is_loaded_with_its_manifest_directory_and_executable(catalog_case: CatalogCase) -> None:
    catalog_case.add("alpha", commands=("poll", "health"))
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="alpha")))

    assert (list(found.plugins), found.refused, found.disabled) == (["alpha"], (), ())
    plugin = found.plugins["alpha"]
    assert plugin.name == "alpha"
    manifest = plugin.manifest
    assert (manifest.name, manifest.version, manifest.protocol, manifest.entrypoint) == (
        "alpha",
        "1.0.0",
        1,
        "run",
    )
    assert manifest.commands == frozenset({"poll", "health"})
    assert plugin.directory == catalog_case.directory("alpha")
    assert plugin.executable == catalog_case.executable("alpha")
    assert catalog_case.catalog.verify(plugin) is None


def test_a_plugin_the_config_does_not_name_is_loaded_with_the_defaults(catalog_case: CatalogCase) -> None:
    catalog_case.add("alpha")
    catalog_case.add("beta")
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="alpha")))
    assert sorted(found.plugins) == ["alpha", "beta"]
    assert found.refused == ()


def test_a_configured_name_without_a_plugin_is_refused_naming_its_directory(
    catalog_case: CatalogCase,
) -> None:
    catalog_case.add("alpha")
    found = catalog_case.catalog.discover(
        catalog_case.config(PluginConfig(name="alpha"), PluginConfig(name="ghost"))
    )
    assert list(found.plugins) == ["alpha"]
    [refusal] = found.refused
    assert refusal.name == "ghost"
    assert refusal.directory.endswith("/ghost")
    assert refusal.directory in refusal.reason


def test_a_disabled_plugin_is_listed_as_disabled_neither_loaded_nor_refused(
    catalog_case: CatalogCase,
) -> None:
    catalog_case.add("alpha")
    catalog_case.add("beta")
    found = catalog_case.catalog.discover(
        catalog_case.config(PluginConfig(name="alpha"), PluginConfig(name="beta", enabled=False))
    )
    assert list(found.plugins) == ["alpha"]
    assert found.disabled == ("beta",)
    assert found.refused == ()


def test_a_disabled_name_without_a_plugin_is_refused(catalog_case: CatalogCase) -> None:
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="ghost", enabled=False)))
    assert found.plugins == {}
    assert found.disabled == ()
    assert [r.name for r in found.refused] == ["ghost"]


def test_missing_required_config_keys_refuse_a_plugin_naming_each_key(catalog_case: CatalogCase) -> None:
    catalog_case.add("p", required=("client_id", "client_secret"))

    def discover(**config: str) -> Discovery:
        return catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="p", config=config)))

    half = reasons(discover(client_id="x"))["p"]
    assert "client_secret" in half
    assert "client_id" not in half
    unconfigured = reasons(catalog_case.catalog.discover(catalog_case.config()))["p"]
    assert "client_id" in unconfigured
    assert "client_secret" in unconfigured
    whole = discover(client_id="x", client_secret="y")
    assert (list(whole.plugins), whole.refused) == (["p"], ())


def test_a_plugin_that_fails_a_check_is_refused_with_a_reason_and_the_others_still_load(
    catalog_case: CatalogCase,
) -> None:
    for name in ("alpha", "beta", "gamma"):
        catalog_case.add(name)
    catalog_case.fail_discovery("beta")
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="beta")))
    assert sorted(found.plugins) == ["alpha", "gamma"]
    [refusal] = found.refused
    assert refusal.name == "beta"
    assert refusal.reason


def test_a_disabled_plugin_is_not_judged_further(catalog_case: CatalogCase) -> None:
    catalog_case.add("broken")
    catalog_case.fail_discovery("broken")
    catalog_case.add("keyless", required=("token",))
    found = catalog_case.catalog.discover(
        catalog_case.config(
            PluginConfig(name="broken", enabled=False), PluginConfig(name="keyless", enabled=False)
        )
    )
    assert found.disabled == ("broken", "keyless")
    assert (found.plugins, found.refused) == ({}, ())


def test_every_list_is_in_name_order(catalog_case: CatalogCase) -> None:
    for name in ("delta", "alpha", "charlie", "bravo", "echo", "foxtrot"):
        catalog_case.add(name)
    catalog_case.fail_discovery("echo")
    catalog_case.fail_discovery("bravo")
    found = catalog_case.catalog.discover(
        catalog_case.config(
            PluginConfig(name="foxtrot", enabled=False),
            PluginConfig(name="charlie", enabled=False),
            PluginConfig(name="zulu"),
            PluginConfig(name="able"),
        )
    )
    assert list(found.plugins) == ["alpha", "delta"]
    assert [r.name for r in found.refused] == ["able", "bravo", "echo", "zulu"]
    assert found.disabled == ("charlie", "foxtrot")


def test_each_discovery_sees_the_plugins_as_they_are_now(catalog_case: CatalogCase) -> None:
    config = catalog_case.config(PluginConfig(name="alpha"))
    catalog_case.add("alpha")
    catalog_case.add("beta")
    assert sorted(catalog_case.catalog.discover(config).plugins) == ["alpha", "beta"]

    catalog_case.remove("beta")  # not configured: gone without a trace
    catalog_case.add("gamma")
    again = catalog_case.catalog.discover(config)
    assert sorted(again.plugins) == ["alpha", "gamma"]
    assert again.refused == ()

    catalog_case.remove("alpha")  # configured: refused
    last = catalog_case.catalog.discover(config)
    assert list(last.plugins) == ["gamma"]
    assert [r.name for r in last.refused] == ["alpha"]


# --------------------------------------------------------------------------- the check before a spawn


def test_verify_repeats_the_trust_check_before_each_spawn(catalog_case: CatalogCase) -> None:
    catalog_case.add("alpha")
    catalog_case.add("beta")
    found = catalog_case.catalog.discover(catalog_case.config())
    alpha, beta = found.plugins["alpha"], found.plugins["beta"]

    catalog_case.fail_trust("alpha")
    reason = catalog_case.catalog.verify(alpha)
    assert isinstance(reason, str)
    assert reason
    assert catalog_case.catalog.verify(beta) is None

    catalog_case.mend_trust("alpha")
    assert catalog_case.catalog.verify(alpha) is None


def test_verify_refuses_a_plugin_that_went_away_since_it_was_loaded(catalog_case: CatalogCase) -> None:
    catalog_case.add("alpha")
    plugin = catalog_case.catalog.discover(catalog_case.config()).plugins["alpha"]
    catalog_case.remove("alpha")
    reason = catalog_case.catalog.verify(plugin)
    assert isinstance(reason, str)
    assert reason


# --------------------------------------------------------------------------- aliases (uses:)


def test_an_alias_runs_its_bases_files_under_its_own_name(catalog_case: CatalogCase) -> None:
    catalog_case.add("switch", commands=("handle",))
    found = catalog_case.catalog.discover(
        catalog_case.config(
            PluginConfig(name="switch"),
            PluginConfig(name="youtube_check", uses="switch", config={"field": "url"}),
            PluginConfig(name="second", uses="youtube_check"),
        )
    )
    assert sorted(found.plugins) == ["second", "switch", "youtube_check"]
    assert found.refused == ()
    base, alias, chained = (found.plugins[n] for n in ("switch", "youtube_check", "second"))
    assert (alias.name, alias.base, chained.base) == ("youtube_check", "switch", "switch")
    assert (alias.directory, alias.executable) == (base.directory, base.executable)
    assert alias.manifest == base.manifest
    assert catalog_case.catalog.verify(alias) is None


def test_an_alias_of_an_unknown_plugin_is_refused_naming_the_key_and_a_near_name(
    catalog_case: CatalogCase,
) -> None:
    catalog_case.add("switch")
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="check", uses="swtich")))
    assert list(found.plugins) == ["switch"]
    reason = reasons(found)["check"]
    assert reason.startswith("plugins.check.uses: no plugin named 'swtich'")
    assert "did you mean 'switch'?" in reason


def test_an_alias_is_held_to_its_bases_required_config_keys(catalog_case: CatalogCase) -> None:
    catalog_case.add("fetch", required=("url",))
    found = catalog_case.catalog.discover(
        catalog_case.config(
            PluginConfig(name="fetch", config={"url": "u"}), PluginConfig(name="page", uses="fetch")
        )
    )
    assert list(found.plugins) == ["fetch"]
    assert "url" in reasons(found)["page"]


def test_a_disabled_alias_is_listed_as_disabled(catalog_case: CatalogCase) -> None:
    catalog_case.add("switch")
    found = catalog_case.catalog.discover(
        catalog_case.config(PluginConfig(name="check", uses="switch", enabled=False))
    )
    assert list(found.plugins) == ["switch"]
    assert found.disabled == ("check",)
    assert found.refused == ()


def test_a_timeout_for_a_command_the_manifest_lacks_refuses_the_plugin(catalog_case: CatalogCase) -> None:
    from datetime import timedelta

    from ductile.domain.config import Timeouts

    catalog_case.add("alpha", commands=("poll",))
    timeouts = Timeouts(custom={"sync": timedelta(seconds=90)})
    found = catalog_case.catalog.discover(catalog_case.config(PluginConfig(name="alpha", timeouts=timeouts)))
    assert found.plugins == {}
    assert "timeouts names sync" in reasons(found)["alpha"]
