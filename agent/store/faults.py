"""The fault register: every reason a recorder or the dock could not be used.

Regulations 000 §12 and 004 §11 require a written work record whenever a recorder could
not be used; these rows (and their ledger entries) are its basis. Each fault is raised
with a ledger entry of kind "fault" (outbox stream "fault") in the caller's transaction,
and cleared with a "fault_cleared" entry; cleared faults stay in the register.

De-duplication: while a fault with the same code is OPEN for the same recorder (or for
the dock itself, recorder None), raising it again does not add a register row. If the
repeat comes from the same docking session (or has no session, e.g. a periodic dock
health check) only the row's `repeat_count`/`last_seen_us` change, so a condition checked
every minute does not flood the ledger. A repeat from a different docking session is a
new occurrence for the work record: it gets its own "fault" ledger entry (with
`"repeated": true` and the existing `fault_id`) and bumps the counter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from agent.store.canonical import canonical_text, loads
from agent.store.errors import CanonicalError
from agent.store.ledger import EntryKind, Ledger, current_us
from agent.store.table import Column, Table, Where

Severity = Literal["warning", "error"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS faults (
    id             INTEGER PRIMARY KEY,
    code           TEXT    NOT NULL,
    severity       TEXT    NOT NULL CHECK (severity IN ('warning', 'error')),
    recorder       TEXT,
    officer        TEXT,
    bay            TEXT,
    session_id     TEXT,
    reason         TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    opened_us      INTEGER NOT NULL,
    ledger_seq     INTEGER NOT NULL,
    last_seen_us   INTEGER NOT NULL,
    repeat_count   INTEGER NOT NULL DEFAULT 0,
    cleared_us     INTEGER,
    cleared_reason TEXT,
    cleared_seq    INTEGER
);
CREATE INDEX IF NOT EXISTS faults_open ON faults (recorder, code) WHERE cleared_us IS NULL;
CREATE INDEX IF NOT EXISTS faults_recorder ON faults (recorder, opened_us);
CREATE INDEX IF NOT EXISTS faults_opened ON faults (opened_us);
CREATE TRIGGER IF NOT EXISTS faults_no_delete BEFORE DELETE ON faults
BEGIN SELECT RAISE(ABORT, 'faults are never deleted'); END;
"""


class FaultCode(StrEnum):
    """Stable snake_case codes; they appear in MQTT payloads and work records."""

    AUTH_REFUSED = "auth_refused"
    PROTOCOL_ERROR = "protocol_error"
    TIMEOUT = "timeout"
    CLOCK_NOT_SET = "clock_not_set"
    DOCK_CLOCK_UNSYNCHRONISED = "dock_clock_unsynchronised"
    BATTERY_FAILED = "battery_failed"
    BATTERY_LOW = "battery_low"
    STORAGE_ERROR = "storage_error"
    STORAGE_NOT_FOUND = "storage_not_found"
    STORAGE_LOW = "storage_low"
    MOUNT_FAILED = "mount_failed"
    DOCK_STORAGE_FULL = "dock_storage_full"
    OFFLOAD_FAILED = "offload_failed"
    READ_ERROR = "read_error"
    FILE_CHANGED = "file_changed"
    RECORDING_TIME_INVALID = "recording_time_invalid"
    HOSTILE_CONTENT = "hostile_content"
    VERIFY_FAILED = "verify_failed"
    WIPE_FAILED = "wipe_failed"
    DEVICE_REJECTED = "device_rejected"
    FIRMWARE_NOT_ALLOWED = "firmware_not_allowed"
    OFFICER_UNASSIGNED = "officer_unassigned"
    OVERDUE = "overdue"
    LATE_OFFLOAD = "late_offload"
    LEDGER_INTEGRITY = "ledger_integrity"
    STORE_INTEGRITY = "store_integrity"
    HEALTH = "health"
    SERIAL_MISMATCH = "serial_mismatch"  # firmware serial differs from the USB serial
    OFFICER_MISMATCH = "officer_mismatch"  # file names carry another officer than the record
    HARDWARE_FAULT = "hardware_fault"
    UPLOAD_FAILED = "upload_failed"
    UPLOAD_CONFLICT = "upload_conflict"
    CENTRAL_COPY_MISMATCH = "central_copy_mismatch"
    EXPORT_FAILED = "export_failed"  # an export target failed (unplugged, full, read-only)
    FIRMWARE_UPDATE_FAILED = "firmware_update_failed"  # a firmware update did not complete
    FIRMWARE_ROLLED_BACK = "firmware_rolled_back"  # the new image failed; previous slot runs


