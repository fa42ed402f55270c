"""The recorder's own event log, read at docking, as the work record of the field.

Rules 000 §12 and 004 §11 ask for a record whenever a recorder could not be used. The dock
sees only what happens in its bays; the recorder logs what happened on the street (battery
ran low, storage full, storage or hardware fault, failed authentication). At each docking
the session reads the entries it has not read before and each such entry becomes a fault
record of its own (opened when it happened, closed at once: it is over), naming the
officer who held the recorder then.

Pure planning here (`plan`), one transaction in `record`: the fault records and the new
cursor commit together, so an entry is recorded exactly once.

Times: entries carry the recorder's clock, a claim. They are corrected by the drift the
dock measured at this docking before setting the clock (`device - dock`), and the device
time is kept beside the corrected one. A zero time, or one in the future, is kept as
`time_known: false` and the record is dated at the reading. Entries logged while the
recorder sat in this dock (inside one of its docking periods) are the dock's own
observations, already recorded by the session: they only move the cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from agent.store import faults, recorder_history
from agent.store.faults import FaultCode, Severity
from agent.store.ledger import Ledger, iso_utc
from agent.store.recorder_history import EventCursor
from firmware_bridge.messages import DeviceLogEvent, LogKind

MARGIN_US = 2_000_000  # clock measurement and logging granularity
MAX_RECORDS = 50  # individual records per docking; beyond, one summary record per code

_FAULTS: dict[int, tuple[FaultCode, Severity, str]] = {
    LogKind.LOW_BATTERY: (FaultCode.BATTERY_LOW, "warning", "battery ran low in the field"),
    LogKind.STORAGE_FULL: (FaultCode.STORAGE_LOW, "error",
                           "storage full in the field: the recorder could not record"),
    LogKind.STORAGE_FAULT: (FaultCode.STORAGE_ERROR, "error",
                            "storage fault logged by the recorder"),
    LogKind.HARDWARE_FAULT: (FaultCode.HARDWARE_FAULT, "error",
                             "hardware fault logged by the recorder"),
    LogKind.AUTH_FAILURE: (FaultCode.AUTH_REFUSED, "warning",
                           "failed authentication logged by the recorder"),
}


@dataclass(frozen=True)
class FieldFault:
    index: int
    code: FaultCode
    severity: Severity
    reason: str
    officer: str | None
    occurred_us: int
    detail: dict[str, object]


@dataclass(frozen=True)
class FieldPlan:
    faults: list[FieldFault]
    cursor: EventCursor  # where the next reading starts
    skipped_at_dock: int


def entry_mark(e: DeviceLogEvent) -> str:
    """What the cursor remembers of the last entry read, to check continuity next time."""
    return f"{e.time_ms}:{int(e.kind)}"


def continues(cursor: EventCursor | None, events: Sequence[DeviceLogEvent]) -> bool:
    """Does a reading from `cursor.next_index - 1` start with the entry read last time?

    Indices are never reused, so a different (or missing) entry there means the log was
    reset or replaced: its entries must be read again from the start."""
    if cursor is None or cursor.next_index == 0 or cursor.last_entry is None:
        return True
    return bool(events) and events[0].index == cursor.next_index - 1 \
        and entry_mark(events[0]) == cursor.last_entry


def _at_dock(t_us: int, periods: Sequence[tuple[int, int | None]]) -> bool:
    return any(start - MARGIN_US <= t_us <= (end if end is not None else t_us) + MARGIN_US
               for start, end in periods)


def plan(events: Sequence[DeviceLogEvent], *, cursor: EventCursor | None,
         current_officer: str | None, drift_ms: float | None, now_us: int,
         docked_periods: Sequence[tuple[int, int | None]]) -> FieldPlan:
    """Which entries become fault records, with whom and when; and the new cursor."""
    start = 0 if cursor is None else cursor.next_index
    fresh = [e for e in events if e.index >= start]
    assigned = [e for e in fresh if e.kind == LogKind.OFFICER_ASSIGNED]
    # Never read before: with no assignment in the log, the officer on the recorder now
    # held it throughout; before the first logged assignment, nobody knows.
    officer = cursor.officer if cursor is not None else (None if assigned else current_officer)
    drift_us = int((drift_ms or 0) * 1000)
    out: list[FieldFault] = []
    skipped = 0
    for e in fresh:
        if e.kind == LogKind.OFFICER_ASSIGNED:
            officer = e.detail.strip() or None
            continue
        mapped = _FAULTS.get(e.kind)
        if mapped is None:
            continue
        occurred = e.time_ms * 1000 - drift_us
        known = e.time_ms > 0 and 0 < occurred <= now_us + MARGIN_US
        if known and _at_dock(occurred, docked_periods):
            skipped += 1
            continue
        code, severity, text = mapped
        reason = f"{text}: {e.detail}" if e.detail else text
        detail: dict[str, object] = {
            "source": "recorder_event_log", "event_index": e.index, "event_kind": int(e.kind),
            "event_detail": e.detail, "device_time_ms": e.time_ms, "time_known": known,
            "clock_drift_ms": drift_ms, "occurred_at": iso_utc(occurred) if known else None,
            "officer_known": officer is not None,
        }
        out.append(FieldFault(e.index, code, severity, reason, officer,
                              occurred if known else now_us, detail))
    out = _bounded(out)
    if fresh:
        new = EventCursor(fresh[-1].index + 1, officer, entry_mark(fresh[-1]))
    else:
        new = EventCursor(start, officer, None if cursor is None else cursor.last_entry)
    return FieldPlan(out, new, skipped)


def _bounded(faults_: list[FieldFault]) -> list[FieldFault]:
    """A recorder that logs thousands of fault entries (broken, or hostile) must not flood
    the custody ledger: the first MAX_RECORDS are kept one by one, the rest summarised."""
    if len(faults_) <= MAX_RECORDS:
        return faults_
    rest: dict[FaultCode, list[FieldFault]] = {}
    for f in faults_[MAX_RECORDS:]:
        rest.setdefault(f.code, []).append(f)
    out = faults_[:MAX_RECORDS]
    for code, group in rest.items():
        last = group[-1]
        out.append(FieldFault(
            last.index, code, last.severity,
            f"{len(group)} more {code.value} entries in the recorder's event log"
            f" (indices {group[0].index}-{last.index})", last.officer, last.occurred_us,
            {**last.detail, "summarised": len(group), "first_index": group[0].index,
             "first_occurred_at": group[0].detail.get("occurred_at")}))
    return out


def record(conn: sqlite3.Connection, ledger: Ledger, p: FieldPlan, *, serial: str, bay: str,
           session_id: str, now_us: int) -> list[faults.Fault]:
    """The fault records and the moved cursor, in the caller's transaction."""
    done = [faults.record_past_fault(
        conn, ledger, f.code, f.reason, occurred_us=f.occurred_us,
        cleared_reason="past event from the recorder's log", recorder=serial,
        officer=f.officer, bay=bay, session_id=session_id, severity=f.severity,
        detail=f.detail, now_us=now_us) for f in p.faults]
    recorder_history.set_event_cursor(conn, serial, p.cursor, time_us=now_us)
    return done


def docked_periods(conn: sqlite3.Connection, serial: str, *, exclude_session: str,
                   limit: int = 200) -> list[tuple[int, int | None]]:
    """Earlier docking periods of this recorder at this dock, from the ledger (newest
    `limit`): first to last entry of each session (a session cut short by a crash has no
    `undocked` entry; its last entry is the last moment the dock knew it was there)."""
    rows = conn.execute(
        "SELECT MIN(time_us), MAX(time_us) FROM ledger WHERE recorder = ?"
        " AND session_id IS NOT NULL AND session_id != ? GROUP BY session_id"
        " ORDER BY MAX(seq) DESC LIMIT ?", (serial, exclude_session, limit)).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]
