"""The custody ledger: an append-only, hash-chained, checkpoint-signed record in SQLite.

Every entry is hashed over its canonical encoding (RFC 8785 JSON, see
`agent.store.canonical`) of

    {"type": "dock-agent/ledger-entry", "v": 1, "seq", "time_us", "dock_id", "kind",
     "recorder", "officer", "bay", "session_id", "data", "prev_hash"}

with BLAKE3 (hex). `prev_hash` is the previous entry's hash; the first entry's is 64 zeros
(`GENESIS_HASH`). `seq` starts at 1 and increases by exactly 1; `time_us` is integer
microseconds since the Unix epoch, UTC; absent recorder/officer/bay/session are `null`.

Checkpoints sign (dock_id, seq, entry hash, time) with the dock's Ed25519 key: after
every entry whose seq is a multiple of `checkpoint_every`, and whenever `checkpoint()` is
called (clean shutdown). The chain itself records which key signs and how often: the
first time a key is used a `signing_key` entry names it (and the policy), and a
`checkpoint_policy` entry follows any change of `checkpoint_every`. So a verifier knows
which checkpoints must exist without trusting the configuration.

`append` runs inside the caller's transaction and enqueues the entry as an outbox event
in the same transaction: no event without a record, no record without an event. Fault
kinds go to the "fault" stream, everything else to "custody". The outbox event id is the
entry hash, so the central side can de-duplicate re-sends. Triggers refuse UPDATE and
DELETE on ledger rows, so ordinary code cannot rewrite history.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from agent.store import outbox
from agent.store.canonical import canonical_text, loads
from agent.store.chain import GENESIS_HASH, hash_entry
from agent.store.errors import CanonicalError, LedgerError
from agent.store.signing import CheckpointSigner
from agent.store.table import Column, Table, Where

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq        INTEGER PRIMARY KEY,
    time_us    INTEGER NOT NULL,
    dock_id    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    recorder   TEXT,
    officer    TEXT,
    bay        TEXT,
    session_id TEXT,
    data       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS ledger_recorder ON ledger (recorder, seq);
CREATE INDEX IF NOT EXISTS ledger_officer ON ledger (officer, seq);
CREATE INDEX IF NOT EXISTS ledger_kind ON ledger (kind, seq);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger (time_us);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the custody ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the custody ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS ledger_keys (
    key_id     TEXT    PRIMARY KEY,
    created_us INTEGER NOT NULL,
    seq        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT    NOT NULL,
    time_us    INTEGER NOT NULL,
    dock_id    TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger checkpoints are append-only'); END;
"""


class EntryKind(StrEnum):
    """Known entry kinds. Values are stable: they appear in MQTT payloads."""

    DOCKED = "docked"
    IDENTIFIED = "identified"
    CLOCK_CHECKED = "clock_checked"
    CLOCK_SET = "clock_set"
    OFFLOADED = "offloaded"
    VERIFIED = "verified"
    WIPED = "wiped"
    UNDOCKED = "undocked"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    OFFICER_ASSIGNED = "officer_assigned"
    HOLD_SET = "hold_set"
    HOLD_CLEARED = "hold_cleared"
    DEVICE_REJECTED = "device_rejected"
    EXPORTED = "exported"
    PURGED = "purged"
    UPLOADED = "uploaded"
    UPLOAD_ACKNOWLEDGED = "upload_acknowledged"
    SIGNING_KEY = "signing_key"
    CHECKPOINT_POLICY = "checkpoint_policy"
    ENTRY_LIST = "entry_list"  # a complete list of recorder entries a fault summarises
    ACCESSED = "accessed"  # access register: a view, before any byte is shown
    EXPORT_STARTED = "export_started"  # access register: an export, before any byte leaves
    EXPORT_FAILED = "export_failed"
    TAGGED = "tagged"
    AUDIT_RUN = "audit_run"
    PRESERVED = "preserved"  # two verified long-term copies exist (000 §16)
    FIRMWARE_STAGED = "firmware_staged"  # a verified package stored on the dock
    FIRMWARE_POLICY_SET = "firmware_policy_set"  # a model's target/allowlist from central
    FIRMWARE_STARTED = "firmware_started"  # an update of one recorder began
    FIRMWARE_RESUMED = "firmware_resumed"  # ... continued from the recorder's durable offset
    FIRMWARE_COMPLETED = "firmware_completed"  # the recorder runs the new version
    FIRMWARE_FAILED = "firmware_failed"  # refused, interrupted for good or never came back
    FIRMWARE_ROLLED_BACK = "firmware_rolled_back"  # new image failed to boot: old slot runs


