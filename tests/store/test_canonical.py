"""Canonical JSON (RFC 8785) golden vectors and round-trip properties."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.store.canonical import MAX_SAFE_INT, canonical_bytes, canonical_text, loads
from agent.store.errors import CanonicalError

# RFC 8785 appendix B: IEEE-754 bit patterns and their canonical text.
NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), NUMBERS)
def test_number_serialisation_matches_rfc8785(bits: str, text: str) -> None:
    (value,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_text(value) == text


def test_rfc8785_sample_object() -> None:
    doc = json.loads(
        '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        '"literals":[null,true,false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_text(doc) == expected


def test_keys_sort_by_utf16_code_units() -> None:
    doc = {"\u20ac": "Euro", "\r": "CR", "\ufb33": "Hebrew", "1": "One",
           "\U0001f600": "Emoji", "\u0080": "Control", "\u00f6": "Latin"}
    order = list(json.loads(canonical_text(doc)).values())
    # An astral character (surrogate pair D83D…) sorts before U+FB33 in UTF-16 order.
    assert order == ["CR", "One", "Control", "Latin", "Euro", "Emoji", "Hebrew"]


def test_integers_and_literals() -> None:
    assert canonical_bytes({"b": [1, -2, 0], "a": None, "c": True}) == \
        b'{"a":null,"b":[1,-2,0],"c":true}'
    assert canonical_text(MAX_SAFE_INT) == "9007199254740991"


@pytest.mark.parametrize("bad", [
    math.nan, math.inf, -math.inf, MAX_SAFE_INT + 1, -(MAX_SAFE_INT + 1), b"bytes",
    {1: "non-string key"}, {"s": {1, 2}}, "\ud800",
])
def test_unencodable_values_are_refused(bad: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_bytes(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_text_round_trips_to_the_same_bytes(value: object) -> None:
    text = canonical_text(value)
    assert canonical_bytes(loads(text)) == text.encode("utf-8")
    json.loads(text)  # plain JSON, readable by any parser


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_read_back_exactly(x: float) -> None:
    assert float(json.loads(canonical_text(x))) == x
