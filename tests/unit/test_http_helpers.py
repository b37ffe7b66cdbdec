"""The HTTP adapter's pure helpers: signatures, JSON bodies, headers (SPEC D11; PITFALLS "HTTP")."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ductile.adapters.http import (
    MAX_INT_DIGITS,
    PRIVATE_HEADERS,
    NotJsonError,
    declared_length,
    dedupe_key,
    delivery_headers,
    parse_json,
    parse_signature,
    sign,
    signature_matches,
)

secrets = st.text(min_size=1, max_size=40)
bodies = st.binary(max_size=2000)
#: No deadline: the machine is shared and a slow example is not a failure. Fewer examples where
#: the property is cheap to cover (HMAC over random inputs), the default where shapes matter.
QUICK = settings(deadline=None, max_examples=40)
THOROUGH = settings(deadline=None)


def reference_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


# ----------------------------------------------------------------- signatures


@QUICK
@given(secrets, bodies)
def test_sign_is_github_format(secret: str, body: bytes) -> None:
    assert sign(secret, body) == "sha256=" + reference_hex(secret, body)


@QUICK
@given(secrets, bodies, st.sampled_from(["prefixed", "bare", "upper", "upper-prefix", "padded"]))
def test_every_accepted_form_of_the_right_signature_matches(secret: str, body: bytes, form: str) -> None:
    hexdigest = reference_hex(secret, body)
    value = {
        "prefixed": "sha256=" + hexdigest,
        "bare": hexdigest,
        "upper": ("sha256=" + hexdigest).upper(),
        "upper-prefix": "SHA256=" + hexdigest,
        "padded": " \tsha256=" + hexdigest + " ",
    }[form]
    assert signature_matches(secret, body, value.encode("ascii"))


@QUICK
@given(secrets, bodies, bodies)
def test_a_signature_of_another_body_never_matches(secret: str, body: bytes, other: bytes) -> None:
    assume(body != other)
    assert not signature_matches(secret, body, sign(secret, other).encode())


@QUICK
@given(secrets, secrets, bodies)
def test_a_signature_under_another_secret_never_matches(secret: str, other: str, body: bytes) -> None:
    assume(secret.encode() != other.encode())
    assert not signature_matches(secret, body, sign(other, body).encode())


@QUICK
@given(secrets, bodies, st.binary(max_size=100))
def test_any_header_bytes_give_a_verdict_never_an_exception(secret: str, body: bytes, header: bytes) -> None:
    assert signature_matches(secret, body, header) in (True, False)


@QUICK
@given(st.binary(max_size=100))
def test_parse_signature_is_none_or_32_bytes(value: bytes) -> None:
    parsed = parse_signature(value)
    assert parsed is None or len(parsed) == 32


@QUICK
@given(st.binary(min_size=32, max_size=32))
def test_parse_signature_recovers_the_digest_bytes(digest: bytes) -> None:
    assert parse_signature(b"sha256=" + digest.hex().encode()) == digest
    assert parse_signature(digest.hex().upper().encode()) == digest


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"sha256=",
        b"sha256=" + b"a" * 63,
        b"sha256=" + b"a" * 65,
        b"sha256=" + b"z" * 64,
        b"sha256=" + b"\xe9" * 64,
        b"sha256=" + "é".encode() * 32,
        b"sha1=" + b"a" * 64,
        b"sha256=sha256=" + b"a" * 64,
        b"sha256= " + b"a" * 64,
        b"a" * 31 + b" " + b"a" * 32,
        b"+" + b"a" * 63,
    ],
)
def test_malformed_signatures_parse_to_none(value: bytes) -> None:
    assert parse_signature(value) is None


@QUICK
@given(bodies)
def test_an_empty_secret_never_matches(body: bytes) -> None:
    assert not signature_matches("", body, sign("", body).encode())


def test_a_missing_header_never_matches() -> None:
    assert not signature_matches("s", b"{}", None)


# ----------------------------------------------------------------- JSON bodies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@THOROUGH
@given(json_values, st.booleans())
def test_json_values_round_trip_with_their_shape(value: Any, ascii_only: bool) -> None:
    parsed = parse_json(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8"))
    assert json.dumps(parsed, ensure_ascii=False) == json.dumps(value, ensure_ascii=False)


@THOROUGH
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused_as_not_json(body: bytes) -> None:
    with contextlib.suppress(NotJsonError):
        parse_json(body)


@THOROUGH
@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_as_not_json(text: str) -> None:
    try:
        value = parse_json(text.encode("utf-8", "surrogatepass"))
    except NotJsonError:
        return
    assert json.loads(json.dumps(value, allow_nan=False)) == value  # what parsed is strict JSON


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[1, NaN]",
        b"1e400",
        b"-1e400",
        b"[1e999]",
        b"9" * (MAX_INT_DIGITS + 1),
        b"-" + b"9" * (MAX_INT_DIGITS + 1),
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        b"\xef\xbb\xbf{}",
        "{}".encode("utf-16"),
        "{}".encode("utf-32"),
        b'"\xc3"',
        b"{} {}",
        b"{'a': 1}",
        b"undefined",
    ],
)
def test_bodies_that_are_refused(body: bytes) -> None:
    with pytest.raises(NotJsonError):
        parse_json(body)


def test_the_largest_allowed_integer_and_float_parse() -> None:
    assert parse_json(b"9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    assert parse_json(b"-" + b"9" * MAX_INT_DIGITS) == -int("9" * MAX_INT_DIGITS)
    assert parse_json(b"1.7976931348623157e308") == 1.7976931348623157e308
    assert parse_json(b"5e-324") == 5e-324
    assert parse_json(b"-0.0") == 0.0
    assert math.copysign(1, parse_json(b"-0.0")) == -1


def test_escapes_decode_including_surrogate_pairs() -> None:
    assert parse_json(rb'["\ud83d\ude00", "\uD83D\uDE00", "\u00e9", "\u0000"]') == ["😀", "😀", "é", "\x00"]
    assert parse_json(rb'"\\ud800"') == "\\ud800"  # an escaped backslash, not an escape


@pytest.mark.parametrize(
    "body",
    [rb'"\ud800"', rb'"\uDBFF"', rb'"\udc00"', rb'["\ude00\ud83d"]', rb'{"\ud800": 1}', rb'"\ud83d x"'],
    ids=["high", "high-upper", "low", "reversed-pair", "in-a-key", "high-then-text"],
)
def test_lone_surrogate_escapes_are_refused(body: bytes) -> None:
    """Python parses them, but the string could never be written as UTF-8 again (store, plugin stdin)."""
    with pytest.raises(NotJsonError):
        parse_json(body)


@THOROUGH
@given(st.text(alphabet=st.characters(exclude_categories=[]), max_size=20))
def test_an_escaped_string_is_accepted_exactly_when_it_is_valid_unicode(text: str) -> None:
    body = json.dumps([text]).encode()  # ensure_ascii: every non-ASCII character becomes an escape
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(NotJsonError):
            parse_json(body)
    else:
        assert parse_json(body) == [text]


def test_duplicate_keys_keep_the_last_as_python_does() -> None:
    assert parse_json(b'{"a": 1, "a": 2}') == {"a": 2}


# ----------------------------------------------------------------- headers

header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1)
raw_headers = st.lists(
    st.tuples(
        st.one_of(header_names, st.sampled_from(["Authorization", "cookie", "PROXY-Authorization"])).map(
            str.encode
        ),
        st.binary(max_size=20),
    ),
    max_size=12,
)


@QUICK
@given(raw_headers)
def test_delivery_headers_lowercase_join_in_order_and_drop_private(raw: list[tuple[bytes, bytes]]) -> None:
    headers = delivery_headers(raw)
    names = {name.decode().lower() for name, _ in raw}
    assert set(headers) == names - PRIVATE_HEADERS
    for name, value in headers.items():
        expected = [v.decode("latin-1") for n, v in raw if n.decode().lower() == name]
        assert value == ", ".join(expected)


def test_delivery_headers_example() -> None:
    raw = [
        (b"x-a", b"1"),
        (b"Cookie", b"c=1"),
        (b"X-A", b"2"),
        (b"x-b", b"caf\xe9"),
        (b"authorization", b"t"),
    ]
    assert delivery_headers(raw) == {"x-a": "1, 2", "x-b": "café"}


@pytest.mark.parametrize(
    ("raw", "header", "expected"),
    [
        ([(b"x-github-delivery", b"abc")], "X-GitHub-Delivery", "abc"),
        ([(b"x-github-delivery", b"abc")], None, None),
        ([], "X-GitHub-Delivery", None),
        ([(b"x-github-delivery", b"")], "X-GitHub-Delivery", None),
        ([(b"x-github-delivery", b"  ")], "X-GitHub-Delivery", None),
        ([(b"x-other", b"abc")], "X-GitHub-Delivery", None),
        ([(b"x-id", b"a"), (b"x-id", b"b")], "x-id", "a, b"),
    ],
)
def test_dedupe_key(raw: list[tuple[bytes, bytes]], header: str | None, expected: str | None) -> None:
    assert dedupe_key(raw, header) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], None),
        ([(b"content-length", b"0")], 0),
        ([(b"content-length", b"12")], 12),
        ([(b"content-length", b"12"), (b"content-length", b"12")], 12),
        ([(b"host", b"x")], None),
    ],
)
def test_declared_length(raw: list[tuple[bytes, bytes]], expected: int | None) -> None:
    assert declared_length(raw) == expected


@pytest.mark.parametrize("values", [[b"12", b"13"], [b"-1"], [b"0x10"], [b""], [b"1 2"], [b"\xd9\xa1"]])
def test_malformed_declared_lengths_raise_value_error(values: list[bytes]) -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        declared_length([(b"content-length", v) for v in values])
