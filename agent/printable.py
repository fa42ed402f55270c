"""Printable text for people: the one place recorder-supplied strings are made safe to show.

Serials, officer names and file names come from recorders and are claims, not text we
control. Written raw to a terminal or a text log, a newline forges a line (a fake log
entry, a fake ledger row), an escape sequence rewrites the screen and a bidi override
reverses what a supervisor reads. Structured outputs (JSON logs, the ledger's data, MQTT)
keep the raw value; every human-facing output passes its values through `printable()`.

Escaped: C0 and C1 control characters and DEL, Unicode line and paragraph separators,
bidirectional overrides/isolates, and lone surrogates (undecodable bytes kept by
`surrogateescape`, shown as the byte). Escapes use Python's spelling (`\\n`, `\\x1b`,
`\\u2028`), so a reader recognises them and nothing else changes: CJK names stay as they are.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}\\ud800-\\udfff]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(value: object) -> str:
    """`str(value)` with every character that could forge a line or drive a terminal
    escaped; None becomes the empty string."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


def is_printable(text: str) -> bool:
    """True if `printable(text)` would leave `text` unchanged."""
    return _UNSAFE.search(text) is None
