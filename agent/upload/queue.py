"""The durable upload queue: one row per stored file, in the agent's database.

Rows are derived from the evidence index (`enqueue_new` adds every indexed, unpurged file
that has no row), so a crash between an offload's commit and its enqueue loses nothing.
States: `pending` (to do, maybe with a multipart upload in progress), `uploaded` (the
store holds exactly the file's bytes: proved and recorded in an `uploaded` ledger entry),
`conflict` (the write-once key holds other content: never overwritten, a fault is open).
A multipart upload's id is recorded before its first part; an interrupted upload resumes
where it stopped (the store's ListParts, checked against each part's MD5, says which
parts are there).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from agent.store.evidence import StoredFile, get_file
from agent.store.ledger import EntryKind, Ledger
from agent.store.table import Column, Table, Where

SCHEMA = """
CREATE TABLE IF NOT EXISTS upload_queue (
    file_id      INTEGER PRIMARY KEY REFERENCES evidence_files (id),
    object_key   TEXT    NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'uploaded', 'conflict')),
    enqueued_us  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_us  INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    upload_id    TEXT,
    part_size    INTEGER,
    etag         TEXT,
    version_id   TEXT,
    uploaded_us  INTEGER,
    uploaded_seq INTEGER,
    acked_us     INTEGER,
    central_ack  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS upload_queue_due ON upload_queue (state, next_try_us);
CREATE TABLE IF NOT EXISTS purge_intents (
    file_id        INTEGER PRIMARY KEY REFERENCES evidence_files (id),
    stored_relpath TEXT    NOT NULL,
    requested_us   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hold_scopes (
    hold_id    TEXT    PRIMARY KEY,
    reason     TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    set_us     INTEGER NOT NULL,
    cleared_us INTEGER
);
"""

@dataclass(frozen=True)
class Job:
    file_id: int
    object_key: str
    state: str
    enqueued_us: int
    attempts: int
    next_try_us: int
    last_error: str | None
    upload_id: str | None
    part_size: int | None
    etag: str | None
    version_id: str | None
    uploaded_us: int | None
    uploaded_seq: int | None
    acked_us: int | None
    central_ack: bool


QUEUE = Table("upload_queue", Job, (
    "file_id", "object_key", "state", "enqueued_us", "attempts", "next_try_us", "last_error",
    "upload_id", "part_size", "etag", "version_id", "uploaded_us", "uploaded_seq",
    "acked_us", Column("central_ack", decode=bool)))


def enqueue_new(conn: sqlite3.Connection, key_of: Callable[[StoredFile], str],
                now_us: int) -> int:
    """Add a row for every committed, unpurged file that has none; returns how many."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM evidence_files e WHERE ledger_seq IS NOT NULL AND purged_us IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM upload_queue q WHERE q.file_id = e.id) ORDER BY id")]
    for file_id in ids:
        f = get_file(conn, file_id)
        assert f is not None
        conn.execute("INSERT INTO upload_queue (file_id, object_key, enqueued_us)"
                     " VALUES (?, ?, ?)", (file_id, key_of(f), now_us))
    return len(ids)


def get_job(conn: sqlite3.Connection, file_id: int) -> Job | None:
    return QUEUE.first(conn, Where().eq("file_id", file_id))


def next_due(conn: sqlite3.Connection, now_us: int) -> Job | None:
    """The pending job whose retry time has come: first those never tried or due at once
    (`next_try_us` 0), then those whose backoff is over, each in file order."""
    fresh = Where().eq("state", "pending").at_most("next_try_us", 0).at_most("next_try_us",
                                                                               now_us)
    retry = Where().eq("state", "pending").above("next_try_us", 0).at_most("next_try_us",
                                                                             now_us)
    return (QUEUE.first(conn, fresh, order="file_id")
            or QUEUE.first(conn, retry, order="file_id"))


