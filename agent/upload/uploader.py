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
import hashlib
import logging
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.settings import RetentionSettings, UploadSettings
from agent.store.db import Database
from agent.store.evidence import StoredFile, get_file
from agent.store.faults import FaultCode, clear_faults, raise_fault
from agent.store.ledger import EntryKind, Ledger, current_us, get_entry
from agent.upload import objects, queue
from agent.upload.errors import ObjectConflict, S3Error, S3Unavailable, UploadError
from agent.upload.s3client import FileRange, ObjectInfo, S3Client
from agent.upload.throttle import Throttle

log = logging.getLogger("dock_agent.upload")

MIB = 1 << 20
CHUNK = 1 << 20


class LocalFileError(UploadError):
    """The stored file is missing or no longer matches its ledger hash."""


@dataclass
class UploadStats:
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    bytes_sent: int = 0
    last_error: str | None = None
    last_error_us: int | None = None
    last_success_us: int | None = None


class Uploader:
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
        self._retention = retention
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._busy = busy
        self._busy_now = False
        self._lock_enabled: bool | None = None
        self._wake = asyncio.Event()
        self.stats = UploadStats()
        self._stop = threading.Event()
        self.throttle = Throttle(self._rate, stopped=self._stop.is_set)
        # One thread and one 1 MiB chunk buffer for the uploader's whole life: parts are
        # streamed from the file, never held whole (memory does not grow with part_mib).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._chunk = bytearray(CHUNK)
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
                await asyncio.wait_for(self._wake.wait(), wait)

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
        """Stop: a paused or paced upload ends at its next chunk, and closing the socket
        ends one blocked on the network; the queue row stays pending for the next start."""
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
            self._upload(f, job)
        except ObjectConflict as exc:
            self._conflict(f, str(exc))
            return False
        except LocalFileError as exc:
            self._failed(f, job, str(exc), local=True)
            return False
        except (S3Unavailable, S3Error, UploadError) as exc:
            unreachable = isinstance(exc, S3Unavailable) or (
                isinstance(exc, S3Error) and exc.retryable)
            self._failed(f, job, str(exc), store_down=unreachable)
            return False
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

    def _key(self, f: StoredFile) -> str:
        return objects.object_key(self._settings.prefix, f)

    def _upload(self, f: StoredFile, job: queue.Job) -> None:
        s3 = self._s3()
        path = self._store / f.stored_relpath
        if not path.is_file():
            raise LocalFileError(f"stored file {f.stored_relpath} is missing from the store")
        # Fixed by the first multipart attempt (recorded before CreateMultipartUpload):
        # the ETag to expect depends on it.
        part_size = job.part_size or self._settings.part_mib * MIB
        multipart = f.size > part_size
        key = job.object_key
        existing = s3.head(key)
        if existing is not None:
            md5s = self._hash_local(path, f, part_size)
            etag = objects.expected_etag(md5s, multipart)
            self._accept_existing(f, job, existing, etag, len(md5s), part_size)
            return
        headers = self._headers(f)
        if multipart:
            md5s = self._multipart(s3, f, job, path, part_size, headers)
        else:
            md5s = [self._single(s3, f, key, path, headers)]
        etag = objects.expected_etag(md5s, multipart)
        info = s3.head(key)
        if info is None:
            raise UploadError(f"{key}: not found right after it was stored")
        mism = objects.compare(info.size, info.etag, info.metadata, size=f.size, etag=etag,
                               blake3_hex=f.blake3_hex)
        if mism:
            raise ObjectConflict(f"{key}: stored object differs from the file: "
                                 + ", ".join(f"{m.field} {m.found!r} != {m.expected!r}"
                                             for m in mism))
        info = self._ensure_lock(s3, f, key, info)
        self._record(f, key, etag, info.version_id, len(md5s), part_size, info.lock_mode,
                     info.lock_until, existing=False)

    def _headers(self, f: StoredFile) -> dict[str, str]:
        ledger_hash = self._db.read_sync(
            lambda c: get_entry(c, f.ledger_seq) if f.ledger_seq is not None else None)
        h = objects.metadata(f, self._ledger.dock_id,
                             ledger_hash.hash if ledger_hash is not None else "")
        h["content-type"] = "application/octet-stream"
        if self._lock():
            h.update(objects.lock_headers(f, self._settings.object_lock_mode,
                                          self._retention.retention_days, current_us()))
        return h

    def _ensure_lock(self, s3: S3Client, f: StoredFile, key: str,
                     info: ObjectInfo) -> ObjectInfo:
        """Give the object its retention if the bucket locks and it has none yet."""
        if not self._lock() or info.lock_mode is not None:
            return info
        h = objects.lock_headers(f, self._settings.object_lock_mode,
                                 self._retention.retention_days, current_us())
        mode = h["x-amz-object-lock-mode"]
        s3.put_retention(key, info.version_id, mode, h["x-amz-object-lock-retain-until-date"])
        locked = s3.head(key)
        if locked is None or locked.lock_mode != mode or locked.version_id != info.version_id:
            raise UploadError(f"{key}: Object Lock retention did not take effect")
        return locked

    def _lock(self) -> bool:
        if self._settings.object_lock == "off":
            return False
        if self._lock_enabled is None:
            self._lock_enabled = self._s3().object_lock_enabled()
        return self._lock_enabled

    def _hash_local(self, path: Path, f: StoredFile, part_size: int) -> list[str]:
        """Per-part MD5s and the BLAKE3 of the stored file, in one read."""
        h = blake3()
        md5s: list[str] = []
        with _open_stored(path, f) as fd:
            for offset in range(0, f.size, part_size):
                md5s.append(self._digest(fd, offset, min(part_size, f.size - offset), h))
        if not md5s:
            md5s.append(hashlib.md5(b"").hexdigest())  # noqa: S324 - S3's ETag
        self._check_local(f, h.hexdigest())
        return md5s

    def _digest(self, fd: int, offset: int, length: int, also: Any = None) -> str:
        """MD5 of a file range (feeding `also`, a BLAKE3, on the way)."""
        md5 = hashlib.md5()  # noqa: S324 - S3's Content-MD5
        for chunk in FileRange(fd, offset, length, self._chunk).chunks():
            md5.update(chunk)
            if also is not None:
                also.update(chunk)
        return md5.hexdigest()

    def _check_local(self, f: StoredFile, digest: str) -> None:
        if digest != f.blake3_hex:
            raise LocalFileError(f"stored file {f.stored_relpath} no longer matches its ledger "
                                 f"hash (read {digest}); not uploaded")

    def _single(self, s3: S3Client, f: StoredFile, key: str, path: Path,
                headers: dict[str, str]) -> str:
        # BLAKE3 before the PUT: a write-once key must never receive wrong bytes
        h = blake3()
        with _open_stored(path, f) as fd:
            md5 = self._digest(fd, 0, f.size, h)
            self._check_local(f, h.hexdigest())
            try:
                etag = s3.put(key, FileRange(fd, 0, f.size, self._chunk), md5, headers,
                              throttle=self.throttle)
            except S3Error as exc:
                if exc.status == 412:  # someone stored the key since our HEAD: re-check
                    raise UploadError(f"{key} appeared during the upload") from exc
                raise
        self.stats.bytes_sent += f.size
        if etag and etag != md5:
            raise ObjectConflict(f"store answered ETag {etag} for content MD5 {md5}")
        return md5

    def _multipart(self, s3: S3Client, f: StoredFile, job: queue.Job, path: Path,
                   part_size: int, headers: dict[str, str]) -> list[str]:
        key = job.object_key
        upload_id = job.upload_id
        on_server: dict[int, tuple[int, str]] = {}
        if upload_id is not None:
            try:
                on_server = {p.number: (p.size, p.etag) for p in s3.list_parts(key, upload_id)}
            except S3Error as exc:
                if exc.status != 404:
                    raise
                self._db.write_sync(lambda c: queue.forget_multipart(c, f.id))
                upload_id = None
        if upload_id is None:
            if job.part_size is None:
                # marks "a multipart upload may exist" before one can
                self._db.write_sync(lambda c: queue.set_part_size(c, f.id, part_size))
            else:
                for other_key, other_id in s3.list_multipart_uploads(key):
                    if other_key == key:  # left by a crash before its id was recorded
                        s3.abort_multipart(key, other_id)
            new_id = s3.create_multipart(key, headers)
            self._db.write_sync(lambda c: queue.start_multipart(c, f.id, new_id, part_size))
            upload_id = new_id
        # Each part is read twice from the page cache, never held whole: once for its
        # Content-MD5, once as it is sent, feeding BLAKE3. The store checks the MD5 against
        # what it received, so the bytes hashed are the bytes stored.
        h = blake3()
        md5s: list[str] = []
        with _open_stored(path, f) as fd:
            for number, offset in enumerate(range(0, f.size, part_size), 1):
                length = min(part_size, f.size - offset)
                md5 = self._digest(fd, offset, length)
                if on_server.get(number) == (length, md5):
                    self._digest(fd, offset, length, h)  # the store has this part already
                else:
                    etag = s3.upload_part(key, upload_id, number,
                                          FileRange(fd, offset, length, self._chunk), md5,
                                          throttle=self.throttle, observe=h.update)
                    self.stats.bytes_sent += length
                    if etag and etag != md5:
                        raise UploadError(f"part {number}: ETag {etag} is not its MD5 {md5}")
                    # No commit per part: on resume ListParts says which parts the store
                    # holds, and each is re-checked against the MD5 of the local bytes.
                md5s.append(md5)
        if h.hexdigest() != f.blake3_hex:
            with contextlib.suppress(UploadError):
                s3.abort_multipart(key, upload_id)
            self._db.write_sync(lambda c: queue.forget_multipart(c, f.id))
            self._check_local(f, h.hexdigest())
        s3.complete_multipart(key, upload_id, list(enumerate(md5s, 1)))
        return md5s

    def _accept_existing(self, f: StoredFile, job: queue.Job, info: ObjectInfo, etag: str,
                         parts: int, part_size: int) -> None:
        mism = objects.compare(info.size, info.etag, info.metadata, size=f.size, etag=etag,
                               blake3_hex=f.blake3_hex)
        if mism:
            raise ObjectConflict(
                f"{job.object_key} already holds other content ("
                + ", ".join(f"{m.field} {m.found!r}, expected {m.expected!r}" for m in mism)
                + "); the key is write-once and is not overwritten")
        if job.upload_id is not None:  # stored by a run that crashed before recording it
            with contextlib.suppress(UploadError):
                self._s3().abort_multipart(job.object_key, job.upload_id)
        info = self._ensure_lock(self._s3(), f, job.object_key, info)
        self._record(f, job.object_key, etag, info.version_id, parts, part_size,
                     info.lock_mode, info.lock_until, existing=True)

    def _record(self, f: StoredFile, key: str, etag: str, version_id: str | None, parts: int,
                part_size: int, lock_mode: str | None, lock_until: str | None, *,
                existing: bool) -> None:
        now = current_us()
        data: dict[str, object] = {
            "size": f.size, "endpoint": self._s3().config.endpoint,
            "bucket": self._s3().config.bucket, "key": key, "etag": etag,
            "version_id": version_id, "parts": parts if f.size > part_size else 0,
            "part_size": part_size, "lock_mode": lock_mode, "lock_until": lock_until,
            "found_existing": existing,
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


@contextlib.contextmanager
def _open_stored(path: Path, f: StoredFile) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise LocalFileError(f"stored file {f.stored_relpath}: {exc.strerror}") from exc
    try:
        if os.fstat(fd).st_size != f.size:
            raise LocalFileError(f"stored file {f.stored_relpath} is no longer {f.size} bytes;"
                                 " not uploaded")
        yield fd
    finally:
        os.close(fd)
