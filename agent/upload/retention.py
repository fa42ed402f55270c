"""Retention and purge: which stored files may leave the dock, and removing them safely.

A file is purged only when (a) its upload is recorded as verified, (b) a fresh HEAD on
the store shows the same object (size, ETag, BLAKE3 metadata, version) — the central
acknowledgement, plus an explicit `ack-upload` from the central service where the policy
requires it, (c) no hold covers it (per-file holds, and hold scopes, which also cover files
offloaded after the hold was set), and (d) its minimum days on the dock are over. Files
past `purge_after_days` go; under disk pressure eligible files go oldest first until the
target free space is reached. Nothing else is ever purged.

Each purge is recorded (a `purged` ledger entry plus a purge intent, one transaction)
before the unlink; the intent is removed once the unlink is durable. An intent left by a
crash is settled at start-up by finishing the unlink: the decision is already recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.settings import RetentionSettings
from agent.store import evidence
from agent.store.db import Database
from agent.store.durable import fsync_dir
from agent.store.faults import FaultCode, raise_fault
from agent.store.ledger import Ledger, current_us
from agent.upload import objects, queue
from agent.upload.errors import UploadError
from agent.upload.s3client import ObjectInfo, S3Client

log = logging.getLogger("dock_agent.retention")
DAY_US = 86_400_000_000

ScopeTest = Callable[[evidence.StoredFile, Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Scope:
    hold_id: str
    reason: str
    scope: Mapping[str, Any]


@dataclass(frozen=True)
class Planned:
    file: evidence.StoredFile
    job: queue.Job
    reason: str  # "retention" | "disk_pressure"


def _age_key(f: evidence.StoredFile) -> tuple[int, int]:
    return (f.rec_start_us if f.rec_start_us is not None else f.offload_end_us, f.id)


def plan(
    files: Sequence[tuple[evidence.StoredFile, queue.Job]],
    scopes: Sequence[Scope],
    in_scope: ScopeTest,
    policy: RetentionSettings,
    *,
    now_us: int,
    free_bytes: int,
    total_bytes: int,
) -> list[Planned]:
    """Pure: the files to purge now, oldest first (see the module docstring)."""
    eligible = []
    for f, job in files:
        if f.purged_us is not None or job.state != "uploaded" or f.on_hold:
            continue
        if policy.require_central_ack and not job.central_ack:
            continue
        if now_us - f.offload_end_us < policy.min_days_on_dock * DAY_US:
            continue
        if any(in_scope(f, s.scope) for s in scopes):
            continue
        eligible.append((f, job))
    eligible.sort(key=lambda fj: _age_key(fj[0]))
    out: list[Planned] = []
    freed = 0
    pressure = total_bytes > 0 and free_bytes * 100 < policy.pressure_free_percent * total_bytes
    target = policy.target_free_percent * total_bytes / 100
    for f, job in eligible:
        if now_us - f.offload_end_us >= policy.purge_after_days * DAY_US:
            out.append(Planned(f, job, "retention"))
            freed += f.size
        elif pressure and free_bytes + freed < target:
            out.append(Planned(f, job, "disk_pressure"))
            freed += f.size
    return out


def active_scopes(conn: sqlite3.Connection) -> list[Scope]:
    return [Scope(r[0], r[1], json.loads(r[2])) for r in conn.execute(
        "SELECT hold_id, reason, scope FROM hold_scopes WHERE cleared_us IS NULL"
        " ORDER BY set_us")]


def set_scope(conn: sqlite3.Connection, hold_id: str, reason: str,
              scope: Mapping[str, Any], now_us: int) -> None:
    conn.execute("INSERT OR REPLACE INTO hold_scopes (hold_id, reason, scope, set_us)"
                 " VALUES (?, ?, ?, ?)", (hold_id, reason, json.dumps(dict(scope)), now_us))


def clear_scope(conn: sqlite3.Connection, hold_id: str, now_us: int) -> bool:
    cur = conn.execute("UPDATE hold_scopes SET cleared_us = ? WHERE hold_id = ?"
                       " AND cleared_us IS NULL", (now_us, hold_id))
    return cur.rowcount > 0


def apply_scopes(conn: sqlite3.Connection, ledger: Ledger, in_scope: ScopeTest) -> int:
    """Put files offloaded after a hold was set under that hold too (ledgered per file)."""
    added = 0
    for s in active_scopes(conn):
        by = f"central:{s.hold_id}"
        for f in evidence.query(conn, device=s.scope.get("serial"),
                                officer=s.scope.get("officer_no"), include_purged=False):
            if in_scope(f, s.scope) and not any(h.active and h.set_by == by for h in f.holds):
                evidence.set_hold(conn, ledger, f.id, s.reason, by=by)
                added += 1
    return added


def settle_intents(conn_read: Callable[[], list[tuple[int, str]]], store: Path,
                   delete: Callable[[int], None]) -> list[int]:
    """Finish purges a crash interrupted: unlink (if still there), then drop the intent."""
    done = []
    for file_id, relpath in conn_read():
        path = store / relpath
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(path.parent, missing_ok=True)
        delete(file_id)
        done.append(file_id)
    return done


@dataclass
class RetentionStats:
    purged_files: int = 0
    purged_bytes: int = 0
    refused: int = 0
    last_error: str | None = None


class Retention:
    def __init__(self, db: Database, ledger: Ledger, store_root: Path,
                 policy: RetentionSettings, client_factory: Callable[[], S3Client],
                 in_scope: ScopeTest,
                 disk_usage: Callable[[Path], tuple[int, int]] | None = None) -> None:
        self._db = db
        self._ledger = ledger
        self._store = store_root
        self._policy = policy
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._in_scope = in_scope
        self._disk_usage = disk_usage or _disk_usage
        self.stats = RetentionStats()

    async def run(self) -> None:
        await self.settle()
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(self._policy.check_interval_s)

    async def settle(self) -> list[int]:
        def read() -> list[tuple[int, str]]:
            return self._db.read_sync(lambda c: [(r[0], r[1]) for r in c.execute(
                "SELECT file_id, stored_relpath FROM purge_intents ORDER BY file_id")])

        def delete(file_id: int) -> None:
            self._db.write_sync(lambda c: c.execute(
                "DELETE FROM purge_intents WHERE file_id = ?", (file_id,)))

        return await asyncio.to_thread(settle_intents, read, self._store, delete)

    async def pass_once(self, *, now_us: int | None = None) -> list[Planned]:
        """Apply hold scopes, then purge what the policy allows; returns what was purged."""
        await self._db.write(lambda c: apply_scopes(c, self._ledger, self._in_scope))
        if not self._policy.purge:
            return []
        now = current_us() if now_us is None else now_us

        def load(conn: sqlite3.Connection) -> tuple[list[tuple[evidence.StoredFile,
                                                                 queue.Job]], list[Scope]]:
            pairs = []
            for job in queue.jobs(conn, state="uploaded"):
                f = evidence.get_file(conn, job.file_id)
                if f is not None and f.purged_us is None:
                    pairs.append((f, job))
            return pairs, active_scopes(conn)

        pairs, scopes = await self._db.read(load)
        free, total = await asyncio.to_thread(self._disk_usage, self._store)
        todo = plan(pairs, scopes, self._in_scope, self._policy, now_us=now,
                    free_bytes=free, total_bytes=total)
        done = []
        for p in todo:
            if await asyncio.to_thread(self._purge_one, p):
                done.append(p)
        return done

    def _s3(self) -> S3Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _purge_one(self, p: Planned) -> bool:
        f, job = p.file, p.job
        try:
            info = self._s3().head(job.object_key)
        except UploadError as exc:
            self.stats.last_error = f"acknowledgement HEAD failed: {exc}"
            return False  # store unreachable: no acknowledgement, no purge
        problems = _check_ack(f, job, info)
        if problems:
            self.stats.refused += 1
            self._refuse(f, job, problems, missing=info is None)
            return False
        now = current_us()
        ack = {"key": job.object_key, "etag": job.etag, "version_id": job.version_id,
               "acknowledged_by": "head", "head_time_us": now,
               "uploaded_seq": job.uploaded_seq, "central_ack": job.central_ack}

        def tx(conn: sqlite3.Connection) -> bool:
            fresh = evidence.get_file(conn, f.id)  # a hold may have come since the plan
            if fresh is None or fresh.on_hold or fresh.purged_us is not None:
                return False
            if any(self._in_scope(fresh, s.scope) for s in active_scopes(conn)):
                return False
            evidence.mark_purged(conn, self._ledger, f.id, p.reason, now_us=now, detail=ack)
            queue.set_acked(conn, f.id, now)
            conn.execute("INSERT INTO purge_intents (file_id, stored_relpath, requested_us)"
                         " VALUES (?, ?, ?)", (f.id, f.stored_relpath, now))
            return True

        if not self._db.write_sync(tx):
            return False
        path = self._store / f.stored_relpath
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(path.parent, missing_ok=True)
        self._db.write_sync(lambda c: c.execute("DELETE FROM purge_intents WHERE file_id = ?",
                                                (f.id,)))
        self.stats.purged_files += 1
        self.stats.purged_bytes += f.size
        log.info("purged", extra={"file_id": f.id, "reason": p.reason})
        return True

    def _refuse(self, f: evidence.StoredFile, job: queue.Job, problems: list[str], *,
                missing: bool) -> None:
        text = "; ".join(problems)
        self.stats.last_error = text

        def tx(conn: sqlite3.Connection) -> None:
            raise_fault(conn, self._ledger, FaultCode.CENTRAL_COPY_MISMATCH,
                        f"central copy of {f.stored_relpath} does not match: purge refused",
                        recorder=f.recorder_serial, officer=f.officer_no,
                        detail={"file_id": f.id, "key": job.object_key, "problems": problems})
            if missing:
                queue.requeue(conn, f.id, "central copy missing: upload again")

        self._db.write_sync(tx)


def _check_ack(f: evidence.StoredFile, job: queue.Job, info: ObjectInfo | None) -> list[str]:
    if info is None:
        return [f"{job.object_key} is not in the store"]
    out = [f"{m.field} is {m.found!r}, uploaded {m.expected!r}" for m in objects.compare(
        info.size, info.etag, info.metadata, size=f.size, etag=job.etag,
        blake3_hex=f.blake3_hex)]
    if job.version_id is not None and info.version_id != job.version_id:
        out.append(f"latest version is {info.version_id!r}, uploaded {job.version_id!r}")
    return out


def _disk_usage(path: Path) -> tuple[int, int]:
    u = shutil.disk_usage(path)
    return u.free, u.total
