"""Plain-text tables and progress bars for dockctl (no terminal library needed).

Every cell passes through `agent.printable`: cells hold recorder-supplied serials, officer
names, file names and fault reasons, and one with a newline must not forge a row."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from agent.printable import printable


def _width(text: str) -> int:
    # CJK officer and unit names take two columns in a terminal.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[printable(c) for c in row] for row in rows]
    headers = [printable(h) for h in headers]
    widths = [_width(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], _width(cell))
    lines = ["  ".join(_pad(h, widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(_pad(c, widths[i]) for i, c in enumerate(row)).rstrip() for row in cells)
    return "\n".join(lines)


def progress_bar(done: int, total: int, width: int = 20) -> str:
    if total <= 0:
        return "[" + " " * width + "]"
    frac = min(1.0, max(0.0, done / total))
    filled = int(frac * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {frac * 100:5.1f}%"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def display_width(text: str) -> int:
    """Terminal cells `text` takes (CJK characters take two)."""
    return _width(text)
