"""The evidence index: one row per stored file, queryable by unit, device, officer, date.

Stored files are laid out by `agent.store.layout` (regulation 004 §19). A row is written
together with its "offloaded" ledger entry and outbox event in the caller's transaction
(`commit_file`), so the index, the custody chain and the report can never disagree. The
identifying columns of a row (name, path, size, hash, times) cannot be updated (a trigger
refuses it) and rows are never deleted: a purge marks the row and keeps the record.

Source names are kept as the exact BYTES read from the recorder (they need not be valid
UTF-8) plus a display form where invalid bytes appear as `\\xNN`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from agent.store.errors import EvidenceError, LayoutError
from agent.store.layout import (
    PARTIAL_PREFIX,
    check_relpath,
    layout_relpath,
    partial_name,
    recording_day,
)
from agent.store.ledger import EntryKind, Ledger, LedgerEntry, current_us, iso_utc
from agent.store.table import Column, Table, Where

VerifyState = Literal["unverified", "ok", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence_files (
    id               INTEGER PRIMARY KEY,
    recorder_serial  TEXT    NOT NULL,
    session_id       TEXT    NOT NULL,
    bay              TEXT,
    source_name      BLOB    NOT NULL,
    source_display   TEXT    NOT NULL,
    stored_relpath   TEXT    NOT NULL UNIQUE,
    size             INTEGER NOT NULL CHECK (size >= 0),
    blake3           TEXT    NOT NULL,
    rec_start_us     INTEGER,
    rec_end_us       INTEGER,
    rec_date         TEXT    NOT NULL,
    offload_start_us INTEGER NOT NULL,
    offload_end_us   INTEGER NOT NULL,
    unit_no          TEXT    NOT NULL,
    officer_no       TEXT    NOT NULL,
    officer_name     TEXT    NOT NULL,
    late             INTEGER NOT NULL,
    late_by_s        REAL    NOT NULL,
    deadline_us      INTEGER,
    ledger_seq       INTEGER,
    verify_state     TEXT    NOT NULL DEFAULT 'unverified'
                     CHECK (verify_state IN ('unverified', 'ok', 'failed')),
    verified_us      INTEGER,
    verify_detail    TEXT,
    wiped            INTEGER NOT NULL DEFAULT 0,
    wiped_us         INTEGER,
    purged_us        INTEGER,
    source_changed   TEXT  -- JSON: how the source changed while it was copied, else NULL
);
CREATE INDEX IF NOT EXISTS evidence_source
    ON evidence_files (recorder_serial, source_name, size);
CREATE INDEX IF NOT EXISTS evidence_unit ON evidence_files (unit_no, rec_date);
CREATE INDEX IF NOT EXISTS evidence_officer ON evidence_files (officer_no, rec_date);
CREATE INDEX IF NOT EXISTS evidence_date ON evidence_files (rec_date);
CREATE INDEX IF NOT EXISTS evidence_hash ON evidence_files (blake3);
CREATE INDEX IF NOT EXISTS evidence_session ON evidence_files (session_id);
CREATE TRIGGER IF NOT EXISTS evidence_no_delete BEFORE DELETE ON evidence_files
BEGIN SELECT RAISE(ABORT, 'evidence records are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS evidence_immutable BEFORE UPDATE OF
    recorder_serial, session_id, bay, source_name, stored_relpath, size, blake3,
    rec_start_us, rec_end_us, rec_date, offload_start_us, offload_end_us, unit_no,
    officer_no, officer_name, late, late_by_s, deadline_us, source_changed ON evidence_files
BEGIN SELECT RAISE(ABORT, 'evidence records are immutable'); END;
CREATE TRIGGER IF NOT EXISTS evidence_seq_once BEFORE UPDATE OF ledger_seq ON evidence_files
WHEN OLD.ledger_seq IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'evidence ledger_seq is set once'); END;
CREATE TABLE IF NOT EXISTS evidence_holds (
    id             INTEGER PRIMARY KEY,
    file_id        INTEGER NOT NULL REFERENCES evidence_files (id),
    reason         TEXT    NOT NULL,
    set_by         TEXT,
    set_us         INTEGER NOT NULL,
    set_seq        INTEGER NOT NULL,
    cleared_us     INTEGER,
    cleared_by     TEXT,
    cleared_reason TEXT,
    cleared_seq    INTEGER
);
CREATE INDEX IF NOT EXISTS evidence_holds_file ON evidence_holds (file_id);
"""

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredFileRecord:
    """What the offloader knows about one durably written file."""

    recorder_serial: str
    session_id: str
    bay: str | None
    source_name: bytes  # exact name bytes on the recorder (path below the footage root)
    stored_relpath: str  # from `layout_relpath`, relative to the store root
    size: int
    blake3_hex: str
    rec_start_us: int | None
    rec_end_us: int | None  # None if unknown
    offload_start_us: int
    offload_end_us: int
    unit_no: str
    officer_no: str
    officer_name: str
    late: bool
    late_by_s: float
    deadline_us: int | None
    rec_day: dt.date | None = None  # the layout date; default: the relpath's date component
    # The source's size or mtime differed between the start and end of the copy: what was
    # stored is what was read, but it is flagged and never wiped from the recorder.
    source_changed: Mapping[str, object] | None = None
    # Recorder-supplied times that were out of range and not used, as received (raw
    # facts: field, decimal text, reason); kept in the "offloaded" ledger entry.
    rejected_times: Sequence[Mapping[str, object]] | None = None


