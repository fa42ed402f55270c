"""Where keys are in TOML source: line numbers for messages, and dotted-key splitting.

`tomllib` gives values without positions, so an issue found after parsing (wrong type,
range, cross-field rule) is placed by scanning the source once for table headers and
assignments. A key that is absent (a missing required key) is placed at its nearest
enclosing table or key that is present.
"""

from __future__ import annotations

import re


def split_dotted(text: str) -> list[str]:
    """Split a TOML dotted key (`a."b.c".d`) into its parts."""
    parts: list[str] = []
    for m in re.finditer(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*(?:\.|$)', text):
        part = m.group(1)
        parts.append(part[1:-1] if part[:1] in "\"'" else part)
    return parts


def _value_tail(text: str) -> tuple[int, str | None]:
    """Bracket depth change and an unterminated multi-line string opener in a value."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            break
        if text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            end = text.find(quote, i + 3)
            if end < 0:
                return depth, quote
            i = end + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if c == '"' and text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


class KeyLines:
    """Line numbers of tables and keys in TOML source, keyed like `devices.allow[1].vid`."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._table = ""
        self._counts: dict[str, int] = {}
        self._scan(text)

    def _record(self, key: str, line: int) -> None:
        self._lines.setdefault(key, line)

    def _scan(self, text: str) -> None:
        open_ml: str | None = None  # the quote of a multi-line string still open
        depth = 0  # brackets of a multi-line array or inline table still open
        for lineno, raw in enumerate(text.splitlines(), 1):
            if open_ml is not None:
                end = raw.find(open_ml)
                if end < 0:
                    continue
                delta, open_ml = _value_tail(raw[end + 3 :])
                depth += delta
            elif depth > 0:
                delta, open_ml = _value_tail(raw)
                depth += delta
            else:
                value = self._statement(raw.strip(), lineno)
                if value is not None:
                    delta, open_ml = _value_tail(value)
                    depth = max(delta, 0)

    def _statement(self, line: str, lineno: int) -> str | None:
        """Record a header or key that starts on this line; the value text of a key."""
        if not line or line.startswith("#"):
            return None
        if m := re.match(r"\[\[\s*(.+?)\s*\]\]", line):
            path = ".".join(split_dotted(m.group(1)))
            index = self._counts.get(path, 0)
            self._counts[path] = index + 1
            self._table = f"{path}[{index}]"
            self._record(path, lineno)
            self._record(self._table, lineno)
            return None
        if m := re.match(r"\[\s*(.+?)\s*\]", line):
            self._table = ".".join(split_dotted(m.group(1)))
            self._record(self._table, lineno)
            return None
        key_text, eq, value = _split_assignment(line)
        if not eq:
            return None
        key = ".".join(split_dotted(key_text))
        self._record(f"{self._table}.{key}" if self._table else key, lineno)
        return value

    def find(self, key: str) -> int | None:
        """The line of `key`, else of its nearest enclosing table or key that is present."""
        while key:
            if key in self._lines:
                return self._lines[key]
            key = _parent_key(key)
        return None


def _split_assignment(line: str) -> tuple[str, bool, str]:
    quote: str | None = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return line[:i], True, line[i + 1 :]
    return line, False, ""


def _parent_key(key: str) -> str:
    m = re.match(r"(.*)(\[\d+\]|\.[^.\[\]]*)$", key)
    return m.group(1) if m else ""
