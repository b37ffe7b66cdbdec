from datetime import timedelta

import attrs

from ductile.app.operations import restart_needed
from ductile.domain.config import Config, LogLevel, ServiceConfig, WebhooksConfig


def config(**changes: object) -> Config:
    base = Config(
        service=ServiceConfig(state_dir="/var/lib/ductile"),
        plugins_dir="/etc/ductile/plugins",
        webhooks=WebhooksConfig(host="127.0.0.1", port=8081),
    )
    return attrs.evolve(base, **changes)


def test_nothing_needs_a_restart_when_only_reloadable_settings_change() -> None:
    old = config()
    new = config(service=attrs.evolve(old.service, tick_interval=timedelta(seconds=5)))
    assert restart_needed(old, new) == []


def test_state_dir_log_level_and_listen_address_need_a_restart() -> None:
    old = config()
    new = config(
        service=ServiceConfig(state_dir="/srv/ductile", log_level=LogLevel.DEBUG),
        webhooks=WebhooksConfig(host="127.0.0.1", port=9090),
    )
    assert restart_needed(old, new) == ["service.state_dir", "service.log_level", "webhooks.listen"]
    assert restart_needed(old, config(webhooks=None)) == ["webhooks.listen"]


def test_the_api_address_needs_a_restart() -> None:
    from ductile.domain.config import ApiConfig

    old = config()
    assert restart_needed(old, attrs.evolve(old, api=ApiConfig())) == ["api.listen"]
    assert restart_needed(attrs.evolve(old, api=ApiConfig()), attrs.evolve(old, api=ApiConfig())) == []
