"""The HTTP adapter's pure helpers: signatures, JSON bodies, headers, request heads and the choice of
parser (SPEC D11; PITFALLS "HTTP"; ADR 0017)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import json
import math
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ductile.adapters.http import (
    MAX_INT_DIGITS,
    BadRequestError,
    Framing,
    NotJsonError,
    check_head,
    declared_length,
    dedupe_key,
    delivery_headers,
    httptools_available,
    parse_json,
    parse_signature,
    resolve_parser,
    sign,
    signature_matches,
)
from ductile.domain.secret_headers import MASK, is_secret_header

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
def test_delivery_headers_lowercase_join_in_order_and_mask_credentials(
    raw: list[tuple[bytes, bytes]],
) -> None:
    headers = delivery_headers(raw)
    names = {name.decode().lower() for name, _ in raw}
    assert set(headers) == names  # every name kept
    for name, value in headers.items():
        expected = [v.decode("latin-1") for n, v in raw if n.decode().lower() == name]
        assert value == (MASK if is_secret_header(name) else ", ".join(expected))


def test_delivery_headers_example() -> None:
    raw = [
        (b"x-a", b"1"),
        (b"Cookie", b"c=1"),
        (b"X-A", b"2"),
        (b"x-b", b"caf\xe9"),
        (b"authorization", b"t"),
    ]
    assert delivery_headers(raw) == {"x-a": "1, 2", "cookie": MASK, "x-b": "café", "authorization": MASK}


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
        ([(b"content-length", b" 12\t")], 12),
        ([(b"host", b"x")], None),
    ],
)
def test_declared_length(raw: list[tuple[bytes, bytes]], expected: int | None) -> None:
    assert declared_length(raw) == expected


@pytest.mark.parametrize(
    "values",
    [
        [b"12", b"13"],
        [b"12", b"12"],
        [b"12, 12"],
        [b"-1"],
        [b"+1"],
        [b"0x10"],
        [b""],
        [b"1 2"],
        [b"\xd9\xa1"],
    ],
)
def test_malformed_declared_lengths_raise_value_error(values: list[bytes]) -> None:
    """A repeat is refused even when identical: h11 would merge it, httptools refuses it (ADR 0017)."""
    with pytest.raises(BadRequestError, match="Content-Length"):
        declared_length([(b"content-length", v) for v in values])


def test_a_content_length_too_long_to_convert_is_malformed_not_a_crash() -> None:
    with pytest.raises(BadRequestError, match="malformed Content-Length"):
        declared_length([(b"content-length", b"9" * (MAX_INT_DIGITS + 1))])


# ----------------------------------------------------------------- request heads (ADR 0017)

HOST = (b"host", b"example.org")
head_names = st.sampled_from(
    [
        b"content-length",
        b"Content-Length",
        b"transfer-encoding",
        b"host",
        b"upgrade",
        b"connection",
        b"x-other",
    ]
)
head_values = st.one_of(
    st.sampled_from([b"8", b"0", b" 12 ", b"chunked", b"Chunked", b"gzip, chunked", b"upgrade", b"h2c", b""]),
    st.binary(max_size=12),
)
heads = st.lists(st.tuples(head_names, head_values), max_size=8)


def values_of(raw: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in raw if key.lower() == name]


@THOROUGH
@given(heads, st.sampled_from(["1.0", "1.1"]))
def test_a_head_is_accepted_only_when_every_rule_holds(raw: list[tuple[bytes, bytes]], version: str) -> None:
    """Any head gives a Framing or a BadRequestError; a Framing only when the common line holds."""
    try:
        framing = check_head(raw, version)
    except BadRequestError:
        return
    lengths = values_of(raw, b"content-length")
    codings = values_of(raw, b"transfer-encoding")
    assert not (lengths and codings), "smuggling framing accepted"
    assert len(lengths) <= 1
    assert [c.strip(b" \t").lower() for c in codings] in ([], [b"chunked"])
    assert framing.chunked == bool(codings)
    assert framing.length == (int(lengths[0]) if lengths else None)
    assert version == "1.0" or len(values_of(raw, b"host")) == 1
    assert not any(set(value) & (set(range(0x20)) - {0x09} | {0x7F}) for _, value in raw)
    if framing.upgrade:
        assert not framing.body_pending, "an upgrade request with a body accepted"


@QUICK
@given(heads)
def test_content_length_with_transfer_encoding_is_always_refused(raw: list[tuple[bytes, bytes]]) -> None:
    raw = [*raw, (b"Content-Length", b"8"), (b"Transfer-Encoding", b"chunked")]
    with pytest.raises(BadRequestError):
        check_head(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([HOST], Framing(length=None, chunked=False)),
        ([HOST, (b"Content-Length", b"0")], Framing(length=0, chunked=False)),
        ([HOST, (b"content-length", b" 1024 ")], Framing(length=1024, chunked=False)),
        ([HOST, (b"Transfer-Encoding", b"Chunked")], Framing(length=None, chunked=True)),
        ([HOST, (b"transfer-encoding", b" chunked\t")], Framing(length=None, chunked=True)),
        ([HOST, (b"x-note", b"tab\tinside and caf\xe9")], Framing(length=None, chunked=False)),
        (
            [HOST, (b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"websocket")],
            Framing(length=None, chunked=False, upgrade=True),
        ),
        ([HOST, (b"upgrade", b"h2c")], Framing(length=None, chunked=False)),  # no Connection: upgrade
        ([HOST, (b"connection", b"upgrade"), (b"upgrade", b"h2c"), (b"content-length", b"0")], None),
    ],
)
def test_heads_that_are_accepted(raw: list[tuple[bytes, bytes]], expected: Framing | None) -> None:
    framing = check_head(raw)
    if expected is not None:
        assert framing == expected
    assert framing.body_pending == (framing.chunked or bool(framing.length))


@pytest.mark.parametrize(
    ("raw", "version", "reason"),
    [
        ([HOST, (b"content-length", b"8"), (b"transfer-encoding", b"chunked")], "1.1", "both Content-Length"),
        ([HOST, (b"transfer-encoding", b"gzip, chunked")], "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b", chunked")], "1.1", "other than chunked"),
        ([HOST, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")], "1.1", "other than"),
        ([HOST, (b"content-length", b"8"), (b"content-length", b"8")], "1.1", "more than one Content-Length"),
        ([HOST, (b"content-length", b"8,8")], "1.1", "malformed Content-Length"),
        ([], "1.1", "Host"),
        ([HOST, HOST], "1.1", "Host"),
        ([HOST, (b"x-note", b"a\x01b")], "1.1", "control character in header 'x-note'"),
        ([HOST, (b"x-note", b"a\x7f")], "1.1", "control character"),
        ([HOST, (b"x-note", b"a\r\n b")], "1.1", "control character"),
        (
            [HOST, (b"connection", b"Upgrade"), (b"upgrade", b"h2c"), (b"content-length", b"1")],
            "1.1",
            "upgrade request with a body",
        ),
        (
            [HOST, (b"connection", b"upgrade"), (b"upgrade", b"h2c"), (b"transfer-encoding", b"chunked")],
            "1.1",
            "upgrade request with a body",
        ),
    ],
)
def test_heads_that_are_refused(raw: list[tuple[bytes, bytes]], version: str, reason: str) -> None:
    with pytest.raises(BadRequestError, match=re.escape(reason)):
        check_head(raw, version)


def test_http_1_0_needs_no_host() -> None:
    assert check_head([], "1.0") == Framing(length=None, chunked=False)


# ----------------------------------------------------------------- choosing the parser


@pytest.mark.parametrize(
    ("requested", "importable", "chosen"),
    [
        ("auto", True, "httptools"),
        ("auto", False, "h11"),
        ("h11", True, "h11"),
        ("h11", False, "h11"),
        ("httptools", True, "httptools"),
    ],
)
def test_resolve_parser(requested: str, importable: bool, chosen: str) -> None:
    assert resolve_parser(requested, httptools_importable=importable) == chosen


def test_asking_for_httptools_where_it_cannot_be_imported_names_the_problem() -> None:
    with pytest.raises(
        ValueError, match="'httptools' was requested but the httptools module cannot be imported"
    ):
        resolve_parser("httptools", httptools_importable=False)


@pytest.mark.parametrize("requested", ["", "H11", "uvloop", "zttp"])
def test_an_unknown_parser_is_refused_with_the_choices(requested: str) -> None:
    with pytest.raises(ValueError, match=r"unknown HTTP parser .*; expected one of auto, h11, httptools"):
        resolve_parser(requested, httptools_importable=True)


def test_auto_follows_whether_httptools_imports_here() -> None:
    importable = importlib.util.find_spec("httptools") is not None
    assert httptools_available() == importable
    assert resolve_parser("auto") == ("httptools" if importable else "h11")
