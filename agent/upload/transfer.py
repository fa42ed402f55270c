"""One file's transfer to the object store, and the proof that the store holds it.

`Transfer.send` runs in the uploader's worker thread: HEAD the write-once key, PUT or
resume a multipart upload (hashing the bytes it sends), check the stored object and give
it its Object Lock retention. It returns a `StoredObject` — what the ledger records as
proof — or raises; queue bookkeeping and the ledger stay with `Uploader`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.settings import RetentionSettings, UploadSettings
from agent.store.db import Database
from agent.store.evidence import StoredFile
from agent.store.ledger import current_us, get_entry
from agent.upload import objects, queue
from agent.upload.errors import ObjectConflict, S3Error, UploadError
from agent.upload.s3client import FileRange, ObjectInfo, S3Client
from agent.upload.throttle import Throttle

MIB = 1 << 20
CHUNK = 1 << 20


class LocalFileError(UploadError):
    """The stored file is missing or no longer matches its ledger hash."""


@dataclass(frozen=True)
class StoredObject:
    """The store's copy of one file, as verified: what the "uploaded" entry records."""

    key: str
    etag: str
    version_id: str | None
    parts: int  # parts the ETag was computed over
    part_size: int
    lock_mode: str | None
    lock_until: str | None
    existing: bool  # found already stored (by an earlier run), not written now


class Transfer:
    """Sends stored files to one bucket, one at a time, one 1 MiB chunk in memory."""

    def __init__(self, db: Database, dock_id: str, settings: UploadSettings,
                 retention: RetentionSettings, s3: Callable[[], S3Client],
                 throttle: Throttle, on_sent: Callable[[int], None]) -> None:
        self._db = db
        self._dock_id = dock_id
        self._settings = settings
        self._retention = retention
        self._s3 = s3
        self.throttle = throttle
        self._on_sent = on_sent
        self._lock_enabled: bool | None = None
        # One chunk buffer for the transfer's whole life: parts are streamed from the
        # file, never held whole (memory does not grow with part_mib).
        self._chunk = bytearray(CHUNK)

    def send(self, f: StoredFile, job: queue.Job, store_root: Path) -> StoredObject:
        """Store one queued file (or accept the copy already there) and prove it."""
        s3 = self._s3()
        path = store_root / f.stored_relpath
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
            return self._accept_existing(f, job, existing, etag, len(md5s), part_size)
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
        return _proof(f, key, etag, info, len(md5s), part_size, existing=False)

    def _headers(self, f: StoredFile) -> dict[str, str]:
        ledger_hash = self._db.read_sync(
            lambda c: get_entry(c, f.ledger_seq) if f.ledger_seq is not None else None)
        h = objects.metadata(f, self._dock_id,
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
            self.throttle.check_stop()  # a whole multi-GB file is hashed before a resend
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
        self._on_sent(f.size)
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
                    self._on_sent(length)
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
                         parts: int, part_size: int) -> StoredObject:
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
        return _proof(f, job.object_key, etag, info, parts, part_size, existing=True)



def _proof(f: StoredFile, key: str, etag: str, info: ObjectInfo, parts: int, part_size: int,
           *, existing: bool) -> StoredObject:
    return StoredObject(key, etag, info.version_id, parts if f.size > part_size else 0,
                        part_size, info.lock_mode, info.lock_until, existing)


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
