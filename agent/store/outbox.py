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

from agent.store.table import Column, Table, Where

Stream = Literal["custody", "fault", "health"]

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
CREATE TABLE IF NOT EXISTS outbox_sent (
    seq        INTEGER PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    stream     TEXT    NOT NULL,
    subject    TEXT,
    ledger_seq INTEGER,
    payload    TEXT,
    created_at REAL    NOT NULL,
    acked_at   REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_sent_acked ON outbox_sent (acked_at);
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


def _payload(text: str) -> dict[str, object]:
    return dict(json.loads(text))


OUTBOX = Table("outbox", OutboxEvent, (
    "seq", "event_id", "stream", "subject", Column("payload", decode=_payload),
    Column("droppable", decode=bool), "created_at"))


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
    seq = OUTBOX.insert(conn, {
        "event_id": eid, "stream": stream, "subject": subject,
        "payload": json.dumps(body, sort_keys=True, separators=(",", ":")),
        "droppable": int(droppable), "created_at": created})
    return OutboxEvent(seq, eid, stream, subject, body, droppable, created)


def peek(conn: sqlite3.Connection, limit: int, after_seq: int = 0) -> list[OutboxEvent]:
    """The oldest waiting events, in `seq` order."""
    return OUTBOX.select(conn, Where().above("seq", after_seq), order="seq", limit=limit)


def ack(conn: sqlite3.Connection, seqs: Sequence[int], now: float | None = None) -> None:
    """Move events the broker acknowledged (PUBACK) to the sent history, which answers
    resend requests. Ledger events keep only their ledger seq there: the ledger itself
    keeps the entry for ever; other events (health) keep their payload."""
    t = time.time() if now is None else now
    conn.executemany(
        "INSERT OR IGNORE INTO outbox_sent"
        " (seq, event_id, stream, subject, ledger_seq, payload, created_at, acked_at)"
        " SELECT seq, event_id, stream, subject,"
        "  CASE WHEN stream IN ('custody', 'fault') THEN json_extract(payload, '$.seq') END,"
        "  CASE WHEN stream IN ('custody', 'fault') THEN NULL ELSE payload END,"
        "  created_at, ? FROM outbox WHERE seq = ?",
        [(t, s) for s in seqs])
    conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])


@dataclass(frozen=True, slots=True)
class SentEvent:
    """An acknowledged event kept for resend requests."""

    seq: int
    event_id: str
    stream: str
    subject: str | None
    ledger_seq: int | None  # custody/fault: the entry is read back from the ledger
    payload: dict[str, object] | None  # other streams: the payload as sent
    created_at: float


def _payload_or_none(text: str | None) -> dict[str, object] | None:
    return None if text is None else _payload(text)


SENT = Table("outbox_sent", SentEvent, (
    "seq", "event_id", "stream", "subject", "ledger_seq",
    Column("payload", decode=_payload_or_none), "created_at"))


def sent_between(conn: sqlite3.Connection, first: int, last: int) -> list[SentEvent]:
    return SENT.select(conn, Where().at_least("seq", first).at_most("seq", last), order="seq")


def waiting_between(conn: sqlite3.Connection, first: int, last: int) -> list[int]:
    """seqs in [first, last] still waiting in the outbox."""
    return [r[0] for r in conn.execute(
        "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last))]


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest seq ever issued (0 when none)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]) if row is not None else 0


def prune_sent(conn: sqlite3.Connection, *, max_age_days: float, now: float | None = None) -> int:
    """Forget acknowledged events older than `max_age_days`; returns how many."""
    t = time.time() if now is None else now
    return conn.execute("DELETE FROM outbox_sent WHERE acked_at < ?",
                        (t - max_age_days * 86400.0,)).rowcount


# --- bounds policy, counters and statistics -------------------------------------------

DROPPED_COUNTER = "dropped"


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # events waiting for a PUBACK
    oldest_created_at: float | None  # creation time of the oldest waiting event
    dropped: int  # health samples dropped by the bounds policy, ever (persisted)


def counter(conn: sqlite3.Connection, name: str) -> int:
    """A persisted counter's value (0 when never set)."""
    row = conn.execute("SELECT value FROM outbox_counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row is not None else 0


def add_to_counter(conn: sqlite3.Connection, name: str, delta: int) -> int:
    """Add `delta` to a persisted counter inside the caller's transaction; the new value."""
    conn.execute(
        "INSERT INTO outbox_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        (name, delta),
    )
    return counter(conn, name)


def enforce_bounds(
    conn: sqlite3.Connection, *, max_events: int, max_age_days: float, now: float | None = None
) -> int:
    """Apply the outbox bounds; returns how many events were dropped.

    Policy: only droppable rows (periodic health samples) are ever deleted — first those
    older than `max_age_days`, then the oldest droppable rows while the outbox holds more
    than `max_events`. Custody and fault events are kept whatever the size, so the outbox
    may exceed `max_events` when they alone fill it. Every drop is counted in the
    persisted `dropped` counter, which the reporter publishes with the dock health.
    """
    t = time.time() if now is None else now
    cutoff = t - max_age_days * 86400.0
    dropped = conn.execute(
        "DELETE FROM outbox WHERE droppable = 1 AND created_at < ?", (cutoff,)
    ).rowcount
    depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    excess = depth - max_events
    if excess > 0:
        dropped += conn.execute(
            "DELETE FROM outbox WHERE seq IN"
            " (SELECT seq FROM outbox WHERE droppable = 1 ORDER BY seq LIMIT ?)",
            (excess,),
        ).rowcount
    if dropped:
        add_to_counter(conn, DROPPED_COUNTER, dropped)
    return dropped


def stats(conn: sqlite3.Connection) -> OutboxStats:
    row = conn.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
    return OutboxStats(int(row[0]), row[1], counter(conn, DROPPED_COUNTER))
