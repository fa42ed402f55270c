"""The durable MQTT outbox: events wait here until the broker acknowledges them.

Rows are written with plain functions on a connection, so a ledger entry and its event
enter in one transaction (see `agent.store.db.Database.write`). `seq` is the per-dock
persistent sequence the central side uses to detect gaps; `event_id` is stable across
re-sends so it can de-duplicate. Only `droppable` rows (periodic health samples) may ever
be dropped by the bounds policy; custody and fault events never are.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Stream = Literal["custody", "fault", "health", "state"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT    NOT NULL UNIQUE,
    stream     TEXT    NOT NULL,
    subject    TEXT,
    payload    TEXT    NOT NULL,
    droppable  INTEGER NOT NULL DEFAULT 0,
    created_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    event_id: str
    stream: str
    subject: str | None  # e.g. recorder serial, for topic routing
    payload: dict[str, object]
    droppable: bool
    created_at: float


def enqueue(
    conn: sqlite3.Connection,
    *,
    stream: Stream,
    payload: Mapping[str, object],
    subject: str | None = None,
    droppable: bool = False,
    event_id: str | None = None,
    now: float | None = None,
) -> OutboxEvent:
    """Add one event; call inside the caller's transaction."""
    eid = event_id or uuid.uuid4().hex
    created = time.time() if now is None else now
    body = dict(payload)
    cur = conn.execute(
        "INSERT INTO outbox (event_id, stream, subject, payload, droppable, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (eid, stream, subject, json.dumps(body, sort_keys=True, separators=(",", ":")),
         int(droppable), created),
    )
    seq = cur.lastrowid
    assert seq is not None
    return OutboxEvent(seq, eid, stream, subject, body, droppable, created)


def peek(conn: sqlite3.Connection, limit: int, after_seq: int = 0) -> list[OutboxEvent]:
    """The oldest waiting events, in `seq` order."""
    rows = conn.execute(
        "SELECT seq, event_id, stream, subject, payload, droppable, created_at FROM outbox"
        " WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [
        OutboxEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), bool(r[5]), r[6]) for r in rows
    ]


def ack(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Delete events the broker acknowledged (PUBACK)."""
    conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
