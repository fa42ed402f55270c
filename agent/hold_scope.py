"""Hold scopes (docs/mqtt.md `set-hold`): which stored files a legal hold covers. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from agent.mqtt.errors import CommandRejected
from agent.store import evidence


def instant_us(scope: Mapping[str, Any], key: str) -> int | None:
    """`from` / `to` of a hold scope (RFC 3339) as integer microseconds, or None."""
    value = scope.get(key)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandRejected(f"scope.{key} is not an RFC 3339 date-time") from exc
    if moment.tzinfo is None:
        raise CommandRejected(f"scope.{key} needs a time zone (e.g. Z)")
    return int(moment.timestamp() * 1_000_000)


def in_scope(f: evidence.StoredFile, scope: Mapping[str, Any]) -> bool:
    """Whether a stored file falls under a hold scope (docs/mqtt.md: `serial`, `officer_no`,
    `from`, `to`, `files`); every given criterion must match. A recording overlapping the
    from..to window is in it; one without known times counts by its end (or offload) time."""
    if "serial" in scope and f.recorder_serial != scope["serial"]:
        return False
    if "officer_no" in scope and f.officer_no != scope["officer_no"]:
        return False
    files = scope.get("files")
    if files is not None and f.blake3_hex not in files and f.stored_relpath not in files:
        return False
    start_us, end_us = instant_us(scope, "from"), instant_us(scope, "to")
    rec_end = f.rec_end_us if f.rec_end_us is not None else f.offload_end_us
    rec_start = f.rec_start_us if f.rec_start_us is not None else rec_end
    if start_us is not None and rec_end < start_us:
        return False
    return not (end_us is not None and rec_start > end_us)


