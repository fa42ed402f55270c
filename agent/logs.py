"""Logging: JSON lines (for journald) or text on stdout, with recorder/bay/session context.

Context comes from two places: `log_context(recorder=..., bay=..., session=...)` sets
context variables for everything logged inside it (each asyncio task has its own copy),
and `logger.info(..., extra={"bay": "A1"})` adds fields to one line.
`RedactFilter` keeps secrets and footage bytes out of every line.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from agent.printable import printable
from agent.settings import LoggingSettings

CONTEXT_FIELDS = ("recorder", "bay", "session")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"log_{name}", default=None) for name in CONTEXT_FIELDS
}

# Field names that hold secrets; paths to such files (`*_file`, `*_path`) are not secret.
SECRET_NAME = re.compile(
    r"secret|passw(or)?d|passphrase|token|private|credential|api_?key|key_material|hmac|psk"
    r"|^auth$|^proof$|nonce",
    re.IGNORECASE,
)
REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else was passed through `extra=`.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach recorder/bay/session to every line logged inside the block (task-local)."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {sorted(unknown)}")
    tokens = [(_context[k], _context[k].set(v)) for k, v in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str]:
    return {k: v for k, var in _context.items() if (v := var.get()) is not None}


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered.endswith(("_file", "_path", "_dir")):
        return False
    return bool(SECRET_NAME.search(name))


def scrub(value: Any, name: str = "") -> Any:
    """A copy of `value` safe to log: secrets redacted, raw bytes replaced by their length."""
    if name and _is_secret_name(name):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return value


class RedactFilter(logging.Filter):
    """Redacts secret-named extra fields and replaces bytes in fields and message args."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in list(record.__dict__):
            if name not in _STANDARD_ATTRS:
                record.__dict__[name] = scrub(record.__dict__[name], name)
        if isinstance(record.args, Mapping):
            record.args = scrub(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(scrub(a) for a in record.args)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = dict(current_context())
    for name, value in record.__dict__.items():
        if name not in _STANDARD_ATTRS and not name.startswith("_"):
            out[name] = value
    return out


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


# Left raw by json.dumps but line breaks to some readers (str.splitlines), terminal
# controls (DEL, C1, bidi overrides) or not encodable (lone surrogates); the \uXXXX
# escape is the same JSON string, so structured readers see the raw value.
_JSON_LINE_BREAKS = re.compile(
    "[\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

# syslog priorities, understood by journald as a "<N>" line prefix
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields."""

    def __init__(self, *, journal_prefix: bool = False) -> None:
        super().__init__()
        self.journal_prefix = journal_prefix

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = _JSON_LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}",
                                     json.dumps(entry, ensure_ascii=False, default=str))
        if self.journal_prefix:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


class TextFormatter(logging.Formatter):
    """`ts level logger: msg [bay=A1 recorder=...]` for people reading a terminal.

    One record is one line: message and fields are escaped (`agent.printable`), so a
    recorder-supplied string cannot start a line of its own; a traceback follows on
    indented lines, which no record's first line ever is."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        tail = " ".join(f"{printable(k)}={printable(v)}" for k, v in fields.items())
        line = (f"{_timestamp(record)} {record.levelname:<7} {printable(record.name)}: "
                f"{printable(record.getMessage())}")
        if tail:
            line += f" [{tail}]"
        if record.exc_info:
            for part in self.formatException(record.exc_info).splitlines():
                line += "\n    " + printable(part)
        return line


_HANDLER_NAME = "dock-agent"


def setup_logging(settings: LoggingSettings, *, stream: TextIO | None = None) -> logging.Logger:
    """Send all logging to `stream` (stdout) in the configured format; returns the agent logger.

    Calling it again replaces the handler it installed before (tests, reconfiguration).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.set_name(_HANDLER_NAME)
    # journald sets JOURNAL_STREAM when stdout is connected to it; "<N>" then sets the priority.
    journal = stream is None and "JOURNAL_STREAM" in os.environ
    formatter: logging.Formatter = (
        JsonFormatter(journal_prefix=journal) if settings.format == "json" else TextFormatter()
    )
    handler.setFormatter(formatter)
    handler.addFilter(RedactFilter())
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    return logging.getLogger("dock_agent")
