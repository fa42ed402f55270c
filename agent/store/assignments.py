"""Officer assignments requested for recorders, applied when the recorder is next docked.

The central service may assign an officer to a recorder that is out in the field; the
request waits here (durably) and the next docking session writes it to the recorder,
records `officer_assigned` in the ledger and marks the request applied. A newer request
for the same recorder supersedes an older pending one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS officer_assignments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    recorder      TEXT    NOT NULL,
    officer_no    TEXT    NOT NULL,
    officer_name  TEXT    NOT NULL DEFAULT '',
    unit_no       TEXT    NOT NULL DEFAULT '',
    unit_name     TEXT    NOT NULL DEFAULT '',
    requested_by  TEXT,
    requested_at  REAL    NOT NULL,
    applied_at    REAL,
    superseded_at REAL
);
CREATE INDEX IF NOT EXISTS officer_assignments_pending
    ON officer_assignments (recorder) WHERE applied_at IS NULL AND superseded_at IS NULL;
"""


@dataclass(frozen=True, slots=True)
class Assignment:
    id: int
    recorder: str
    officer_no: str
    officer_name: str
    unit_no: str
    unit_name: str
    requested_by: str | None
    requested_at: float


def request(
    conn: sqlite3.Connection,
    recorder: str,
    *,
    officer_no: str,
    officer_name: str = "",
    unit_no: str = "",
    unit_name: str = "",
    requested_by: str | None = None,
    now: float | None = None,
) -> Assignment:
    at = time.time() if now is None else now
    conn.execute(
        "UPDATE officer_assignments SET superseded_at = ?"
        " WHERE recorder = ? AND applied_at IS NULL AND superseded_at IS NULL",
        (at, recorder),
    )
    cur = conn.execute(
        "INSERT INTO officer_assignments (recorder, officer_no, officer_name, unit_no, unit_name,"
        " requested_by, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (recorder, officer_no, officer_name, unit_no, unit_name, requested_by, at),
    )
    assert cur.lastrowid is not None
    return Assignment(cur.lastrowid, recorder, officer_no, officer_name, unit_no, unit_name,
                      requested_by, at)


def pending(conn: sqlite3.Connection, recorder: str) -> Assignment | None:
    row = conn.execute(
        "SELECT id, recorder, officer_no, officer_name, unit_no, unit_name, requested_by,"
        " requested_at FROM officer_assignments"
        " WHERE recorder = ? AND applied_at IS NULL AND superseded_at IS NULL"
        " ORDER BY id DESC LIMIT 1",
        (recorder,),
    ).fetchone()
    return None if row is None else Assignment(*row)


def mark_applied(conn: sqlite3.Connection, assignment_id: int, now: float | None = None) -> None:
    conn.execute(
        "UPDATE officer_assignments SET applied_at = ? WHERE id = ? AND applied_at IS NULL",
        (time.time() if now is None else now, assignment_id),
    )
