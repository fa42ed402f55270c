"""Offload work left pending on disk: copies in progress (the `offload_journal` table:
which partial file belongs to which recorder file, and how much of it is durable) and
guarded deletes requested from a recorder (`wipe_intents`). A crash leaves both for the
next docking of the same recorder to resume or settle.

Ordering rule: the partial's data is made durable (fdatasync) before `advance()` records
the new `durable_len`, so after a crash or power loss the journal never claims more than
the disk holds. `prefix_blake3` is the BLAKE3 digest of exactly the first `durable_len`
bytes; a resume re-hashes that prefix from disk and compares, so a damaged partial is
detected instead of trusted. `complete` means the whole file is durable in the partial
(then `prefix_blake3` is the file's digest) and only the rename and commit remain.
The row is deleted in the same transaction that commits the custody record.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS offload_journal (
    recorder_serial TEXT    NOT NULL,
    source_name     BLOB    NOT NULL,
    stored_relpath  TEXT    NOT NULL,
    partial_relpath TEXT    NOT NULL UNIQUE,
    source_size     INTEGER NOT NULL,
    source_mtime_ns INTEGER NOT NULL,
    durable_len     INTEGER NOT NULL DEFAULT 0,
    prefix_blake3   BLOB,
    complete        INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL    NOT NULL,
    PRIMARY KEY (recorder_serial, source_name)
);
-- a name being chosen for a new file asks whether a pending copy owns it (`claims_path`)
CREATE INDEX IF NOT EXISTS offload_journal_stored ON offload_journal (stored_relpath);
-- A guarded delete about to be sent to a recorder. Written (durably) before the command,
-- removed in the transaction that records the wipe. An intent left by a crash is settled
-- at the recorder's next docking by looking at what is really on it.
CREATE TABLE IF NOT EXISTS wipe_intents (
    file_id         INTEGER PRIMARY KEY,
    recorder_serial TEXT    NOT NULL,
    source_name     BLOB    NOT NULL,
    size            INTEGER NOT NULL,
    requested_at    REAL    NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    recorder_serial: str
    source_name: bytes
    stored_relpath: str
    partial_relpath: str
    source_size: int
    source_mtime_ns: int
    durable_len: int = 0
    prefix_blake3: bytes | None = None
    complete: bool = False


_COLS = (
    "recorder_serial, source_name, stored_relpath, partial_relpath, source_size,"
    " source_mtime_ns, durable_len, prefix_blake3, complete"
)


def _row(r: Sequence[Any]) -> JournalEntry:
    return JournalEntry(
        str(r[0]), bytes(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6]),
        None if r[7] is None else bytes(r[7]), bool(r[8]),
    )


def get(conn: sqlite3.Connection, recorder_serial: str, source_name: bytes) -> JournalEntry | None:
    r = conn.execute(
        f"SELECT {_COLS} FROM offload_journal"  # noqa: S608 - constant column list
        " WHERE recorder_serial = ? AND source_name = ?",
        (recorder_serial, source_name),
    ).fetchone()
    return None if r is None else _row(r)


def for_recorder(conn: sqlite3.Connection, recorder_serial: str) -> dict[bytes, JournalEntry]:
    rows = conn.execute(
        f"SELECT {_COLS} FROM offload_journal WHERE recorder_serial = ?",  # noqa: S608
        (recorder_serial,),
    ).fetchall()
    return {e.source_name: e for e in map(_row, rows)}


def put(conn: sqlite3.Connection, e: JournalEntry) -> None:
    """Start (or restart from zero) the journal row of one file."""
    conn.execute(
        f"INSERT OR REPLACE INTO offload_journal ({_COLS}, updated_at)"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (e.recorder_serial, e.source_name, e.stored_relpath, e.partial_relpath, e.source_size,
         e.source_mtime_ns, e.durable_len, e.prefix_blake3, int(e.complete), time.time()),
    )


def advance(
    conn: sqlite3.Connection,
    recorder_serial: str,
    source_name: bytes,
    durable_len: int,
    prefix_blake3: bytes,
    *,
    complete: bool = False,
) -> None:
    """Record a new durable point; call only after the data up to it was fdatasync'ed."""
    conn.execute(
        "UPDATE offload_journal SET durable_len = ?, prefix_blake3 = ?, complete = ?,"
        " updated_at = ? WHERE recorder_serial = ? AND source_name = ?",
        (durable_len, prefix_blake3, int(complete), time.time(), recorder_serial, source_name),
    )


def restart(
    conn: sqlite3.Connection, recorder_serial: str, source_name: bytes, source_size: int,
    source_mtime_ns: int,
) -> None:
    """The partial starts over from zero for a source with this size and mtime."""
    conn.execute(
        "UPDATE offload_journal SET durable_len = 0, prefix_blake3 = NULL, complete = 0,"
        " source_size = ?, source_mtime_ns = ?, updated_at = ?"
        " WHERE recorder_serial = ? AND source_name = ?",
        (source_size, source_mtime_ns, time.time(), recorder_serial, source_name),
    )


def remove(conn: sqlite3.Connection, recorder_serial: str, source_name: bytes) -> None:
    conn.execute(
        "DELETE FROM offload_journal WHERE recorder_serial = ? AND source_name = ?",
        (recorder_serial, source_name),
    )


def claims_path(conn: sqlite3.Connection, relpath: str) -> bool:
    """Whether a journal row owns this store-relative path (as partial or final name)."""
    return any(conn.execute(
        f"SELECT 1 FROM offload_journal WHERE {col} = ? LIMIT 1",  # noqa: S608 - constant
        (relpath,)).fetchone() for col in ("partial_relpath", "stored_relpath"))


def claimed_paths(conn: sqlite3.Connection) -> set[str]:
    """Every store-relative path a journal row owns (partials and their final names)."""
    out: set[str] = set()
    for partial, final in conn.execute(
        "SELECT partial_relpath, stored_relpath FROM offload_journal"
    ):
        out.add(str(partial))
        out.add(str(final))
    return out


@dataclass(frozen=True, slots=True)
class WipeIntent:
    file_id: int
    recorder_serial: str
    source_name: bytes
    size: int
    requested_at: float


def intend_wipe(
    conn: sqlite3.Connection, file_id: int, recorder_serial: str, source_name: bytes, size: int
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO wipe_intents (file_id, recorder_serial, source_name, size,"
        " requested_at) VALUES (?, ?, ?, ?, ?)",
        (file_id, recorder_serial, source_name, size, time.time()),
    )


def wipe_intents(conn: sqlite3.Connection, recorder_serial: str) -> list[WipeIntent]:
    rows = conn.execute(
        "SELECT file_id, recorder_serial, source_name, size, requested_at FROM wipe_intents"
        " WHERE recorder_serial = ? ORDER BY file_id", (recorder_serial,),
    ).fetchall()
    return [WipeIntent(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]


def settle_wipe(conn: sqlite3.Connection, file_id: int) -> None:
    conn.execute("DELETE FROM wipe_intents WHERE file_id = ?", (file_id,))
