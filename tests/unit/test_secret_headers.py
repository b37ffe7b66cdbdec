"""Which webhook headers are credentials: masked where stored and shown (issue 19, item 13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.secret_headers import MASK, SECRET_NAMES, is_secret_header, mask_headers


@pytest.mark.parametrize(
    "name",
    [
        *sorted(SECRET_NAMES),
        "Authorization",
        "X-Auth-Token",
        "X-Shopify-Access-Token",
        "X-Hasura-Admin-Secret",
        "X-Client-Secret",
        "x_api_key",
        "X-Private-Key",
        "X-Session-Id",
        "X-User-Password",
    ],
)
def test_credentials_are_secret(name: str) -> None:
    assert is_secret_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "content-type",
        "x-hub-signature-256",
        "x-github-delivery",
        "x-github-event",
        "user-agent",
        "x-idempotency-key",
        "x-request-id",
        "x-authentik-user",
        "x-forwarded-for",
    ],
)
def test_ordinary_headers_are_not(name: str) -> None:
    assert not is_secret_header(name)


def test_mask_keeps_names_and_order_and_replaces_only_secret_values() -> None:
    headers = {"content-type": "application/json", "cookie": "s=1", "x-api-key": "k", "x-n": "2"}
    assert mask_headers(headers) == {
        "content-type": "application/json",
        "cookie": MASK,
        "x-api-key": MASK,
        "x-n": "2",
    }
    assert list(mask_headers(headers)) == list(headers)


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=8))
def test_masking_is_idempotent_and_never_leaks_a_secret_value(headers: dict[str, str]) -> None:
    once = mask_headers(headers)
    assert mask_headers(once) == once
    for name, value in once.items():
        assert value == (MASK if is_secret_header(name) else headers[name])