@dataclass(frozen=True)
class Hold:
    id: int
    file_id: int
    reason: str
    set_by: str | None
    set_us: int
    set_seq: int
    cleared_us: int | None
    cleared_by: str | None
    cleared_reason: str | None
    cleared_seq: int | None

    @property
    def active(self) -> bool:
        return self.cleared_us is None


@dataclass(frozen=True)
class StoredFile:
    """One row of the evidence index."""

    id: int
    recorder_serial: str
    session_id: str
    bay: str | None
    source_name: bytes
    source_display: str
    stored_relpath: str
    size: int
    blake3_hex: str
    rec_start_us: int | None
    rec_end_us: int | None
    rec_day: dt.date
    offload_start_us: int
    offload_end_us: int
    unit_no: str
    officer_no: str
    officer_name: str
    late: bool
    late_by_s: float
    deadline_us: int | None
    ledger_seq: int | None
    verify_state: VerifyState
    verified_us: int | None
    verify_detail: str | None
    wiped: bool
    wiped_us: int | None
    purged_us: int | None
    holds: tuple[Hold, ...] = ()
    source_changed: Mapping[str, object] | None = None

    @property
    def on_hold(self) -> bool:
        return any(h.active for h in self.holds)


def _json_or_none(text: str | None) -> Mapping[str, object] | None:
    return None if text is None else dict(json.loads(text))


FILES = Table("evidence_files", StoredFile, (
    "id", "recorder_serial", "session_id", "bay", Column("source_name", decode=bytes),
    "source_display", "stored_relpath", "size", Column("blake3", "blake3_hex"),
    "rec_start_us", "rec_end_us", Column("rec_date", "rec_day", dt.date.fromisoformat),
    "offload_start_us", "offload_end_us", "unit_no", "officer_no", "officer_name",
    Column("late", decode=bool), "late_by_s", "deadline_us", "ledger_seq", "verify_state",
    "verified_us", "verify_detail", Column("wiped", decode=bool), "wiped_us", "purged_us",
    Column("source_changed", decode=_json_or_none)))
HOLDS = Table("evidence_holds", Hold, (
    "id", "file_id", "reason", "set_by", "set_us", "set_seq", "cleared_us", "cleared_by",
    "cleared_reason", "cleared_seq"))


