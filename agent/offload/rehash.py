"""Hashing bytes already on a disk: a stored file re-read for verification, a partial's
durable prefix before a resume, a recorder file to tell what it holds. The page cache is
dropped first where the question is what the disk holds."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import blake3

from agent.offload.buffers import BufferPool
from agent.offload.errors import CopyStopped
from agent.offload.readback import ReadBack


def drop_cache(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError):  # advice only
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def sequential(fd: int) -> None:
    """The file is read once, front to back: a larger kernel read-ahead window keeps
    reads queued at the disk while the previous chunk is hashed."""
    with contextlib.suppress(OSError):  # only a hint
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def read_ahead(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError):  # only a hint
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def hash_fd(fd: int, pool: BufferPool, stop: threading.Event, length: int | None = None) -> tuple[
    blake3.blake3, int
]:
    """BLAKE3 of the first `length` bytes of `fd` (all when None), read from offset 0."""
    hasher = blake3.blake3()
    buf = pool.acquire(stop)
    if buf is None:
        raise CopyStopped("stopped")
    done = 0
    try:
        with memoryview(buf) as mv:
            while length is None or done < length:
                if stop.is_set():
                    raise CopyStopped("stopped")
                want = len(mv) if length is None else min(len(mv), length - done)
                with mv[:want] as part:
                    n = os.preadv(fd, [part], done)
                if n == 0:
                    break
                # Start reading the next chunk in the kernel while this one is hashed, so
                # a cold re-read (verify, resume) keeps the disk busy instead of alternating.
                read_ahead(fd, done + n, len(mv))
                with mv[:n] as chunk:
                    hasher.update(chunk)
                done += n
    finally:
        pool.release(buf)
    return hasher, done


def verify_stored(
    path: Path, size: int, digest: bytes, pool: BufferPool, stop: threading.Event
) -> tuple[bool, str]:
    """Re-read a stored file from the disk and compare its hash: with O_DIRECT and reads in
    flight (`ReadBack`), or, where the filesystem refuses O_DIRECT, buffered after its
    cached pages were dropped."""
    try:
        got = _hash_from_disk(path, pool, stop)
    except OSError as exc:
        return False, f"cannot read stored file: {exc.strerror}"
    if isinstance(got, str):
        return False, got
    hasher, n = got
    if n != size:
        return False, f"stored size {n} != recorded {size}"
    if hasher.digest() != digest:
        return False, f"stored BLAKE3 {hasher.hexdigest()} != recorded {digest.hex()}"
    return True, "re-read from disk; BLAKE3 matches"


def _hash_from_disk(path: Path, pool: BufferPool, stop: threading.Event
                    ) -> tuple[blake3.blake3, int] | str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            return f"cannot open stored file: {exc.strerror}"
    else:
        try:
            return ReadBack(fd, pool, stop).run()
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a direct read refused: read it buffered
                raise
        finally:
            os.close(fd)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return f"cannot open stored file: {exc.strerror}"
    try:
        drop_cache(fd, 0, 0)
        return hash_fd(fd, pool, stop)
    finally:
        os.close(fd)
