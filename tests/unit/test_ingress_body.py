"""The ingress's body checks against their references: the nesting measured without decoding equals the
decoded value's depth, and a body is accepted exactly when orjson (the SDK's decoder) accepts it."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.core import limits
from unbroken.http.asgi import HttpError
from unbroken.ingress.body import check_json, json_depth_exceeds

# Text full of the characters the depth scan must see through: brackets, quotes and backslashes.
TRICKY = st.text(alphabet='[]{}"\\\\ax\u00e9\u20ac', max_size=8)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def accepted(body: bytes) -> bool:
    try:
        check_json(body)
    except HttpError as exc:
        assert exc.status == 400
        return False
    return True


def orjson_accepts(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(VALUES, st.integers(0, 8))
def test_depth_scan_equals_the_decoded_depth(value: Any, wrap: int) -> None:
    value = [[value]] if wrap % 2 else value
    for _ in range(wrap):
        value = {"k[": value}
    body = json.dumps(value, ensure_ascii=wrap % 3 == 0).encode()
    real = depth(value)
    for bound in (0, 1, real - 1, real, real + 1):
        if bound >= 0:
            assert json_depth_exceeds(body, bound) == (real > bound), (body, bound, real)


@pytest.mark.parametrize("levels", [1, 2, 127, 128, 129, 254, 1000, 5000])
def test_depth_of_deep_chains(levels: int) -> None:
    for body in (b"[" * levels + b"]" * levels, b'{"a":' * levels + b"1" + b"}" * levels):
        assert json_depth_exceeds(body, limits.json_depth_max) == (levels > limits.json_depth_max)
        assert accepted(body) == (levels <= limits.json_depth_max)


PAD = b" " * (70 * 1024)  # past the size decoded exactly: the syntax-only path


@pytest.mark.parametrize(
    "core",
    [
        b"9" * 400,
        b"9" * 308,
        b"1e309",
        b"-1E+309",
        b"1e308",
        b"1e-400",
        b'"e999"',
        b"[1e999]",
        b"1" * 250 + b"e99",
        b'"\xff"',
        b'"\xed\xa0\x80"',
        '"h\u00e9llo \u20ac"'.encode(),
        b'"\\ud800"',
        b'"abc',
        b'{"a":}',
        b"[1,]",
        b"01",
        b"NaN",
        b"\xef\xbb\xbf1",
        b'"\x01"',
        b"1 2",
        b"[" + b"1," * 40_000 + b"1]",
    ],
)
def test_accepted_exactly_when_orjson_decodes_it(core: bytes) -> None:
    for body in (core, core + PAD, PAD + core):
        assert accepted(body) == orjson_accepts(body), body[:60]


@settings(max_examples=200, deadline=None)
@given(VALUES, st.integers(0, 200), st.binary(min_size=1, max_size=3))
def test_damaged_bodies_are_judged_as_orjson_judges_them(value: Any, at: int, junk: bytes) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    cut = at % (len(body) + 1)
    for damaged in (body[:cut] + junk + body[cut:], body[:cut]):
        if depth(value) <= limits.json_depth_max:
            for candidate in (damaged, damaged + PAD):
                assert accepted(candidate) == orjson_accepts(candidate), candidate[:80]
