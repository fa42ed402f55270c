"""Holiday and make-up workday lists: the one parser, for the config check and the agent.

The format: one `YYYY-MM-DD` per line; `#` starts a comment; blank lines are ignored.
Parsing collects every bad line (with its number) instead of stopping at the first, so
the operator fixes a list in one pass; the caller decides how to report them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agent.inputfiles import MAX_CONFIG_BYTES, InputFileError, read_input_file

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SHOWN = 40  # characters of a bad entry quoted in a message


@dataclass(frozen=True, slots=True)
class DayListProblem:
    """A bad line of a day list (`line` None: the file as a whole could not be read)."""

    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class DayList:
    """The days of a list and the problems found in it (a valid list has none)."""

    days: frozenset[date]
    problems: tuple[DayListProblem, ...] = ()


def _quoted(entry: str) -> str:
    text = json.dumps(entry, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def parse_day_list_text(text: str) -> DayList:
    """The dates in a day list's text, and a problem for each line that is not a date."""
    days: set[date] = set()
    problems: list[DayListProblem] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if not _DATE.fullmatch(entry):
            problems.append(DayListProblem(
                lineno, f"expected a date YYYY-MM-DD, got {_quoted(entry)}"))
            continue
        try:
            days.add(date.fromisoformat(entry))
        except ValueError as exc:
            problems.append(DayListProblem(lineno, f"{entry} is not a valid date ({exc})"))
    return DayList(frozenset(days), tuple(problems))


def read_day_list(path: Path) -> DayList:
    """Read and parse a day list file: a regular file only (a FIFO or a device must not
    hang or flood start-up), UTF-8, at most `MAX_CONFIG_BYTES`."""
    try:
        data = read_input_file(path, "date list", max_bytes=MAX_CONFIG_BYTES)
    except InputFileError as exc:
        return DayList(frozenset(), (DayListProblem(None, f"cannot read date list: {exc.reason}"),))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DayList(frozenset(), (DayListProblem(None, f"cannot read date list: {exc}"),))
    return parse_day_list_text(text)
