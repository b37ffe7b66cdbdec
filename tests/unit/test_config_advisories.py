"""Config.advisories: valid settings that probably are not what the operator meant."""

from __future__ import annotations

from datetime import timedelta

import attrs
from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.config import Config, ServiceConfig
from ductile.domain.quantities import format_duration

durations = st.integers(min_value=1, max_value=400 * 86_400).map(lambda s: timedelta(seconds=s))


def config(*, retention: timedelta, ttl: timedelta) -> Config:
    return Config(
        service=ServiceConfig(state_dir="/var/lib/ductile", job_log_retention=retention, dedupe_ttl=ttl),
        plugins_dir="/etc/ductile/plugins",
    )


def test_the_defaults_need_no_advice() -> None:
    assert Config(service=ServiceConfig(state_dir="/s"), plugins_dir="/p").advisories() == ()


def test_retention_shorter_than_the_dedupe_ttl_says_how_long_dedupe_really_holds() -> None:
    (advice,) = config(retention=timedelta(hours=6), ttl=timedelta(days=2)).advisories()
    assert advice == (
        "service.job_log_retention (6h) is shorter than service.dedupe_ttl (2d): a succeeded job "
        "deleted by retention no longer blocks its duplicates, so dedupe holds for 6h at most"
    )


@given(retention=durations, ttl=durations)
def test_advice_on_retention_exactly_when_it_is_shorter_than_the_ttl(
    retention: timedelta, ttl: timedelta
) -> None:
    found = config(retention=retention, ttl=ttl).advisories()
    assert bool(found) == (retention < ttl)
    for advice in found:
        assert "service.job_log_retention" in advice
        assert "service.dedupe_ttl" in advice
        assert f"({format_duration(retention)})" in advice
        assert f"({format_duration(ttl)})" in advice


def test_a_dashboard_switched_on_without_an_api_says_there_is_none() -> None:
    from ductile.domain.config import ApiConfig, UiConfig

    base = Config(service=ServiceConfig(state_dir="/s"), plugins_dir="/p")
    (advice,) = attrs.evolve(base, ui=UiConfig(enabled=True)).advisories()
    assert advice.startswith("ui.enabled is true but there is no api section")
    assert attrs.evolve(base, ui=UiConfig(enabled=False)).advisories() == ()
    assert attrs.evolve(base, ui=UiConfig(), api=ApiConfig()).advisories() == ()
