"""Which stored files a lifecycle request means: named files, or recorder/officer/time range.

A selection is an object with any of `files` (file ids, BLAKE3 hashes or stored paths),
`recorder`, `officer`, `from`, `to` (RFC 3339 with a zone); every given criterion must
match. A recording overlapping from..to is in range. Naming a file that does not exist is
an error, never an empty result that silently does nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from typing import Any

from agent.lifecycle.errors import LifecycleError
from agent.store import evidence

KEYS = ("files", "recorder", "officer", "from", "to")
MAX_FILES = 10_000


class SelectionError(LifecycleError):
    """A selection names nothing, a file that does not exist, or a bad time."""


def instant_us(value: object, key: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SelectionError(f"{key} must be an RFC 3339 date-time string")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SelectionError(f"{key} {value!r} is not an RFC 3339 date-time") from exc
    if moment.tzinfo is None:
        raise SelectionError(f"{key} {value!r} needs a time zone (e.g. Z)")
    return int(moment.timestamp() * 1_000_000)


def _file_by_ref(conn: sqlite3.Connection, ref: object) -> evidence.StoredFile:
    if isinstance(ref, int) and not isinstance(ref, bool):
        f = evidence.get_file(conn, ref)
    elif isinstance(ref, str) and ref.isdigit():
        f = evidence.get_file(conn, int(ref))
    elif isinstance(ref, str):
        found = evidence.query(conn, blake3_hex=ref) or [
            g for g in (evidence.get_file(conn, r[0]) for r in conn.execute(
                "SELECT id FROM evidence_files WHERE stored_relpath = ?", (ref,)))
            if g is not None]
        f = found[0] if found else None
    else:
        raise SelectionError("files must be file ids, BLAKE3 hashes or stored paths")
    if f is None:
        raise SelectionError(f"no stored file {ref!r}")
    return f


def select(conn: sqlite3.Connection, sel: Mapping[str, Any], *,
           include_purged: bool = False) -> list[evidence.StoredFile]:
    """The stored files a selection means (ordered by id); SelectionError if none."""
    unknown = set(sel) - set(KEYS)
    if unknown:
        raise SelectionError(f"unknown selection key(s): {', '.join(sorted(unknown))}")
    if not any(sel.get(k) not in (None, "", []) for k in KEYS):
        raise SelectionError("select files: name files, or a recorder, officer or time range")
    start_us, end_us = instant_us(sel.get("from"), "from"), instant_us(sel.get("to"), "to")
    if start_us is not None and end_us is not None and end_us < start_us:
        raise SelectionError("the time range ends before it starts")
    refs = sel.get("files")
    if refs is not None:
        if not isinstance(refs, list) or len(refs) > MAX_FILES:
            raise SelectionError(f"files must be a list of at most {MAX_FILES} references")
        candidates = list({f.id: f for f in (_file_by_ref(conn, r) for r in refs)}.values())
    else:
        candidates = evidence.query(conn, device=sel.get("recorder"),
                                    officer=sel.get("officer"))
    out = []
    for f in candidates:
        if sel.get("recorder") and f.recorder_serial != sel["recorder"]:
            continue
        if sel.get("officer") and f.officer_no != sel["officer"]:
            continue
        rec_end = f.rec_end_us if f.rec_end_us is not None else f.offload_end_us
        rec_start = f.rec_start_us if f.rec_start_us is not None else rec_end
        if start_us is not None and rec_end < start_us:
            continue
        if end_us is not None and rec_start > end_us:
            continue
        if f.purged_us is not None and not include_purged:
            if refs is not None:
                raise SelectionError(f"file {f.id} was purged from this dock")
            continue
        out.append(f)
    if not out:
        raise SelectionError("the selection matches no stored file")
    return sorted(out, key=lambda f: f.id)
