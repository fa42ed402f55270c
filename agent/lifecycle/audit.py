"""Scheduled fixity audit (regulation 000 §18): the store re-hashed against the ledger.

The store is audited in slices: each run re-hashes the next files (by id) so that the
whole store is covered once per `cycle_days`, reading at most `max_mib_per_s` and pausing
while an offload runs (offloads always come first). A file whose content no longer
matches its recorded BLAKE3, or that is missing, raises a `store_integrity` fault (ledger
and MQTT); every run is summarised in an "audit_run" ledger entry. The cursor lives in
the database, so a restart continues the cycle where it stopped.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.longjobs import StopSignal, check, pause
from agent.store import evidence, faults
from agent.store.ledger import EntryKind, Ledger, current_us

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_runs (
    id             INTEGER PRIMARY KEY,
    cycle          INTEGER NOT NULL,
    started_us     INTEGER NOT NULL,
    finished_us    INTEGER NOT NULL,
    first_file     INTEGER,
    last_file      INTEGER,
    files_checked  INTEGER NOT NULL,
    bytes_checked  INTEGER NOT NULL,
    problems       TEXT    NOT NULL,
    cycle_complete INTEGER NOT NULL,
    ledger_seq     INTEGER NOT NULL
);
"""
CHUNK = 1 << 20
MAX_FILES = 1_000_000  # "the rest of the cycle"


@dataclass(frozen=True)
class Problem:
    file_id: int
    recorder: str
    relpath: str
    kind: str  # "missing" | "mismatch" | "unreadable"
    detail: str


@dataclass(frozen=True)
class Cursor:
    cycle: int
    after_file: int  # last file id audited in this cycle (0: cycle not started)
    cycle_started_us: int | None


def cursor(conn: sqlite3.Connection) -> Cursor:
    row = conn.execute("SELECT cycle, last_file, cycle_complete FROM audit_runs"
                       " ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return Cursor(1, 0, None)
    if row[2]:
        return Cursor(row[0] + 1, 0, None)
    started = conn.execute("SELECT MIN(started_us) FROM audit_runs WHERE cycle = ?",
                           (row[0],)).fetchone()[0]
    return Cursor(row[0], row[1] or 0, started)


def slice_size(total_files: int, interval_s: float, cycle_days: float) -> int:
    """Files per run so that `total_files` are covered once per cycle."""
    runs_per_cycle = max(1.0, cycle_days * 86400.0 / interval_s)
    return max(1, math.ceil(total_files / runs_per_cycle))


def plan(conn: sqlite3.Connection, interval_s: float, cycle_days: float,
         limit: int | None = None) -> tuple[Cursor, list[evidence.StoredFile], bool]:
    """The files of the next run and whether they finish the cycle."""
    cur = cursor(conn)
    live = [f for f in evidence.query(conn, include_purged=False)]
    size = limit if limit is not None else slice_size(len(live), interval_s, cycle_days)
    pending = [f for f in live if f.id > cur.after_file]
    chosen = pending[:size]
    return cur, chosen, len(chosen) == len(pending)


def rehash(path: Path, *, max_bytes_per_s: float, busy: Callable[[], bool],
           stop: StopSignal | None = None) -> tuple[int, str]:
    """(size, BLAKE3) of a stored file, read under the rate limit, yielding to offloads;
    JobStopped as soon as the agent stops (its pauses are woken by the stop)."""
    h = blake3()
    done = 0
    started = time.monotonic()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            check(stop)
            h.update(chunk)
            done += len(chunk)
            while busy():
                pause(stop, 0.5)
                started += 0.5
            pause(stop, done / max_bytes_per_s - (time.monotonic() - started))
    return done, h.hexdigest()


def check_files(store: Path, files: list[evidence.StoredFile], *, max_bytes_per_s: float,
                busy: Callable[[], bool], stop: StopSignal | None = None
                ) -> tuple[int, list[Problem]]:
    """Re-hash `files`; JobStopped (nothing recorded: the slice runs again) on a stop."""
    problems: list[Problem] = []
    total = 0
    for f in files:
        path = store / f.stored_relpath
        try:
            size, digest = rehash(path, max_bytes_per_s=max_bytes_per_s, busy=busy,
                                  stop=stop)
        except FileNotFoundError:
            problems.append(Problem(f.id, f.recorder_serial, f.stored_relpath, "missing",
                                    "the stored file is missing"))
            continue
        except OSError as exc:
            problems.append(Problem(f.id, f.recorder_serial, f.stored_relpath, "unreadable",
                                    str(exc)))
            continue
        total += size
        if size != f.size or digest != f.blake3_hex:
            problems.append(Problem(
                f.id, f.recorder_serial, f.stored_relpath, "mismatch",
                f"size {size} (recorded {f.size}), blake3 {digest} (recorded"
                f" {f.blake3_hex})"))
    return total, problems


def record_run(conn: sqlite3.Connection, ledger: Ledger, cur: Cursor,
               files: list[evidence.StoredFile], bytes_checked: int, problems: list[Problem],
               cycle_complete: bool, started_us: int) -> dict[str, Any]:
    """Faults for each problem and the run's summary, in one transaction."""
    for p in problems:
        f = evidence.get_file(conn, p.file_id)
        faults.raise_fault(
            conn, ledger, faults.FaultCode.STORE_INTEGRITY,
            f"fixity audit: stored file {p.relpath} is {p.kind}", recorder=p.recorder,
            officer=None if f is None else f.officer_no,
            session_id=f"audit-{cur.cycle}-{p.file_id}",  # each finding is its own record
            detail={"file_id": p.file_id, "stored_relpath": p.relpath, "problem": p.kind,
                    "detail": p.detail})
    summary = {
        "cycle": cur.cycle, "files_checked": len(files), "bytes_checked": bytes_checked,
        "first_file": files[0].id if files else None,
        "last_file": files[-1].id if files else None,
        "problems": [{"file_id": p.file_id, "stored_relpath": p.relpath, "problem": p.kind}
                     for p in problems],
        "cycle_complete": cycle_complete,
        "cycle_started_us": cur.cycle_started_us or started_us,
    }
    entry = ledger.append(conn, EntryKind.AUDIT_RUN, data=summary)
    conn.execute(
        "INSERT INTO audit_runs (cycle, started_us, finished_us, first_file, last_file,"
        " files_checked, bytes_checked, problems, cycle_complete, ledger_seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (cur.cycle, started_us, entry.time_us, summary["first_file"],
         summary["last_file"] if files else cur.after_file, len(files), bytes_checked,
         json.dumps(summary["problems"]), int(cycle_complete), entry.seq))
    return {**summary, "ledger_seq": entry.seq}


