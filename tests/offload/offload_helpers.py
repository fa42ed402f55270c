"""Shared helpers of the offload tests (real files, real SQLite)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import blake3

from agent.domain import DockingContext, RecorderIdentity
from agent.offload.buffers import BufferPool
from agent.schemas import ALL_SCHEMAS

SCHEMAS = ALL_SCHEMAS
DOCK_ID = "dock-test"
T0_MS = 1_790_000_000_000  # a fixed recording time (2026-09-21 UTC)


@dataclass(frozen=True)
class FixedHours:
    """Trivial deadline policy for tests: recording end + N hours."""

    hours: float

    def due(self, recorded_end_utc: datetime, /) -> datetime:
        return recorded_end_utc + timedelta(hours=self.hours)


def ctx(serial: str = "RC000001", *, first: bool = True, session: str = "s1") -> DockingContext:
    ident = RecorderIdentity(serial=serial, officer_no="O-17", officer_name="Li Wei",
                             unit_no="U-3")
    return DockingContext(session_id=session, bay="bay-1", identity=ident, first_docking=first)


def content(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return blake3.blake3(seed).digest(length=size)


def make_file(root: Path, rel: str | bytes, size: int, seed: bytes | None = None,
              mtime_ms: int = T0_MS) -> bytes:
    relb = rel if isinstance(rel, bytes) else rel.encode()
    path = os.path.join(os.fsencode(root), relb)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = content(seed or relb, size)
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, ns=(mtime_ms * 1_000_000, mtime_ms * 1_000_000))
    return data


def make_footage(root: Path, sizes: list[int], sub: str = "DCIM/100BWC") -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for i, size in enumerate(sizes):
        rel = f"{sub}/FILE{i:04d}.MP4".encode()
        out[rel] = make_file(root, rel, size, mtime_ms=T0_MS + i * 60_000)
    return out


def rows(db_path: Path, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def check_store_invariants(db_path: Path, store: Path) -> list[sqlite3.Row]:
    """Every index row points at an existing read-only file with the recorded hash, and its
    "offloaded" ledger entry says the same. Returns the rows."""
    files = rows(db_path, "SELECT * FROM evidence_files ORDER BY id")
    for r in files:
        path = store / r["stored_relpath"]
        data = path.read_bytes()
        assert len(data) == r["size"], r["stored_relpath"]
        assert blake3.blake3(data).hexdigest() == r["blake3"], r["stored_relpath"]
        assert path.stat().st_mode & 0o777 == 0o444
        entry = rows(db_path, "SELECT * FROM ledger WHERE seq = ?", (r["ledger_seq"],))[0]
        assert entry["kind"] == "offloaded"
        data_json = json.loads(entry["data"])
        assert data_json["blake3"] == r["blake3"]
        assert data_json["stored_relpath"] == r["stored_relpath"]
        assert data_json["size"] == r["size"]
        assert bytes.fromhex(data_json["source_name_hex"]) == bytes(r["source_name"])
    return files


class LoggingWiper:
    """Deletes from the source directory after checking size and hash; logs every delete
    (fsynced before the unlink, so a kill cannot hide a deletion)."""

    def __init__(self, root: Path, log: Path | None = None) -> None:
        self.root = root
        self.log = log
        self.deleted: list[bytes] = []

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        path = os.path.join(os.fsencode(self.root), name)
        with open(path, "rb") as fh:
            data = fh.read()
        if len(data) != size or blake3.blake3(data).digest() != blake3_digest:
            raise RuntimeError(f"guarded delete refused for {name!r}")
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"name": name.hex(), "size": size,
                                     "blake3": blake3_digest.hex()}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        os.unlink(path)
        self.deleted.append(name)

    async def listed(self) -> set[bytes]:
        """What the recorder holds now (its listing, asked again after deletes)."""
        base = os.fsencode(self.root)
        out: set[bytes] = set()
        for dirpath, _dirs, files in os.walk(base):
            for n in files:
                out.add(os.path.relpath(os.path.join(dirpath, n), base))
        return out


def queue_waiters(pool: BufferPool, n: int, take: Callable[[int], None]) -> list[threading.Thread]:
    """Start `n` threads that each run `take(i)` (an acquire from the exhausted `pool`),
    thread i only once thread i-1 is queued: the pool's queue holds them in order."""
    threads = []
    for i in range(n):
        t = threading.Thread(target=take, args=(i,))
        t.start()
        threads.append(t)
        while len(pool._queue) < i + 1:  # wait until thread i is queued
            threading.Event().wait(0.001)
    return threads
