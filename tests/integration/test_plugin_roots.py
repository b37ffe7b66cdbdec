"""Discovery over several plugin roots, v2 manifests on disk, aliases and their trust check.

Real folders in ``tmp_path``: the first root holding a name wins and a later
copy is refused naming both paths; a v2 plugin is known by its manifest's
name, whatever its folder is called; a refused v2 manifest names the file,
the key path and the line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ductile.adapters.config import parse_config
from ductile.adapters.plugin_dir import FilesystemCatalog, discover
from ductile.domain.config import PluginConfig
from ductile.domain.plugin import Discovery
from tests.support.plugins import plugin_folder, shell_plugin, v2_folder

SCRIPT = shell_plugin('echo \'{"status": "ok"}\'')

V2 = """
manifest_spec: ductile.plugin
manifest_version: 1
name: feed_watch
version: 0.2.0
protocol: 2
entrypoint: run
concurrency_safe: false
commands:
  - name: poll
    type: write
  - name: sync
    type: write
"""


def roots(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        root = tmp_path / name
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        made.append(root)
    return made


def reasons(found: Discovery) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for refusal in found.refused:
        out.setdefault(refusal.name, []).append(refusal.reason)
    return out


def test_the_first_root_holding_a_name_wins_and_a_duplicate_is_refused_with_both_paths(
    tmp_path: Path,
) -> None:
    first, second = roots(tmp_path, "plugins", "opt")
    plugin_folder(first, "feeds", SCRIPT)
    plugin_folder(second, "feeds", SCRIPT)
    plugin_folder(second, "extra", SCRIPT)
    found = discover([str(first), str(second)], {})
    assert sorted(found.plugins) == ["extra", "feeds"]
    assert found.plugins["feeds"].directory == str(first / "feeds")
    assert found.plugins["extra"].root == str(second)
    [reason] = reasons(found)["feeds"]
    assert str(second / "feeds") in reason
    assert str(first / "feeds") in reason
    assert "first plugin root holding a name wins" in reason
    # The loaded copy is still loaded: status_of reads plugins first.
    catalog = FilesystemCatalog()
    config = parse_config(
        f"plugin_roots: [{first}, {second}]\n",
        source="x",
        base_dir=str(tmp_path),
        env={},
        local_tz=None,  # type: ignore[arg-type]
    )
    assert config.roots == (str(first), str(second))
    again = catalog.discover(config)
    assert catalog.verify(again.plugins["extra"]) is None
    assert catalog.verify(again.plugins["feeds"]) is None


def test_plugins_dir_and_plugin_roots_together_search_plugins_dir_first(tmp_path: Path) -> None:
    from datetime import UTC

    config = parse_config(
        "plugins_dir: ./a\nplugin_roots: [./b, ./a]\n",
        source="x",
        base_dir=str(tmp_path),
        env={},
        local_tz=UTC,
    )
    assert config.roots == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert config.plugins_dir == str(tmp_path / "a")


def test_a_name_found_in_no_root_is_refused_naming_every_root(tmp_path: Path) -> None:
    first, second = roots(tmp_path, "plugins", "opt")
    found = discover([str(first), str(second)], {"ghost": {}})
    [reason] = reasons(found)["ghost"]
    assert str(first / "ghost") in reason
    assert str(second / "ghost") in reason


def test_a_v2_plugin_is_known_by_its_manifests_name_not_its_folder(tmp_path: Path) -> None:
    (root,) = roots(tmp_path, "plugins")
    v2_folder(root, "feed-watch-0.2", V2, SCRIPT)
    found = discover(str(root), {"feed-watch-0.2": {}})
    plugin = found.plugins["feed_watch"]
    assert (plugin.name, plugin.protocol, plugin.manifest.concurrency_safe) == ("feed_watch", 2, False)
    assert plugin.supports("sync")
    [reason] = reasons(found)["feed-watch-0.2"]
    assert "holds the plugin 'feed_watch'" in reason
    assert "configure it as plugins.feed_watch" in reason


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ("    typ: write\n", "commands[1].typ (line 12): unknown key 'typ' (did you mean 'type'?)"),
        (
            "fact_output: []\n",
            "fact_output (line 13): unknown key 'fact_output' (did you mean 'fact_outputs'?)",
        ),
    ],
)
def test_a_refused_v2_manifest_names_the_file_the_key_path_and_the_line(
    tmp_path: Path, bad: str, where: str
) -> None:
    (root,) = roots(tmp_path, "plugins")
    text = V2.replace(
        "  - name: sync\n    type: write\n",
        "  - name: sync\n" + ("" if bad.startswith(" ") else "    type: write\n"),
    )
    text = text.rstrip("\n") + "\n" + bad
    folder = v2_folder(root, "fw", text, SCRIPT)
    found = discover(str(root), {})
    assert found.plugins == {}
    [reason] = reasons(found)["fw"]
    assert reason.startswith(f"{folder / 'manifest.yaml'}: {where}")


def test_an_alias_of_a_v2_plugin_loads_and_passes_the_trust_check(tmp_path: Path) -> None:
    (root,) = roots(tmp_path, "plugins")
    v2_folder(root, "fw", V2, SCRIPT)
    settings = {"morning_feed": PluginConfig(name="morning_feed", uses="feed_watch")}
    found = discover(str(root), settings)
    alias = found.plugins["morning_feed"]
    assert (alias.name, alias.base, alias.link) == ("morning_feed", "feed_watch", str(root / "fw"))
    catalog = FilesystemCatalog()
    catalog._plugins_dir = str(root)
    assert catalog.verify(alias) is None
    (root / "fw" / "run").chmod(0o777)
    assert "world-writable" in (catalog.verify(alias) or "")


def test_an_alias_may_use_a_disabled_plugin_whose_own_instance_stays_off(tmp_path: Path) -> None:
    (root,) = roots(tmp_path, "plugins")
    plugin_folder(root, "switch", SCRIPT)
    settings = {
        "switch": PluginConfig(name="switch", enabled=False),
        "check": PluginConfig(name="check", uses="switch"),
    }
    found = discover(str(root), settings, disabled=["switch"])
    assert sorted(found.plugins) == ["check"]
    assert found.disabled == ("switch",)
    assert found.plugins["check"].base == "switch"


def test_an_alias_with_the_name_of_a_plugin_on_disk_is_refused(tmp_path: Path) -> None:
    (root,) = roots(tmp_path, "plugins")
    plugin_folder(root, "switch", SCRIPT)
    plugin_folder(root, "check", SCRIPT)
    found = discover(str(root), {"check": PluginConfig(name="check", uses="switch")})
    assert sorted(found.plugins) == ["switch"]
    [reason] = reasons(found)["check"]
    assert "an alias needs a name of its own" in reason
