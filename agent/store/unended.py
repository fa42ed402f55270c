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
    # One pass over the ledger (no index on kind or session): sessions with no `undocked`;
    # min(seq) makes the other columns those of the `docked` entry (SQLite bare columns).
    rows = conn.execute(
        "SELECT session_id, recorder, officer, bay, min(seq), time_us FROM ledger"
        " WHERE kind IN (?, ?) AND session_id IS NOT NULL GROUP BY session_id"
        " HAVING sum(kind = ?) = 0 AND sum(kind = ?) > 0 ORDER BY min(seq)",
        (EntryKind.DOCKED.value, EntryKind.UNDOCKED.value, EntryKind.UNDOCKED.value,
         EntryKind.DOCKED.value),
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
