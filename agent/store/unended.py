"""Docking sessions the dock never saw end: closed in the ledger at the next start.

A session's `undocked` entry is written when it ends. A power cut or a killed agent ends
it without one, and the ledger would then show the recorder docked for ever, across every
later docking. At start-up, before any new session, each `docked` entry without its
`undocked` gets one now, saying that the end was not observed and when it was recorded.
"""

from __future__ import annotations

import sqlite3

from agent.store.ledger import EntryKind, Ledger

UNRECORDED_REASON = "the dock stopped (power loss or crash) before this session's end was recorded"


def close_unended_sessions(conn: sqlite3.Connection, ledger: Ledger) -> list[str]:
    """Append the missing `undocked` entries; returns their session ids, oldest first."""
    rows = conn.execute(
        "SELECT d.session_id, d.recorder, d.officer, d.bay, d.seq, d.time_us FROM ledger d"
        " WHERE d.kind = ? AND d.session_id IS NOT NULL AND NOT EXISTS ("
        "  SELECT 1 FROM ledger u WHERE u.kind = ? AND u.session_id = d.session_id)"
        " ORDER BY d.seq",
        (EntryKind.DOCKED.value, EntryKind.UNDOCKED.value),
    ).fetchall()
    for session_id, recorder, officer, bay, seq, time_us in rows:
        ledger.append(conn, EntryKind.UNDOCKED, recorder=recorder, officer=officer, bay=bay,
                      session_id=session_id, data={
                          "reason": UNRECORDED_REASON, "state_reached": "unknown", "done": [],
                          "offload": None, "faults": [], "clock": None, "battery": None,
                          "unchecked": [], "end_observed": False,
                          "docked_seq": seq, "docked_time_us": time_us,
                      })
    return [r[0] for r in rows]