def display_name(raw: bytes) -> str:
    """A printable form of a recorder file name: invalid UTF-8 bytes shown as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def file_fields(f: StoredFile | StoredFileRecord) -> dict[str, object]:
    """The custody facts of a stored file, as recorded in its "offloaded" ledger entry."""
    rec_day = f.rec_day
    out: dict[str, object] = {
        "source_name": display_name(f.source_name),
        "source_name_hex": f.source_name.hex(),
        "stored_relpath": f.stored_relpath,
        "size": f.size,
        "blake3": f.blake3_hex,
        "rec_start_us": f.rec_start_us,
        "rec_end_us": f.rec_end_us,
        "rec_start": None if f.rec_start_us is None else iso_utc(f.rec_start_us),
        "rec_end": None if f.rec_end_us is None else iso_utc(f.rec_end_us),
        "rec_date": None if rec_day is None else rec_day.isoformat(),
        "offload_start_us": f.offload_start_us,
        "offload_end_us": f.offload_end_us,
        "unit_no": f.unit_no,
        "officer_no": f.officer_no,
        "officer_name": f.officer_name,
        "late": bool(f.late),
        "late_by_s": float(f.late_by_s),
        "deadline_us": f.deadline_us,
    }
    if f.source_changed is not None:
        out["source_changed"] = dict(f.source_changed)
    if isinstance(f, StoredFileRecord) and f.rejected_times:
        out["rejected_times"] = [dict(r) for r in f.rejected_times]
    return out


def _rec_day(rec: StoredFileRecord) -> dt.date:
    if rec.rec_day is not None:
        return rec.rec_day
    parts = rec.stored_relpath.split("/")
    if len(parts) == 5:
        try:
            return dt.date.fromisoformat(parts[3])
        except ValueError:
            pass
    when = rec.rec_start_us if rec.rec_start_us is not None else rec.offload_start_us
    return recording_day(when, "UTC")


def _validate(rec: StoredFileRecord) -> None:
    if not rec.recorder_serial:
        raise EvidenceError("a stored file needs the recorder serial")
    if not rec.session_id:
        raise EvidenceError("a stored file needs the docking session id")
    if not isinstance(rec.source_name, bytes) or not rec.source_name:
        raise EvidenceError("source_name must be the non-empty original name as bytes")
    if rec.size < 0:
        raise EvidenceError(f"negative size {rec.size}")
    if not _HEX64.fullmatch(rec.blake3_hex):
        raise EvidenceError(f"blake3_hex {rec.blake3_hex!r} is not 64 lowercase hex digits")
    try:
        check_relpath(rec.stored_relpath)
    except LayoutError as exc:
        raise EvidenceError(str(exc)) from exc


def commit_file(conn: sqlite3.Connection, ledger: Ledger, rec: StoredFileRecord, *,
                now_us: int | None = None) -> LedgerEntry:
    """Index row + "offloaded" ledger entry + outbox event, in the caller's transaction.

    Call only after the file is durably in place (fsynced, renamed, directory fsynced).
    """
    _validate(rec)
    clash = FILES.first(conn, Where().eq("stored_relpath", rec.stored_relpath))
    if clash is not None:
        raise EvidenceError(f"{rec.stored_relpath!r} is already indexed (file {clash.id})")
    day = _rec_day(rec)
    file_id = FILES.insert(conn, {
        "recorder_serial": rec.recorder_serial, "session_id": rec.session_id, "bay": rec.bay,
        "source_name": rec.source_name, "source_display": display_name(rec.source_name),
        "stored_relpath": rec.stored_relpath, "size": rec.size, "blake3": rec.blake3_hex,
        "rec_start_us": rec.rec_start_us, "rec_end_us": rec.rec_end_us,
        "rec_date": day.isoformat(), "offload_start_us": rec.offload_start_us,
        "offload_end_us": rec.offload_end_us, "unit_no": rec.unit_no,
        "officer_no": rec.officer_no, "officer_name": rec.officer_name,
        "late": int(rec.late), "late_by_s": float(rec.late_by_s),
        "deadline_us": rec.deadline_us,
        "source_changed": None if rec.source_changed is None
        else json.dumps(dict(rec.source_changed), sort_keys=True),
    })
    data = {"file_id": file_id, **file_fields(rec), "rec_date": day.isoformat()}
    entry = ledger.append(conn, EntryKind.OFFLOADED, recorder=rec.recorder_serial,
                          officer=rec.officer_no, bay=rec.bay, session_id=rec.session_id,
                          data=data, now_us=now_us)
    conn.execute("UPDATE evidence_files SET ledger_seq = ? WHERE id = ?", (entry.seq, file_id))
    return entry


def find_stored(conn: sqlite3.Connection, recorder_serial: str, source_name: bytes, size: int,
                *, rec_start_us: int | None = None) -> StoredFile | None:
    """The stored copy of a recorder file, if any ("never copied twice").

    Files this dock wiped from the recorder are not matched: a file of the same name and
    size seen afterwards is a new recording. Give `rec_start_us` to match it too.
    """
    where = (Where().eq("recorder_serial", recorder_serial).eq("source_name", source_name)
             .eq("size", size).eq("wiped", 0).eq_given(rec_start_us=rec_start_us))
    return _with_holds(conn, FILES.first(conn, where, order="id", desc=True))


def stored_versions(conn: sqlite3.Connection, recorder_serial: str,
                    source_name: bytes) -> list[StoredFile]:
    """Every stored copy of a recorder file name (wiped or not), newest first: the
    offloader compares what the recorder holds now with their hashes."""
    where = Where().eq("recorder_serial", recorder_serial).eq("source_name", source_name)
    return [_holding(conn, f) for f in FILES.select(conn, where, order="id", desc=True)]


def get_file(conn: sqlite3.Connection, file_id: int) -> StoredFile | None:
    return _with_holds(conn, FILES.first(conn, Where().eq("id", file_id)))


def _require(conn: sqlite3.Connection, file_id: int) -> StoredFile:
    f = get_file(conn, file_id)
    if f is None:
        raise EvidenceError(f"no stored file with id {file_id}")
    return f


def _file_entry(conn: sqlite3.Connection, ledger: Ledger, kind: str, f: StoredFile,
                data: dict[str, object], now_us: int | None) -> LedgerEntry:
    return ledger.append(
        conn, kind, recorder=f.recorder_serial, officer=f.officer_no, bay=f.bay,
        session_id=f.session_id, now_us=now_us,
        data={"file_id": f.id, "stored_relpath": f.stored_relpath, "blake3": f.blake3_hex,
              **data},
    )


def mark_verified(conn: sqlite3.Connection, ledger: Ledger, file_id: int, ok: bool,
                  detail: str, *, now_us: int | None = None) -> LedgerEntry:
    """Record the result of re-reading a stored file against its hash."""
    f = _require(conn, file_id)
    entry = _file_entry(conn, ledger, EntryKind.VERIFIED, f, {"ok": ok, "detail": detail},
                        now_us)
    conn.execute("UPDATE evidence_files SET verify_state = ?, verified_us = ?,"
                 " verify_detail = ? WHERE id = ?",
                 ("ok" if ok else "failed", entry.time_us, detail, file_id))
    return entry


def mark_wiped(conn: sqlite3.Connection, ledger: Ledger, file_id: int, *,
               now_us: int | None = None,
               detail: Mapping[str, object] | None = None) -> LedgerEntry:
    """Record that the recorder's copy of a stored file was deleted.

    `detail` adds facts to the ledger entry (how the deletion is known, for instance).
    """
    f = _require(conn, file_id)
    if f.wiped:
        raise EvidenceError(f"file {file_id} is already recorded as wiped")
    data: dict[str, object] = {"source_name": f.source_display, "verify_state": f.verify_state}
    if detail:
        data.update(detail)
    entry = _file_entry(conn, ledger, EntryKind.WIPED, f, data, now_us)
    conn.execute("UPDATE evidence_files SET wiped = 1, wiped_us = ? WHERE id = ?",
                 (entry.time_us, file_id))
    return entry


def set_hold(conn: sqlite3.Connection, ledger: Ledger, file_id: int, reason: str, *,
             by: str | None = None, now_us: int | None = None) -> Hold:
    """Protect a file from purge (evidence, dispute: regulations 004 §15, 000 §16)."""
    if not reason:
        raise EvidenceError("a hold needs a reason")
    f = _require(conn, file_id)
    entry = _file_entry(conn, ledger, EntryKind.HOLD_SET, f, {"reason": reason, "by": by},
                        now_us)
    cur = conn.execute("INSERT INTO evidence_holds (file_id, reason, set_by, set_us, set_seq)"
                       " VALUES (?, ?, ?, ?, ?)", (file_id, reason, by, entry.time_us, entry.seq))
    assert cur.lastrowid is not None
    return Hold(cur.lastrowid, file_id, reason, by, entry.time_us, entry.seq, None, None, None,
                None)


def clear_hold(conn: sqlite3.Connection, ledger: Ledger, hold_id: int, reason: str, *,
               by: str | None = None, now_us: int | None = None) -> Hold:
    hold = HOLDS.first(conn, Where().eq("id", hold_id))
    if hold is None:
        raise EvidenceError(f"no hold with id {hold_id}")
    if not hold.active:
        raise EvidenceError(f"hold {hold_id} is already cleared")
    f = _require(conn, hold.file_id)
    entry = _file_entry(conn, ledger, EntryKind.HOLD_CLEARED, f,
                        {"hold_id": hold_id, "reason": reason, "by": by}, now_us)
    conn.execute("UPDATE evidence_holds SET cleared_us = ?, cleared_by = ?, cleared_reason = ?,"
                 " cleared_seq = ? WHERE id = ?", (entry.time_us, by, reason, entry.seq, hold_id))
    return Hold(hold.id, hold.file_id, hold.reason, hold.set_by, hold.set_us, hold.set_seq,
                entry.time_us, by, reason, entry.seq)


def mark_purged(conn: sqlite3.Connection, ledger: Ledger, file_id: int, reason: str, *,
                now_us: int | None = None,
                detail: Mapping[str, object] | None = None) -> LedgerEntry:
    """Record that a stored file was removed from the dock under retention policy.

    Refused while any hold is active. The row stays; only the file leaves the store.
    `detail` adds facts to the ledger entry (the central acknowledgement, for instance).
    """
    f = _require(conn, file_id)
    if f.on_hold:
        raise EvidenceError(f"file {file_id} is under hold and cannot be purged")
    if f.purged_us is not None:
        raise EvidenceError(f"file {file_id} is already purged")
    entry = _file_entry(conn, ledger, EntryKind.PURGED, f, {**(detail or {}), "reason": reason},
                        now_us)
    conn.execute("UPDATE evidence_files SET purged_us = ? WHERE id = ?", (entry.time_us, file_id))
    return entry


def query(
    conn: sqlite3.Connection,
    *,
    unit: str | None = None,
    device: str | None = None,
    officer: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    blake3_hex: str | None = None,
    session_id: str | None = None,
    include_purged: bool = True,
) -> list[StoredFile]:
    """Stored files matching every given filter; the date range is inclusive, unit-local."""
    where = (Where().eq_given(unit_no=unit, recorder_serial=device, officer_no=officer,
                              blake3=blake3_hex, session_id=session_id)
             .at_least("rec_date", None if date_from is None else date_from.isoformat())
             .at_most("rec_date", None if date_to is None else date_to.isoformat()))
    if not include_purged:
        where.null("purged_us")
    return [_holding(conn, f) for f in FILES.select(conn, where, order="id")]


def holds(conn: sqlite3.Connection, file_id: int) -> tuple[Hold, ...]:
    return tuple(HOLDS.select(conn, Where().eq("file_id", file_id), order="id"))


def _holding(conn: sqlite3.Connection, f: StoredFile) -> StoredFile:
    return replace(f, holds=holds(conn, f.id))


def _with_holds(conn: sqlite3.Connection, f: StoredFile | None) -> StoredFile | None:
    return None if f is None else _holding(conn, f)


__all__ = [
    "PARTIAL_PREFIX",
    "SCHEMA",
    "Hold",
    "StoredFile",
    "StoredFileRecord",
    "clear_hold",
    "commit_file",
    "current_us",
    "display_name",
    "file_fields",
    "find_stored",
    "get_file",
    "holds",
    "layout_relpath",
    "mark_purged",
    "mark_verified",
    "mark_wiped",
    "partial_name",
    "query",
    "recording_day",
    "set_hold",
    "stored_versions",
]