@dataclass(frozen=True)
class Fault:
    id: int
    code: str  # a FaultCode value (kept as str so unknown codes from newer agents load)
    severity: Severity
    recorder: str | None
    officer: str | None
    bay: str | None
    session_id: str | None
    reason: str
    detail: Mapping[str, Any]
    opened_us: int
    cleared_us: int | None
    cleared_reason: str | None
    ledger_seq: int
    last_seen_us: int = 0
    repeat_count: int = 0
    cleared_seq: int | None = None

    @property
    def open(self) -> bool:
        return self.cleared_us is None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "code": self.code, "severity": self.severity,
            "recorder": self.recorder, "officer": self.officer, "bay": self.bay,
            "session_id": self.session_id, "reason": self.reason, "detail": dict(self.detail),
            "opened_us": self.opened_us, "cleared_us": self.cleared_us,
            "cleared_reason": self.cleared_reason, "ledger_seq": self.ledger_seq,
            "last_seen_us": self.last_seen_us, "repeat_count": self.repeat_count,
        }


def _detail(text: str) -> Mapping[str, Any]:
    detail = loads(text)
    return detail if isinstance(detail, dict) else {}


FAULTS = Table("faults", Fault, (
    "id", "code", "severity", "recorder", "officer", "bay", "session_id", "reason",
    Column("detail", decode=_detail), "opened_us", "cleared_us", "cleared_reason",
    "ledger_seq", "last_seen_us", "repeat_count", "cleared_seq"))


def _get(conn: sqlite3.Connection, fault_id: int) -> Fault | None:
    return FAULTS.first(conn, Where().eq("id", fault_id))


def _open_for(conn: sqlite3.Connection, recorder: str | None, code: str) -> Fault | None:
    where = Where().is_("recorder", recorder).eq("code", code).null("cleared_us")
    return FAULTS.first(conn, where, order="id")


def raise_fault(
    conn: sqlite3.Connection,
    ledger: Ledger,
    code: FaultCode | str,
    reason: str,
    *,
    recorder: str | None = None,
    officer: str | None = None,
    bay: str | None = None,
    session_id: str | None = None,
    severity: Severity = "error",
    detail: Mapping[str, object] | None = None,
    now_us: int | None = None,
) -> Fault:
    """Register a fault (or a repeat of an open one; see the module docstring)."""
    code, detail_obj = _checked(code, severity, reason, detail)
    recorder, officer, bay, session_id = (v or None for v in (recorder, officer, bay,
                                                               session_id))
    t = current_us() if now_us is None else int(now_us)
    existing = _open_for(conn, recorder, code)
    if existing is not None:
        if session_id != existing.session_id:
            ledger.append(conn, EntryKind.FAULT, recorder=recorder, officer=officer, bay=bay,
                          session_id=session_id, now_us=t,
                          data={"fault_id": existing.id, "code": code, "severity": severity,
                                "reason": reason, "detail": detail_obj, "repeated": True})
        conn.execute("UPDATE faults SET repeat_count = repeat_count + 1, last_seen_us = ?"
                     " WHERE id = ?", (t, existing.id))
        refreshed = _get(conn, existing.id)
        assert refreshed is not None
        return refreshed
    fault_id = _new_fault(conn, ledger, code, severity, reason, detail_obj, now_us=t,
                          opened_us=None, who=(recorder, officer, bay, session_id))
    fault = _get(conn, fault_id)
    assert fault is not None
    return fault


def record_past_fault(
    conn: sqlite3.Connection,
    ledger: Ledger,
    code: FaultCode | str,
    reason: str,
    *,
    occurred_us: int,
    cleared_reason: str,
    recorder: str | None = None,
    officer: str | None = None,
    bay: str | None = None,
    session_id: str | None = None,
    severity: Severity = "warning",
    detail: Mapping[str, object] | None = None,
    now_us: int | None = None,
) -> Fault:
    """Record a fault that already happened and is over (a recorder's field event, a
    deadline missed): its own register row opened at `occurred_us`, with its "fault" and
    "fault_cleared" ledger entries, never merged with an open fault of the same code."""
    code, detail_obj = _checked(code, severity, reason, detail)
    who = tuple(v or None for v in (recorder, officer, bay, session_id))
    t = current_us() if now_us is None else int(now_us)
    fault_id = _new_fault(conn, ledger, code, severity, reason, detail_obj, now_us=t,
                          opened_us=int(occurred_us), who=who)
    done = clear_fault(conn, ledger, fault_id, cleared_reason, now_us=t)
    assert done is not None
    return done


