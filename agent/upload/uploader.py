"""The uploader: drains the upload queue to the object store and proves every copy.

Per file (in a worker thread, one file at a time, one part in memory at a time):

1. HEAD the write-once key. If an object is there, it is accepted only if it is this
   file's content (size, BLAKE3 metadata and the ETag recomputed from the local file);
   anything else is a conflict: a fault, and the key is never written.
2. Files up to one part go in one PUT with `If-None-Match: *` and `Content-MD5`; larger
   ones in a multipart upload whose id and accepted parts are recorded as they go, so a
   restart resumes (parts the server already holds with the right MD5 are not re-sent).
   Orphaned multipart uploads of the key (a crash before the id was recorded) are aborted.
3. The local file is read once: BLAKE3 (must equal the ledger's) and each part's MD5 in
   the same pass. The store verifies every Content-MD5 (400 BadDigest otherwise); the
   final HEAD must show the ETag recomputed from those MD5s, the size and the BLAKE3
   metadata. Only then is the `uploaded` ledger entry written, with that proof.

Write-once: `If-None-Match: *` is refused by RGW 16 with 412 on an unversioned bucket,
but in a versioned (Object Lock) bucket it is ignored and a PUT adds a new version. So
the HEAD of step 1 always runs; the window between that HEAD and the PUT is the race
(another writer could add a version in between). It cannot replace our version there;
the purge check's fresh HEAD (latest version, ETag and version id) then refuses to
purge and raises a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.settings import RetentionSettings, UploadSettings
from agent.store.db import Database
from agent.store.evidence import StoredFile, get_file
from agent.store.faults import FaultCode, clear_faults, raise_fault
from agent.store.ledger import EntryKind, Ledger, current_us
from agent.upload import objects, queue
from agent.upload.errors import (
    ObjectConflict,
    S3Error,
    S3Unavailable,
    UploadError,
    UploadStopped,
)
from agent.upload.s3client import S3Client
from agent.upload.throttle import Throttle
from agent.upload.transfer import MIB, LocalFileError, StoredObject, Transfer

log = logging.getLogger("dock_agent.upload")


@dataclass
class UploadStats:
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    bytes_sent: int = 0
    last_error: str | None = None
    last_error_us: int | None = None
    last_success_us: int | None = None


class Uploader:
    """Drains the upload queue: schedules files, backs off while the store is down, and
    records each proven copy (`transfer.Transfer` moves the bytes) in the ledger."""

    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        store_root: Path,
        settings: UploadSettings,
        retention: RetentionSettings,
        client_factory: Callable[[], S3Client],
        *,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._store = store_root
        self._settings = settings
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._busy = busy
        self._busy_now = False
        self._wake = asyncio.Event()
        self.stats = UploadStats()
        self._stop = threading.Event()
        self.throttle = Throttle(self._rate, stopped=self._stop.is_set)
        # One thread for the uploader's whole life: one file, one chunk in memory at a time.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._transfer = Transfer(db, ledger.dock_id, settings, retention, self._s3,
                                  self.throttle, self._sent)
        # The store as a whole: while it is unreachable no file is tried (one probe per
        # backoff step), so a long outage costs one timeout per step, not one per file.
        self._down_until_us = 0
        self._down_count = 0

    # -- public ---------------------------------------------------------------------------

    @property
    def store_retry_us(self) -> int:
        """When the unreachable store is tried next (0: it is not known to be down)."""
        return self._down_until_us

    def notify(self) -> None:
        """A new file may be stored: check the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Drain forever; never raises for store trouble (it backs off and retries)."""
        watcher = asyncio.create_task(self._watch_busy())
        try:
            await self._run()
        finally:
            watcher.cancel()

    async def _watch_busy(self) -> None:
        # `busy` reads the loop's state, so it is sampled here, on the loop; the upload
        # thread only reads the flag.
        while True:
            self._busy_now = bool(self._busy())
            await asyncio.sleep(0.25)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop uploads for good
                log.exception("upload pass failed")
            wait = self._settings.poll_s
            nxt = await self._db.read(queue.next_wakeup)
            if nxt is not None:
                nxt = max(nxt, self._down_until_us)
                wait = max(0.05, min(wait, (nxt - current_us()) / 1e6))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def drain(self) -> int:
        """Upload every due file; returns how many were uploaded in this pass."""
        await self._db.write(lambda c: queue.enqueue_new(c, self._key, current_us()))
        done = 0
        while not self._stop.is_set():
            if current_us() < self._down_until_us:
                return done
            job = await self._db.read(lambda c: queue.next_due(c, current_us()))
            if job is None:
                return done
            self._busy_now = bool(self._busy())
            ok = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.process, job.file_id)
            done += int(ok)
        return done

    def close(self) -> None:
        """Stop: a paused, paced or hashing upload ends at its next chunk, and closing the
        socket ends one blocked on the network; the queue row stays pending, as it was (no
        failure, no fault), for the next start."""
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    # -- one file (worker thread) ---------------------------------------------------------

    def process(self, file_id: int) -> bool:
        """Upload one queued file; True if it is now recorded as uploaded."""
        f = self._db.read_sync(lambda c: get_file(c, file_id))
        job = self._db.read_sync(lambda c: queue.get_job(c, file_id))
        if f is None or job is None or job.state != "pending":
            return False
        try:
            stored = self._transfer.send(f, job, self._store)
        except ObjectConflict as exc:
            self._conflict(f, str(exc))
            return False
        except LocalFileError as exc:
            self._failed(f, job, str(exc), local=True)
            return False
        except UploadError as exc:
            if isinstance(exc, UploadStopped) or self._stop.is_set():
                return False  # a stop (or the socket it closed) is no failure: nothing recorded
            unreachable = isinstance(exc, S3Unavailable) or (
                isinstance(exc, S3Error) and exc.retryable)
            self._failed(f, job, str(exc), store_down=unreachable)
            return False
        self._record(f, stored)
        self._down_count = 0
        self._down_until_us = 0
        return True

    def _s3(self) -> S3Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _rate(self) -> float | None:
        s = self._settings
        if self._busy_now:
            return s.while_offloading_mib_s * MIB
        return s.bandwidth_mib_s * MIB if s.bandwidth_mib_s > 0 else None

    def _sent(self, n: int) -> None:
        self.stats.bytes_sent += n

    def _key(self, f: StoredFile) -> str:
        return objects.object_key(self._settings.prefix, f)

    def _record(self, f: StoredFile, stored: StoredObject) -> None:
        now = current_us()
        key, etag, version_id = stored.key, stored.etag, stored.version_id
        data: dict[str, object] = {
            "size": f.size, "endpoint": self._s3().config.endpoint,
            "bucket": self._s3().config.bucket, "key": key, "etag": etag,
            "version_id": version_id, "parts": stored.parts,
            "part_size": stored.part_size, "lock_mode": stored.lock_mode,
            "lock_until": stored.lock_until, "found_existing": stored.existing,
            "proof": ("content-md5 of every part verified by the store; ETag recomputed from "
                      "the MD5s of the read that produced the ledger's BLAKE3 equals the "
                      "store's; BLAKE3 metadata and size match"),
        }

        def tx(conn: sqlite3.Connection) -> None:
            entry = self._ledger.append(
                conn, EntryKind.UPLOADED, recorder=f.recorder_serial, officer=f.officer_no,
                bay=f.bay, session_id=f.session_id, now_us=now,
                data={"file_id": f.id, "stored_relpath": f.stored_relpath,
                      "blake3": f.blake3_hex, **data})
            queue.mark_uploaded(conn, f.id, etag=etag, version_id=version_id, seq=entry.seq,
                                now_us=now)
            if clear_faults(conn, self._ledger, recorder=None, codes=[FaultCode.UPLOAD_FAILED],
                            reason="upload succeeded"):
                # the store is back: files waiting out their backoff may go now
                conn.execute("UPDATE upload_queue SET next_try_us = 0 WHERE state = 'pending'")

        self._db.write_sync(tx)
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += f.size
        self.stats.last_success_us = now
        log.info("uploaded", extra={"file_id": f.id, "key": key})

    def _backoff(self, attempts: int) -> float:
        s = self._settings
        delay = min(s.backoff_max_s, s.backoff_min_s * 2 ** min(attempts, 30))
        return float(delay * (0.75 + random.random() / 2))  # jitter only

    def _failed(self, f: StoredFile, job: queue.Job, error: str, *,
                local: bool = False, store_down: bool = False) -> None:
        delay = self._backoff(job.attempts)
        now = current_us()
        if store_down:
            self._down_until_us = now + int(self._backoff(self._down_count) * 1e6)
            self._down_count += 1
        self.stats.last_error, self.stats.last_error_us = error, now
        log.warning("upload failed", extra={"file_id": f.id, "error": error})

        def tx(conn: sqlite3.Connection) -> None:
            queue.mark_failed(conn, f.id, error, now + int(delay * 1e6))
            if local:
                raise_fault(conn, self._ledger, FaultCode.STORE_INTEGRITY, error,
                            recorder=f.recorder_serial, detail={"file_id": f.id})
            else:
                raise_fault(conn, self._ledger, FaultCode.UPLOAD_FAILED,
                            "uploads to the object store are failing", severity="warning",
                            detail={"error": error[:300]})

        self._db.write_sync(tx)

    def _conflict(self, f: StoredFile, error: str) -> None:
        self.stats.last_error, self.stats.last_error_us = error, current_us()
        log.error("upload conflict", extra={"file_id": f.id, "error": error})

        def tx(conn: sqlite3.Connection) -> None:
            queue.mark_conflict(conn, f.id, error)
            raise_fault(conn, self._ledger, FaultCode.UPLOAD_CONFLICT, error,
                        recorder=f.recorder_serial, officer=f.officer_no,
                        detail={"file_id": f.id, "stored_relpath": f.stored_relpath})

        self._db.write_sync(tx)