def status(conn: sqlite3.Connection, interval_s: float, cycle_days: float) -> dict[str, Any]:
    """The last full cycle, the current one, and what is pending."""
    cur = cursor(conn)
    live = evidence.query(conn, include_purged=False)
    last_full = conn.execute(
        "SELECT cycle, MAX(finished_us) FROM audit_runs WHERE cycle_complete = 1"
        " GROUP BY cycle ORDER BY cycle DESC LIMIT 1").fetchone()
    full: dict[str, Any] | None = None
    if last_full is not None:
        agg = conn.execute(
            "SELECT MIN(started_us), SUM(files_checked), SUM(bytes_checked), COUNT(*)"
            " FROM audit_runs WHERE cycle = ?", (last_full[0],)).fetchone()
        probs = [p for (t,) in conn.execute("SELECT problems FROM audit_runs WHERE cycle = ?",
                                            (last_full[0],)) for p in json.loads(t)]
        full = {"cycle": last_full[0], "started_us": agg[0], "finished_us": last_full[1],
                "files_checked": agg[1], "bytes_checked": agg[2], "runs": agg[3],
                "problems": probs}
    pending = [f for f in live if f.id > cur.after_file]
    runs = conn.execute("SELECT id, cycle, started_us, finished_us, files_checked,"
                        " bytes_checked, problems, cycle_complete FROM audit_runs"
                        " ORDER BY id DESC LIMIT 10").fetchall()
    return {
        "last_full_cycle": full,
        "current_cycle": {"cycle": cur.cycle, "started_us": cur.cycle_started_us,
                          "files_done": len(live) - len(pending),
                          "files_pending": len(pending),
                          "bytes_pending": sum(f.size for f in pending)},
        "slice_files": slice_size(len(live), interval_s, cycle_days),
        "recent_runs": [{"id": r[0], "cycle": r[1], "started_us": r[2], "finished_us": r[3],
                         "files_checked": r[4], "bytes_checked": r[5],
                         "problems": json.loads(r[6]), "cycle_complete": bool(r[7])}
                        for r in runs],
        "now_us": current_us(),
    }
