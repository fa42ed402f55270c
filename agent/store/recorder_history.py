"""Per-recorder history kept across dockings: battery samples and the event-log cursor.

Battery samples (charge, voltage, temperature, cycles, health) outlive the docking that
read them, so a recorder that comes back finds its charge rate already known (the CHARGING
ETA needs no fresh samples) and a supervisor can follow a failing pack's health across
months (`dockctl battery`). To spare the SD card a sample is stored only when something
changed or `KEEP_EVERY_US` passed since the last stored one; retention is bounded per
recorder, by count (`MAX_SAMPLES`) and age (`MAX_AGE_US`, past the yearly review).

The event-log cursor is the index of the next device event-log entry to read; it moves in
the same transaction as the fault records made from the entries, so each entry is turned
into a record exactly once however often the recorder docks (or the agent is killed).
`officer` is the officer in effect at the cursor: who held the recorder when the next
entries were logged, unless the log itself records a new assignment. `last_entry` is a
fingerprint (`time_ms:kind`) of the last entry read: the next reading starts one entry
earlier and checks it, so a log that was reset or replaced is noticed, not trusted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from agent.store.table import Column, Table, Where

SCHEMA = """
CREATE TABLE IF NOT EXISTS recorder_battery (
    id             INTEGER PRIMARY KEY,
    serial         TEXT    NOT NULL,
    time_us        INTEGER NOT NULL,
    session_id     TEXT,
    percent        REAL    NOT NULL,
    millivolts     INTEGER,
    charging       INTEGER NOT NULL,
    temperature_c  REAL,
    cycle_count    INTEGER,
    health_percent INTEGER
);
CREATE INDEX IF NOT EXISTS recorder_battery_serial ON recorder_battery (serial, time_us);
CREATE TABLE IF NOT EXISTS recorder_event_cursor (
    serial     TEXT    PRIMARY KEY,
    next_index INTEGER NOT NULL,
    officer    TEXT,
    last_entry TEXT,
    updated_us INTEGER NOT NULL
);
"""

MAX_SAMPLES = 5000
MAX_AGE_US = 400 * 86400 * 1_000_000
KEEP_EVERY_US = 15 * 60 * 1_000_000


@dataclass(frozen=True, slots=True)
class BatteryRecord:
    time_us: int
    session_id: str | None
    percent: float
    millivolts: int | None
    charging: bool
    temperature_c: float | None
    cycle_count: int | None
    health_percent: int | None

    def as_dict(self) -> dict[str, object]:
        return {"time_us": self.time_us, "session_id": self.session_id,
                "percent": self.percent, "millivolts": self.millivolts,
                "charging": self.charging, "temperature_c": self.temperature_c,
                "cycle_count": self.cycle_count, "health_percent": self.health_percent}


BATTERY = Table("recorder_battery", BatteryRecord, (
    "time_us", "session_id", "percent", "millivolts", Column("charging", decode=bool),
    "temperature_c", "cycle_count", "health_percent"), keys=("id", "serial"))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _int(v: object) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def record_battery(conn: sqlite3.Connection, serial: str, facts: Mapping[str, object], *,
                   time_us: int, session_id: str | None) -> bool:
    """Keep one battery reading (see the module docstring); True if it was stored."""
    percent = _num(facts.get("percent"))
    if percent is None:
        return False
    rec = BatteryRecord(int(time_us), session_id, percent, _int(facts.get("millivolts")),
                        bool(facts.get("charging")), _num(facts.get("temperature_c")),
                        _int(facts.get("cycle_count")), _int(facts.get("health_percent")))
    prev = BATTERY.first(conn, Where().eq("serial", serial), order=("time_us", "id"),
                         desc=True)
    if prev is not None:
        same = (prev.percent, prev.charging, prev.health_percent, prev.cycle_count) == (
            rec.percent, rec.charging, rec.health_percent, rec.cycle_count)
        if same and rec.time_us - prev.time_us < KEEP_EVERY_US:
            return False
    BATTERY.insert(conn, {
        "serial": serial, "time_us": rec.time_us, "session_id": rec.session_id,
        "percent": rec.percent, "millivolts": rec.millivolts, "charging": int(rec.charging),
        "temperature_c": rec.temperature_c, "cycle_count": rec.cycle_count,
        "health_percent": rec.health_percent})
    conn.execute("DELETE FROM recorder_battery WHERE serial = ? AND time_us < ?",
                 (serial, rec.time_us - MAX_AGE_US))
    conn.execute("DELETE FROM recorder_battery WHERE serial = ? AND id <= (SELECT id FROM"
                 " recorder_battery WHERE serial = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                 (serial, serial, MAX_SAMPLES))
    return True


def battery_history(conn: sqlite3.Connection, serial: str, *, since_us: int | None = None,
                    limit: int | None = None) -> list[BatteryRecord]:
    """Stored samples of one recorder, oldest first (the newest `limit` if given)."""
    where = Where().eq("serial", serial).at_least("time_us", since_us)
    return BATTERY.select(conn, where, order=("time_us", "id"), desc=True, limit=limit)[::-1]


@dataclass(frozen=True, slots=True)
class EventCursor:
    next_index: int  # the next device event-log index to read
    officer: str | None  # the officer in effect there
    last_entry: str | None  # `time_ms:kind` of entry next_index - 1


def event_cursor(conn: sqlite3.Connection, serial: str) -> EventCursor | None:
    """Where this recorder's event log was last read to, or None if never."""
    row = conn.execute("SELECT next_index, officer, last_entry FROM recorder_event_cursor"
                       " WHERE serial = ?", (serial,)).fetchone()
    return None if row is None else EventCursor(int(row[0]), row[1], row[2])


def set_event_cursor(conn: sqlite3.Connection, serial: str, cursor: EventCursor, *,
                     time_us: int) -> None:
    conn.execute(
        "INSERT INTO recorder_event_cursor (serial, next_index, officer, last_entry,"
        " updated_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET"
        " next_index = excluded.next_index, officer = excluded.officer,"
        " last_entry = excluded.last_entry, updated_us = excluded.updated_us",
        (serial, cursor.next_index, cursor.officer, cursor.last_entry, time_us))