def _checked(code: FaultCode | str, severity: str, reason: str,
             detail: Mapping[str, object] | None) -> tuple[str, dict[str, Any]]:
    """The code's value and the detail as canonical JSON data; bad arguments raise."""
    value = FaultCode(code).value  # unknown codes are a programming error: ValueError
    if severity not in ("warning", "error"):
        raise ValueError(f"severity must be 'warning' or 'error', not {severity!r}")
    if not reason:
        raise ValueError("a fault needs a human-readable reason")
    try:
        detail_text = canonical_text(dict(detail or {}))
    except CanonicalError as exc:
        # The fault itself must still be recorded: keep a printable form of the detail.
        detail_text = canonical_text({"unencodable_detail": repr(detail), "error": str(exc)})
    detail_obj = loads(detail_text)
    assert isinstance(detail_obj, dict)
    return value, detail_obj


def _new_fault(conn: sqlite3.Connection, ledger: Ledger, code: str, severity: str,
               reason: str, detail: dict[str, Any], *, now_us: int, opened_us: int | None,
               who: tuple[str | None, ...]) -> int:
    """A new register row and its "fault" ledger entry; opened now unless `opened_us`."""
    recorder, officer, bay, session_id = who
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM faults").fetchone()[0]
    entry = ledger.append(conn, EntryKind.FAULT, recorder=recorder, officer=officer, bay=bay,
                          session_id=session_id, now_us=now_us,
                          data={"fault_id": next_id, "code": code, "severity": severity,
                                "reason": reason, "detail": detail, "repeated": False})
    opened = entry.time_us if opened_us is None else opened_us
    FAULTS.insert(conn, {
        "id": next_id, "code": code, "severity": severity, "recorder": recorder,
        "officer": officer, "bay": bay, "session_id": session_id, "reason": reason,
        "detail": canonical_text(detail), "opened_us": opened, "ledger_seq": entry.seq,
        "last_seen_us": opened, "repeat_count": 0})
    return int(next_id)


def clear_fault(conn: sqlite3.Connection, ledger: Ledger, fault_id: int, reason: str, *,
                now_us: int | None = None) -> Fault | None:
    """Clear an open fault; None if there is no such fault or it is already cleared."""
    fault = _get(conn, fault_id)
    if fault is None or not fault.open:
        return None
    entry = ledger.append(conn, EntryKind.FAULT_CLEARED, recorder=fault.recorder,
                          officer=fault.officer, bay=fault.bay, session_id=fault.session_id,
                          now_us=now_us,
                          data={"fault_id": fault.id, "code": fault.code, "reason": reason})
    conn.execute("UPDATE faults SET cleared_us = ?, cleared_reason = ?, cleared_seq = ?"
                 " WHERE id = ?", (entry.time_us, reason, entry.seq, fault.id))
    return _get(conn, fault.id)


def clear_faults(conn: sqlite3.Connection, ledger: Ledger, *, recorder: str | None,
                 codes: Iterable[FaultCode | str] | None, reason: str,
                 now_us: int | None = None) -> list[Fault]:
    """Clear every open fault of a recorder (None: the dock's own), optionally by code."""
    wanted = None if codes is None else {FaultCode(c).value for c in codes}
    cleared: list[Fault] = []
    for fault in open_faults(conn, recorder=recorder, dock_only=recorder is None):
        if wanted is None or fault.code in wanted:
            done = clear_fault(conn, ledger, fault.id, reason, now_us=now_us)
            if done is not None:
                cleared.append(done)
    return cleared


def open_faults(conn: sqlite3.Connection, *, recorder: str | None = None,
                dock_only: bool = False) -> list[Fault]:
    """Open faults, oldest first; of one recorder, of the dock itself, or all."""
    where = Where().null("cleared_us")
    if dock_only:
        where.null("recorder")
    else:
        where.eq_given(recorder=recorder)
    return FAULTS.select(conn, where, order="id")


def list_faults(
    conn: sqlite3.Connection,
    *,
    recorder: str | None = None,
    officer: str | None = None,
    bay: str | None = None,
    code: FaultCode | str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    include_cleared: bool = True,
) -> list[Fault]:
    """Faults matching every filter, oldest first; `since_us` inclusive, `until_us` not."""
    where = (Where().eq_given(recorder=recorder, officer=officer, bay=bay,
                              code=None if code is None else str(code))
             .at_least("opened_us", since_us).below("opened_us", until_us))
    if not include_cleared:
        where.null("cleared_us")
    return FAULTS.select(conn, where, order="id")


__all__ = ["SCHEMA", "Fault", "FaultCode", "Severity", "clear_fault", "clear_faults",
           "list_faults", "open_faults", "raise_fault", "record_past_fault"]
