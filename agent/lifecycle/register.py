"""The access register's export records: one row per export, in the same transaction as
its ledger entries.

An export is `started` (ledger "export_started": requester, approver, purpose, target and
every file's hash, written before any byte leaves the store), then either `complete`
(ledger "exported", only after the package was re-read from the target and verified) or
`failed` (ledger "export_failed" and an `export_failed` fault). A row never leaves a final
state; an agent that dies mid-export finds the row still `started` at its next start and
marks it failed (`fail_interrupted`), so the register never says complete for a package
that was not verified.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.lifecycle.access import AccessRequest
from agent.store import faults
from agent.store.ledger import EntryKind, Ledger, LedgerEntry
from agent.store.table import Column, Table, Where

ExportState = Literal["started", "complete", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS exports (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('export', 'preservation')),
    state        TEXT    NOT NULL CHECK (state IN ('started', 'complete', 'failed')),
    requester    TEXT    NOT NULL,
    approver     TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    package      TEXT    NOT NULL,
    file_ids     TEXT    NOT NULL,
    started_us   INTEGER NOT NULL,
    started_seq  INTEGER NOT NULL,
    finished_us  INTEGER,
    finished_seq INTEGER,
    detail       TEXT
);
CREATE INDEX IF NOT EXISTS exports_state ON exports (state);
CREATE TRIGGER IF NOT EXISTS exports_final BEFORE UPDATE OF state ON exports
WHEN OLD.state != 'started'
BEGIN SELECT RAISE(ABORT, 'a finished export record is final'); END;
CREATE TRIGGER IF NOT EXISTS exports_no_delete BEFORE DELETE ON exports
BEGIN SELECT RAISE(ABORT, 'export records are never deleted'); END;
"""

@dataclass(frozen=True)
class ExportRecord:
    id: int
    kind: str  # "export" | "preservation"
    state: ExportState
    requester: str
    approver: str
    purpose: str
    target: str
    package: str
    file_ids: tuple[int, ...]
    started_us: int
    started_seq: int
    finished_us: int | None
    finished_seq: int | None
    detail: Mapping[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "requester": self.requester,
                "approver": self.approver, "purpose": self.purpose, "target": self.target,
                "package": self.package, "file_ids": list(self.file_ids),
                "started_us": self.started_us, "started_seq": self.started_seq,
                "finished_us": self.finished_us, "finished_seq": self.finished_seq,
                "detail": None if self.detail is None else dict(self.detail)}


def _ids(text: str) -> tuple[int, ...]:
    return tuple(json.loads(text))


def _detail(text: str | None) -> Mapping[str, Any] | None:
    return None if text is None else dict(json.loads(text))


EXPORTS = Table("exports", ExportRecord, (
    "id", "kind", "state", "requester", "approver", "purpose", "target", "package",
    Column("file_ids", decode=_ids), "started_us", "started_seq", "finished_us",
    "finished_seq", Column("detail", decode=_detail)))


def next_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM exports").fetchone()[0])


def begin(conn: sqlite3.Connection, ledger: Ledger, export_id: int, req: AccessRequest, *,
          target: str, package: str, files: Sequence[Mapping[str, Any]],
          kind: str = "export", labels: Mapping[str, Any] | None = None) -> LedgerEntry:
    """Register an export before any byte leaves: the ledger entry and a `started` row."""
    entry = ledger.append(conn, EntryKind.EXPORT_STARTED, data={
        "export_id": export_id, "kind": kind, **req.as_dict(), **(labels or {}),
        "target": target, "package": package,
        "files": [dict(f) for f in files]})
    ids = [int(f["file_id"]) for f in files]
    EXPORTS.insert(conn, {
        "id": export_id, "kind": kind, "state": "started", "requester": req.requester,
        "approver": req.approver, "purpose": req.purpose, "target": target,
        "package": package, "file_ids": json.dumps(ids), "started_us": entry.time_us,
        "started_seq": entry.seq})
    return entry


def complete(conn: sqlite3.Connection, ledger: Ledger, export_id: int,
             facts: Mapping[str, Any]) -> LedgerEntry:
    rec = get(conn, export_id)
    assert rec is not None and rec.state == "started"
    entry = ledger.append(conn, EntryKind.EXPORTED, data={
        "export_id": export_id, "kind": rec.kind, "requester": rec.requester,
        "approver": rec.approver,
        "purpose": rec.purpose, "package": rec.package, "file_ids": list(rec.file_ids),
        "verified": True, **facts})
    conn.execute("UPDATE exports SET state = 'complete', finished_us = ?, finished_seq = ?,"
                 " detail = ? WHERE id = ?",
                 (entry.time_us, entry.seq, json.dumps(dict(facts), sort_keys=True),
                  export_id))
    return entry


def fail(conn: sqlite3.Connection, ledger: Ledger, export_id: int, reason: str,
         detail: Mapping[str, Any] | None = None) -> LedgerEntry:
    """Record a failed export: ledger entry, final row state and an export_failed fault."""
    rec = get(conn, export_id)
    assert rec is not None and rec.state == "started"
    data = {"export_id": export_id, "reason": reason, "target": rec.target,
            "package": rec.package, **(detail or {})}
    entry = ledger.append(conn, EntryKind.EXPORT_FAILED, data=data)
    conn.execute("UPDATE exports SET state = 'failed', finished_us = ?, finished_seq = ?,"
                 " detail = ? WHERE id = ?",
                 (entry.time_us, entry.seq, json.dumps(data, sort_keys=True), export_id))
    faults.raise_fault(conn, ledger, faults.FaultCode.EXPORT_FAILED,
                       f"export {export_id} to {rec.target} failed: {reason}",
                       detail={"export_id": export_id, "reason": reason})
    return entry


def fail_interrupted(conn: sqlite3.Connection, ledger: Ledger,
                     partial_removed: Mapping[int, bool] | None = None) -> list[int]:
    """At start-up: every export still `started` was cut short; record it failed."""
    ids = [r[0] for r in conn.execute("SELECT id FROM exports WHERE state = 'started'")]
    for export_id in ids:
        detail: dict[str, Any] = {"interrupted": True}
        if partial_removed is not None and export_id in partial_removed:
            detail["partial_removed"] = partial_removed[export_id]
        fail(conn, ledger, export_id, "interrupted: the agent stopped before the package"
             " was verified", detail)
    return ids


def get(conn: sqlite3.Connection, export_id: int) -> ExportRecord | None:
    return EXPORTS.first(conn, Where().eq("id", export_id))


def list_exports(conn: sqlite3.Connection, *, since_us: int | None = None,
                 until_us: int | None = None) -> list[ExportRecord]:
    where = Where().at_least("started_us", since_us).below("started_us", until_us)
    return EXPORTS.select(conn, where, order="id")
