"""Shared helpers of the custody store tests (constants, tampering, storing a file)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.store.db import Database
from agent.store.evidence import (
    StoredFile,
    StoredFileRecord,
    commit_file,
    get_file,
    layout_relpath,
)
from agent.store.ledger import Ledger

DOCK = "dock-test-01"
T0 = 1_790_000_000_000_000  # a fixed instant (µs, UTC)


def tamper(db_path: Path, *statements: tuple[str, tuple[Any, ...]] | str) -> None:
    """Edit the database behind the agent's back, as an attacker with file access would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for trig in ("ledger_no_update", "ledger_no_delete", "ledger_checkpoints_no_update",
                     "ledger_checkpoints_no_delete", "evidence_immutable",
                     "evidence_no_delete", "evidence_seq_once"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trig}")
        conn.execute("BEGIN")
        for st in statements:
            if isinstance(st, str):
                conn.execute(st)
            else:
                conn.execute(st[0], st[1])
        conn.execute("COMMIT")
    finally:
        conn.close()


def store_file(
    db: Database, ledger: Ledger, store: Path, content: bytes, *,
    serial: str = "SER00001", unit: str = "U01", officer: str = "007",
    name: bytes = b"FILE0001.MP4", day: dt.date = dt.date(2026, 11, 20),
    rec_start_us: int = T0, session: str = "sess-1",
) -> int:
    """Write a file into the store the way the offloader does, then commit it."""
    rel = layout_relpath(unit, serial, officer, day, name)
    path = store / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, 0o440)
    rec = StoredFileRecord(
        recorder_serial=serial, session_id=session, bay="bay-1", source_name=name,
        stored_relpath=rel, size=len(content), blake3_hex=blake3(content).hexdigest(),
        rec_start_us=rec_start_us, rec_end_us=rec_start_us + 60_000_000,
        offload_start_us=T0 + 100, offload_end_us=T0 + 200, unit_no=unit, officer_no=officer,
        officer_name="Li Wei", late=False, late_by_s=0.0, deadline_us=T0 + 86_400_000_000,
    )
    entry = db.write_sync(lambda c: commit_file(c, ledger, rec))
    return int(entry.data["file_id"])


def stored(db: Database, file_id: int) -> StoredFile:
    """The evidence row of `file_id`, which the test knows exists."""
    found = db.read_sync(lambda c: get_file(c, file_id))
    assert found is not None, f"no evidence row {file_id}"
    return found