FAULT_KINDS = frozenset({EntryKind.FAULT, EntryKind.FAULT_CLEARED})
_POLICY_KINDS = (EntryKind.SIGNING_KEY.value, EntryKind.CHECKPOINT_POLICY.value)
_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def current_us() -> int:
    """Now, in integer microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def iso_utc(time_us: int) -> str:
    """`2026-11-23T15:54:03.123456Z` from integer microseconds."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=time_us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(*, seq: int, time_us: int, dock_id: str, kind: str, recorder: str | None,
               officer: str | None, bay: str | None, session_id: str | None,
               data: Mapping[str, object], prev_hash: str) -> str:
    """BLAKE3 hex over the canonical encoding of one entry (see the module docstring)."""
    return hash_entry({
        "seq": seq, "time_us": time_us, "dock_id": dock_id, "kind": kind,
        "recorder": recorder, "officer": officer, "bay": bay, "session_id": session_id,
        "data": data, "prev_hash": prev_hash,
    })


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    time_us: int
    dock_id: str
    kind: str
    recorder: str | None
    officer: str | None
    bay: str | None
    session_id: str | None
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        return entry_hash(seq=self.seq, time_us=self.time_us, dock_id=self.dock_id,
                          kind=self.kind, recorder=self.recorder, officer=self.officer,
                          bay=self.bay, session_id=self.session_id, data=self.data,
                          prev_hash=self.prev_hash)

    def as_event(self) -> dict[str, object]:
        """The outbox / MQTT payload: the entry with an ISO time beside `time_us`."""
        return {
            "seq": self.seq, "hash": self.hash, "prev_hash": self.prev_hash,
            "kind": self.kind, "time": iso_utc(self.time_us), "time_us": self.time_us,
            "dock_id": self.dock_id, "recorder": self.recorder, "officer": self.officer,
            "bay": self.bay, "session_id": self.session_id, "data": dict(self.data),
        }


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time_us: int
    dock_id: str
    key_id: str
    signature: str


def _entry_data(text: str) -> dict[str, Any]:
    data = loads(text)
    if not isinstance(data, dict):
        raise LedgerError("has non-object data")
    return data


LEDGER = Table("ledger", LedgerEntry, (
    "seq", "time_us", "dock_id", "kind", "recorder", "officer", "bay", "session_id",
    Column("data", decode=_entry_data), "prev_hash", "hash"))
CHECKPOINTS = Table("ledger_checkpoints", Checkpoint,
                    ("seq", "hash", "time_us", "dock_id", "key_id", "signature"))


def entry_from_row(row: sqlite3.Row | tuple[Any, ...]) -> LedgerEntry:
    """A `LEDGER` result row as an entry; LedgerError (naming the seq) if it is damaged."""
    try:
        return LEDGER.load(row)
    except LedgerError as exc:
        raise LedgerError(f"ledger entry {row[0]} {exc}") from exc


