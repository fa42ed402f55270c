"""Checks of single setting values that a type cannot express (patterns, names, zones).

Each check returns a message, or None when the value is fine; `FIELD_CHECKS` maps dotted
keys (`[]` standing for any list index) to their check, applied during conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config.typenames import short

_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_DOCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_dock_id(value: str) -> str | None:
    if _DOCK_ID.fullmatch(value):
        return None
    return ("must be 1-64 characters A-Z a-z 0-9 . _ - starting with a letter or digit "
            "(it is part of MQTT topics)")


def _check_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f'unknown time zone "{value}" (use an IANA name such as "Asia/Shanghai")'
    return None


def _check_hex4(value: str) -> str | None:
    return None if _HEX4.fullmatch(value) else f"expected 4 hex digits, got {short(value)}"


def _check_regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def _check_officer_pattern(value: str) -> str | None:
    problem = _check_regex(value)
    if problem is None and value and "officer" not in re.compile(value).groupindex:
        return "the regular expression needs a group named `officer`: (?P<officer>...)"
    return problem


def _check_footage_dir(value: str) -> str | None:
    p = Path(value)
    if not value or p.is_absolute() or ".." in p.parts:
        return f"must be a path relative to the recorder's root, got {short(value)}"
    return None


def _check_topic_prefix(value: str) -> str | None:
    if not value or value.startswith("/") or value.endswith("/") or any(
        c in value for c in "+#\0"
    ):
        return "must be non-empty, without leading or trailing '/' and without + or #"
    return None


# Checks of single values, by dotted key (`[]` stands for any list index).
FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "dock.id": _check_dock_id,
    "dock.timezone": _check_timezone,
    "devices.allow[].vid": _check_hex4,
    "devices.allow[].pid": _check_hex4,
    "devices.allow[].serial_pattern": _check_regex,
    "recorder.officer_in_name": _check_officer_pattern,
    "offload.footage_dirs[]": _check_footage_dir,
    "mqtt.topic_prefix": _check_topic_prefix,
}
