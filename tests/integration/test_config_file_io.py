"""The config reader against real files, directories, symlinks and /etc-style zone settings."""

from __future__ import annotations

import importlib.resources
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.adapters.config import (
    MAX_CONFIG_BYTES,
    load_config,
    machine_timezone,
    resolve_config_path,
)
from ductile.domain.config import Config
from ductile.domain.errors import ConfigError

EXAMPLES = Path(__file__).parent.parent / "unit" / "config_examples"
ENV = {"GITHUB_WEBHOOK_SECRET": "gh", "WITHINGS_SECRET": "w", "HOME": "/home/op"}
UTC_ZONE = ZoneInfo("UTC")


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def load_error(path: str | os.PathLike[str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV, local_tz=UTC_ZONE)
    return info.value


# =========================================================================== paths


def test_relative_dirs_follow_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write(tmp_path / "etc" / "ductile" / "ductile.yaml", (EXAMPLES / "full.yaml").read_text())
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = load_config(config_file, env=ENV, local_tz=UTC_ZONE)
    assert config.service.state_dir == str(tmp_path / "etc" / "ductile" / "state")
    assert config.plugins_dir == str(tmp_path / "etc" / "ductile" / "plugins")
    assert config.source == str(config_file)


def test_a_relative_config_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "d.yaml", "service: {state_dir: ../var}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/d.yaml", env=ENV, local_tz=UTC_ZONE)
    assert config.source == str(tmp_path / "conf" / "d.yaml")
    assert config.service.state_dir == str(tmp_path / "var")
    monkeypatch.chdir("/")  # the loaded paths do not move with the process
    assert config.service.state_dir == str(tmp_path / "var")


def test_a_symlinked_config_resolves_against_the_link_directory(tmp_path: Path) -> None:
    target = write(tmp_path / "real" / "ductile.yaml", "plugins_dir: ./p\n")
    link = tmp_path / "etc" / "ductile.yaml"
    link.parent.mkdir()
    link.symlink_to(target)
    assert load_config(link, env=ENV, local_tz=UTC_ZONE).plugins_dir == str(tmp_path / "etc" / "p")


def test_the_process_environment_and_zone_are_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write(
        tmp_path / "d.yaml",
        "plugins: {p: {schedule: {every: 1h}, config: {token: '${DUCTILE_TEST_TOKEN}'}}}\n",
    )
    monkeypatch.setenv("DUCTILE_TEST_TOKEN", "from-the-process")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    plugin = load_config(file).plugins["p"]
    assert plugin.config == {"token": "from-the-process"}
    assert plugin.schedule is not None
    assert plugin.schedule.tz == ZoneInfo("Asia/Tokyo")


# =========================================================================== file problems


def test_a_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.yaml")
    assert "does not exist" in str(err)
    assert str(tmp_path / "nope.yaml") in str(err)


def test_a_directory(tmp_path: Path) -> None:
    assert "is a directory" in str(load_error(tmp_path))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file(tmp_path: Path) -> None:
    file = write(tmp_path / "secret.yaml", "plugins: {}\n")
    file.chmod(0)
    try:
        assert "permission denied" in str(load_error(file))
    finally:
        file.chmod(0o600)


def test_a_path_with_a_nul_byte(tmp_path: Path) -> None:
    assert "not a usable file path" in str(load_error(str(tmp_path / "a\x00b")))


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    file = write(tmp_path / "d.yaml", b"plugins:\n  p:\n    config: {x: caf\xe9}\n")
    err = load_error(file)
    assert err.line == 3
    assert "not valid UTF-8" in str(err)
    assert "0xe9" in str(err)


def test_utf16_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path / "d.yaml", "plugins: {}\n".encode("utf-16"))
    assert "not valid UTF-8" in str(load_error(file))


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    file = write(tmp_path / "d.yaml", b"\xef\xbb\xbfplugins: {p: {config: {x: caf\xc3\xa9}}}\n")
    assert load_config(file, env=ENV, local_tz=UTC_ZONE).plugins["p"].config == {"x": "café"}


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    file = write(tmp_path / "big.yaml", b"#" * (MAX_CONFIG_BYTES + 1))
    assert "larger than 1024 KiB" in str(load_error(file))


def test_an_empty_file_is_the_default_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "d.yaml", b""), env=ENV, local_tz=UTC_ZONE)
    assert config.plugins == {}
    assert config.service.state_dir == str(tmp_path / "state")


def test_errors_from_a_real_file_carry_its_lines(tmp_path: Path) -> None:
    text = (EXAMPLES / "full.yaml").read_text().replace("max_attempts: 5", "max_attempts: 0")
    line = 1 + text.splitlines().index("    retry: {max_attempts: 0, backoff_base: 60s}")
    err = load_error(write(tmp_path / "d.yaml", text))
    assert (err.path, err.line) == ("plugins.withings.retry.max_attempts", line)