def _opt(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None  # "" (unassigned) and None mean the same; store one form
    if not isinstance(value, str):
        raise LedgerError(f"{name} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LedgerError(f"{name} {value!r} is not valid Unicode") from exc
    return value


class Ledger:
    """Appends entries for one dock; stateless between calls (the database is the state)."""

    def __init__(self, dock_id: str, signer: CheckpointSigner | None = None,
                 checkpoint_every: int = 256) -> None:
        if not dock_id or _opt(dock_id, "dock_id") is None:
            raise LedgerError("dock_id must not be empty")
        if checkpoint_every < 1:
            raise LedgerError("checkpoint_every must be at least 1")
        self.dock_id = dock_id
        self.signer = signer
        self.checkpoint_every = checkpoint_every

    def append(
        self,
        conn: sqlite3.Connection,
        kind: str,
        *,
        recorder: str | None = None,
        officer: str | None = None,
        bay: str | None = None,
        session_id: str | None = None,
        data: Mapping[str, object] | None = None,
        now_us: int | None = None,
    ) -> LedgerEntry:
        """Append one entry and its outbox event, inside the caller's transaction."""
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise LedgerError(f"invalid ledger entry kind {kind!r} (snake_case expected)")
        if data is not None and not isinstance(data, Mapping):
            raise LedgerError(f"ledger data must be an object, not {type(data).__name__}")
        try:
            text = canonical_text(dict(data or {}))
        except CanonicalError as exc:
            raise LedgerError(f"ledger data for {kind!r} cannot be recorded: {exc}") from exc
        if self.signer is not None:
            self._ensure_key(conn, now_us)
        return self._append(conn, kind, _opt(recorder, "recorder"), _opt(officer, "officer"),
                            _opt(bay, "bay"), _opt(session_id, "session_id"), text, now_us)

    def _append(self, conn: sqlite3.Connection, kind: str, recorder: str | None,
                officer: str | None, bay: str | None, session_id: str | None,
                data_text: str, now: int | None) -> LedgerEntry:
        t = current_us() if now is None else int(now)
        last = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
        data = loads(data_text)
        assert isinstance(data, dict)
        h = entry_hash(seq=seq, time_us=t, dock_id=self.dock_id, kind=kind, recorder=recorder,
                       officer=officer, bay=bay, session_id=session_id, data=data,
                       prev_hash=prev)
        entry = LedgerEntry(seq, t, self.dock_id, kind, recorder, officer, bay, session_id,
                            data, prev, h)
        LEDGER.insert(conn, {**vars(entry), "data": data_text})
        outbox.enqueue(conn, stream="fault" if kind in FAULT_KINDS else "custody",
                       payload=entry.as_event(), subject=recorder, event_id=h)
        if self.signer is not None and seq % self.checkpoint_every == 0:
            self.checkpoint(conn, now_us=t)
        return entry

    def register_key(self, conn: sqlite3.Connection, *, now_us: int | None = None) -> None:
        """Record the signing key and checkpoint policy in the chain (idempotent).

        Call at start-up; `append` and `checkpoint` also do it on first use.
        """
        if self.signer is not None:
            self._ensure_key(conn, now_us)

    def _ensure_key(self, conn: sqlite3.Connection, now: int | None) -> None:
        signer = self.signer
        assert signer is not None
        policy = {"key_id": signer.key_id, "checkpoint_every": self.checkpoint_every}
        known = conn.execute("SELECT 1 FROM ledger_keys WHERE key_id = ?",
                             (signer.key_id,)).fetchone()
        if known is None:
            t = current_us() if now is None else int(now)
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]
            conn.execute("INSERT INTO ledger_keys (key_id, created_us, seq) VALUES (?, ?, ?)",
                         (signer.key_id, t, last + 1))
            self._append(conn, EntryKind.SIGNING_KEY.value, None, None, None, None,
                         canonical_text(policy), now)
            return
        row = conn.execute(
            "SELECT data FROM ledger WHERE kind IN (?, ?) ORDER BY seq DESC LIMIT 1",
            _POLICY_KINDS,
        ).fetchone()
        if row is None or loads(row[0]) != policy:
            self._append(conn, EntryKind.CHECKPOINT_POLICY.value, None, None, None, None,
                         canonical_text(policy), now)

    def checkpoint(self, conn: sqlite3.Connection, *, now_us: int | None = None
                   ) -> Checkpoint | None:
        """Sign the latest entry (no-op without a signer, or if it is already signed)."""
        if self.signer is None:
            return None
        self._ensure_key(conn, now_us)
        last = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            return None
        done = conn.execute("SELECT 1 FROM ledger_checkpoints WHERE seq = ?",
                            (last[0],)).fetchone()
        if done is not None:
            return None
        t = current_us() if now_us is None else int(now_us)
        sig = self.signer.sign(self.dock_id, last[0], last[1], t)
        cp = Checkpoint(last[0], last[1], t, self.dock_id, self.signer.key_id, sig)
        CHECKPOINTS.insert(conn, vars(cp))
        return cp


def get_entry(conn: sqlite3.Connection, seq: int) -> LedgerEntry | None:
    row = LEDGER.rows(conn, Where().eq("seq", seq)).fetchone()
    return None if row is None else entry_from_row(row)


def last_entry(conn: sqlite3.Connection) -> LedgerEntry | None:
    row = LEDGER.rows(conn, order="seq", desc=True, limit=1).fetchone()
    return None if row is None else entry_from_row(row)


def entries(
    conn: sqlite3.Connection,
    *,
    recorder: str | None = None,
    officer: str | None = None,
    kind: str | None = None,
    session_id: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[LedgerEntry]:
    """Entries matching every given filter; `since_us` inclusive, `until_us` exclusive."""
    where = (Where().eq_given(recorder=recorder, officer=officer, kind=kind,
                              session_id=session_id)
             .at_least("time_us", since_us).below("time_us", until_us)
             .above("seq", after_seq))
    return [entry_from_row(r) for r in LEDGER.rows(conn, where, order="seq",
                                                    desc=newest_first, limit=limit)]


def checkpoints(conn: sqlite3.Connection) -> list[Checkpoint]:
    return CHECKPOINTS.select(conn, order="seq")


def recent_checkpoints(conn: sqlite3.Connection, limit: int) -> list[Checkpoint]:
    """The newest `limit` checkpoints, oldest first."""
    return CHECKPOINTS.select(conn, order="seq", desc=True, limit=limit)[::-1]