def next_wakeup(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT MIN(next_try_us) FROM upload_queue WHERE state = 'pending'"
                       ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def jobs(conn: sqlite3.Connection, *, state: str | None = None) -> list[Job]:
    return QUEUE.select(conn, Where().eq_given(state=state), order="file_id")


def start_multipart(conn: sqlite3.Connection, file_id: int, upload_id: str,
                    part_size: int) -> None:
    conn.execute("UPDATE upload_queue SET upload_id = ?, part_size = ? WHERE file_id = ?",
                 (upload_id, part_size, file_id))


def set_part_size(conn: sqlite3.Connection, file_id: int, part_size: int) -> None:
    conn.execute("UPDATE upload_queue SET part_size = ? WHERE file_id = ?",
                 (part_size, file_id))


def forget_multipart(conn: sqlite3.Connection, file_id: int) -> None:
    conn.execute("UPDATE upload_queue SET upload_id = NULL WHERE file_id = ?", (file_id,))


def mark_failed(conn: sqlite3.Connection, file_id: int, error: str, next_try_us: int) -> None:
    conn.execute("UPDATE upload_queue SET attempts = attempts + 1, last_error = ?,"
                 " next_try_us = ? WHERE file_id = ?", (error[:500], next_try_us, file_id))


def mark_uploaded(conn: sqlite3.Connection, file_id: int, *, etag: str,
                  version_id: str | None, seq: int, now_us: int) -> None:
    conn.execute("UPDATE upload_queue SET state = 'uploaded', etag = ?, version_id = ?,"
                 " uploaded_us = ?, uploaded_seq = ?, upload_id = NULL, last_error = NULL,"
                 " acked_us = ? WHERE file_id = ?",
                 (etag, version_id, now_us, seq, now_us, file_id))


def mark_conflict(conn: sqlite3.Connection, file_id: int, error: str) -> None:
    conn.execute("UPDATE upload_queue SET state = 'conflict', last_error = ?, upload_id = NULL"
                 " WHERE file_id = ?", (error[:500], file_id))


def requeue(conn: sqlite3.Connection, file_id: int, reason: str) -> None:
    """The central copy is gone: upload again (the key is write-once, so only if absent)."""
    conn.execute("UPDATE upload_queue SET state = 'pending', next_try_us = 0, etag = NULL,"
                 " version_id = NULL, last_error = ? WHERE file_id = ?", (reason, file_id))


def set_acked(conn: sqlite3.Connection, file_id: int, now_us: int) -> None:
    conn.execute("UPDATE upload_queue SET acked_us = ? WHERE file_id = ?", (now_us, file_id))


def record_central_ack(conn: sqlite3.Connection, ledger: Ledger, files: list[str]
                       ) -> tuple[int, list[str]]:
    """Mark uploaded files (by BLAKE3 or object key) as acknowledged by the central
    service, each with an `upload_acknowledged` ledger entry; returns (count, unknown)."""
    acked = 0
    unknown: list[str] = []
    for ident in files:
        rows = conn.execute(
            "SELECT q.file_id, q.object_key, q.central_ack FROM upload_queue q"
            " JOIN evidence_files e ON e.id = q.file_id WHERE q.state = 'uploaded'"
            " AND (e.blake3 = ? OR q.object_key = ?)", (ident, ident)).fetchall()
        if not rows:
            unknown.append(ident)
        for file_id, key, already in rows:
            if already:
                continue
            f = get_file(conn, file_id)
            assert f is not None
            ledger.append(conn, EntryKind.UPLOAD_ACKNOWLEDGED, recorder=f.recorder_serial,
                          officer=f.officer_no, bay=f.bay, session_id=f.session_id,
                          data={"file_id": file_id, "stored_relpath": f.stored_relpath,
                                "blake3": f.blake3_hex, "key": key, "by": "central"})
            conn.execute("UPDATE upload_queue SET central_ack = 1 WHERE file_id = ?",
                         (file_id,))
            acked += 1
    return acked, unknown


@dataclass(frozen=True)
class Backlog:
    files: int
    bytes: int
    uploaded_files: int
    conflicts: int
    oldest_enqueued_us: int | None
    last_error: str | None


def backlog(conn: sqlite3.Connection) -> Backlog:
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(e.size), 0), MIN(q.enqueued_us) FROM upload_queue q"
        " JOIN evidence_files e ON e.id = q.file_id WHERE q.state = 'pending'").fetchone()
    up = conn.execute("SELECT COUNT(*) FROM upload_queue WHERE state = 'uploaded'").fetchone()
    con = conn.execute("SELECT COUNT(*) FROM upload_queue WHERE state = 'conflict'").fetchone()
    err = conn.execute("SELECT last_error FROM upload_queue WHERE state != 'uploaded'"
                       " AND last_error IS NOT NULL ORDER BY next_try_us DESC LIMIT 1"
                       ).fetchone()
    return Backlog(int(row[0]), int(row[1]), int(up[0]), int(con[0]),
                   None if row[2] is None else int(row[2]), None if err is None else err[0])


__all__ = ["SCHEMA", "Backlog", "Job", "backlog", "enqueue_new", "get_job", "jobs",
           "next_due", "record_central_ack"]
