"""Strict, bounded JSON decoding for everything that arrives over MQTT.

Python's `json.loads` accepts more than JSON and fails in ways a caller does not expect:
NaN and Infinity, duplicate keys (the last one silently wins), UTF-16/32 byte input,
lone surrogates that later break SQLite and UTF-8 encoding, integers whose conversion
raises ValueError, and nesting deep enough for RecursionError. A message from the network
is parsed here instead: it is either a plain JSON document within fixed bounds or a
`JsonRejected` naming why. Pure code, no I/O.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_BYTES = 1024 * 1024  # a command or state message; the largest legitimate one is far smaller
MAX_DEPTH = 32  # the deepest schema (set-hold scope) nests 4 levels
MAX_NUMBER_CHARS = 40  # longer number literals are refused before conversion


class JsonRejected(ValueError):
    """The bytes are not an acceptable JSON document; the message says why."""


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON number")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonRejected(f"number with {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonRejected(f"number literal of {len(text)} characters is out of range")
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejected(f"number {text} is out of range")
    return value


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRejected(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRejected(f"{where}: string holds a lone surrogate escape") from None


def _check_tree(doc: object) -> None:
    """Depth and string checks without recursion (the document is already bounded in size)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels")
            for key, value in node.items():
                _check_text(key, "key")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _check_text(node, "value")


def _nesting_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than `limit` (checked before parsing,
    so that the parser itself never recurses that deep)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads(raw: bytes, *, max_bytes: int = MAX_BYTES) -> Any:
    """Decode one UTF-8 JSON document from the network, or raise JsonRejected."""
    if len(raw) > max_bytes:
        raise JsonRejected(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"payload is not UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise JsonRejected("payload starts with a byte order mark")
    if text.count("[") + text.count("{") > MAX_DEPTH and _nesting_exceeds(text, MAX_DEPTH):
        raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels")
    try:
        doc = _DECODER.decode(text)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRejected(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    except (ValueError, RecursionError) as exc:  # belt and braces: never a raw exception
        raise JsonRejected(f"not JSON: {type(exc).__name__}") from None
    _check_tree(doc)
    return doc