def test_every_example_loads_from_disk(tmp_path: Path) -> None:
    for example in EXAMPLES.glob("*.yaml"):
        copy = tmp_path / example.name
        shutil.copy(example, copy)
        assert isinstance(load_config(copy, env=ENV, local_tz=UTC_ZONE), Config)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=8)).map(
            lambda cut: _spliced(cut[0], cut[1])
        ),
    )
)
def test_any_bytes_give_a_config_or_a_config_error(tmp_path: Path, data: bytes) -> None:
    file = write(tmp_path / "fuzz.yaml", data)
    try:
        outcome: Config | ConfigError = load_config(file, env=ENV, local_tz=UTC_ZONE)
    except ConfigError as e:
        outcome = e
    assert isinstance(outcome, Config) or "please report" not in str(outcome), str(outcome)


def _spliced(at: int, junk: bytes) -> bytes:
    """The full example with ``junk`` put in at byte ``at`` (wrapped to its length)."""
    raw = (EXAMPLES / "full.yaml").read_bytes()
    at %= len(raw)
    return raw[:at] + junk + raw[at:]


# =========================================================================== which file


def test_resolve_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"DUCTILE_CONFIG": "/etc/ductile/from-env.yaml", "HOME": "/home/op"}
    assert resolve_config_path("/opt/given.yaml", env) == Path("/opt/given.yaml")
    assert resolve_config_path("given.yaml", env) == tmp_path / "given.yaml"
    assert resolve_config_path(None, env) == Path("/etc/ductile/from-env.yaml")
    assert resolve_config_path(None, {}) == tmp_path / "ductile.yaml"
    assert resolve_config_path("", {"DUCTILE_CONFIG": ""}) == tmp_path / "ductile.yaml"
    assert resolve_config_path("~/d.yaml", {}).is_absolute()


# =========================================================================== machine zone


def _offsets(zone: object) -> tuple[timedelta | None, timedelta | None]:
    assert isinstance(zone, ZoneInfo)
    winter = datetime(2026, 1, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset()
    summer = datetime(2026, 7, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset()
    return winter, summer


def _tzfile(key: str) -> bytes:
    return importlib.resources.files("tzdata.zoneinfo").joinpath(key).read_bytes()


@pytest.mark.parametrize(
    "target",
    [
        "/usr/share/zoneinfo/America/New_York",
        "../usr/share/zoneinfo/America/New_York",
        "/usr/share/zoneinfo/posix/America/New_York",
    ],
)
def test_the_localtime_symlink_names_the_zone(tmp_path: Path, target: str) -> None:
    (tmp_path / "localtime").symlink_to(target)  # the target need not exist: its name is the key
    write(tmp_path / "timezone", "Europe/Berlin\n")  # stale: the symlink wins
    zone = machine_timezone(env={}, etc=tmp_path)
    assert zone == ZoneInfo("America/New_York")
    assert _offsets(zone) == (timedelta(hours=-5), timedelta(hours=-4))


def test_etc_timezone_when_there_is_no_symlink(tmp_path: Path) -> None:
    write(tmp_path / "timezone", "Europe/Berlin\n")
    assert machine_timezone(env={}, etc=tmp_path) == ZoneInfo("Europe/Berlin")


def test_a_copied_localtime_file_still_knows_dst(tmp_path: Path) -> None:
    write(tmp_path / "localtime", _tzfile("Europe/Berlin"))
    zone = machine_timezone(env={}, etc=tmp_path)
    assert str(zone) == "localtime"
    assert _offsets(zone) == (timedelta(hours=1), timedelta(hours=2))


def test_tz_wins_and_may_name_a_file(tmp_path: Path) -> None:
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/America/New_York")
    assert machine_timezone(env={"TZ": "Asia/Tokyo"}, etc=tmp_path) == ZoneInfo("Asia/Tokyo")
    tzfile = write(tmp_path / "zones" / "berlin", _tzfile("Europe/Berlin"))
    zone = machine_timezone(env={"TZ": f":{tzfile}"}, etc=tmp_path)
    assert _offsets(zone) == (timedelta(hours=1), timedelta(hours=2))


def test_an_unusable_tz_falls_through(tmp_path: Path) -> None:
    write(tmp_path / "timezone", "Australia/Sydney\n")
    for tz in ("CET-1CEST,M3.5.0,M10.5.0/3", "Not/AZone", "../../etc/passwd"):
        assert machine_timezone(env={"TZ": tz}, etc=tmp_path) == ZoneInfo("Australia/Sydney")


def test_nothing_known_means_utc(tmp_path: Path) -> None:
    write(tmp_path / "timezone", "garbage\n")
    (tmp_path / "localtime").symlink_to("/nowhere/at/all")
    zone = machine_timezone(env={}, etc=tmp_path)
    assert zone == ZoneInfo("UTC")
