"""Canonical JSON (RFC 8785, "JCS") for hashing and signing custody records.

The custody ledger hashes and signs bytes, so the bytes of an entry must be a pure
function of its content, reproducible by any verifier in any language. We use the JSON
Canonicalization Scheme (RFC 8785):

- objects: keys sorted by their UTF-16 code units, no whitespace (`{"a":1,"b":[true,null]}`);
- strings: UTF-8, only `"`, `\\` and control characters below U+0020 escaped (`\\b \\t \\n
  \\f \\r` short forms, others as `\\u00xx` lowercase);
- numbers: the ECMAScript shortest round-trip form (`1.5`, `1e+21`, `1e-7`, `-0` -> `0`).
  Integers must lie within +-(2**53 - 1) so every JSON implementation reads them exactly;
  NaN and infinities are refused. Times are therefore integers of microseconds (UTC).
- lists/tuples are arrays; `None`, `True`, `False` are `null`, `true`, `false`.

Anything else (bytes, sets, datetimes, non-string keys, lone surrogates) is refused with
`CanonicalError` instead of being coerced, so what is hashed is exactly what is stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from agent.store.errors import CanonicalError

MAX_SAFE_INT = 2**53 - 1

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def canonical_bytes(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 encoding of a JSON-able value."""
    parts: list[str] = []
    _encode(value, parts, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate): {exc}") from exc


def canonical_text(value: object) -> str:
    return canonical_bytes(value).decode("utf-8")


def _encode(value: object, out: list[str], depth: int) -> None:
    if depth > 64:
        raise CanonicalError("value nested deeper than 64 levels")
    if value is None or value is True or value is False:
        out.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out.append(_integer(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        _object(value, out, depth)
    elif isinstance(value, list | tuple):
        _array(value, out, depth)
    else:
        raise CanonicalError(f"{type(value).__name__} values cannot be encoded canonically")


def _integer(value: int) -> str:
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise CanonicalError(f"integer {value} is outside the exactly representable range")
    return str(int(value))


def _object(value: Mapping[object, object], out: list[str], depth: int) -> None:
    items: list[tuple[str, object]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise CanonicalError(f"object key {key!r} is not a string")
        items.append((key, item))
    items.sort(key=lambda kv: kv[0].encode("utf-16-be", "surrogatepass"))
    out.append("{")
    for i, (key, item) in enumerate(items):
        if i:
            out.append(",")
        out.append(_string(key))
        out.append(":")
        _encode(item, out, depth + 1)
    out.append("}")


def _array(value: list[object] | tuple[object, ...], out: list[str], depth: int) -> None:
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        _encode(item, out, depth + 1)
    out.append("]")


def _string(s: str) -> str:
    chars = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            chars.append(esc)
        elif ch < " ":
            chars.append(f"\\u{ord(ch):04x}")
        else:
            chars.append(ch)
    chars.append('"')
    return "".join(chars)


def _number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (as RFC 8785 requires)."""
    if math.isnan(x) or math.isinf(x):
        raise CanonicalError(f"{x} cannot be encoded (JSON has no NaN or infinity)")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digit string that round-trips; reshape it per ECMAScript.
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # decimal point position relative to the start of `digits`
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    point -= len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exp = f"e+{e}" if e >= 0 else f"e-{-e}"
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + exp
    return sign + body


def _parse_int(text: str) -> int | float:
    # Integers beyond the safe range can only have come from a float (1e20 encodes as
    # "100000000000000000000"); reading them back as float re-encodes to the same bytes.
    value = int(text)
    return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else float(text)


def loads(text: str) -> object:
    """Parse canonical JSON so that `canonical_bytes(loads(t)) == t.encode()`."""
    return json.loads(text, parse_int=_parse_int)
