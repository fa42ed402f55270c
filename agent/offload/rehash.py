"""Hashing bytes already on a disk: a stored file re-read for verification, a partial's
durable prefix before a resume, a recorder file to tell what it holds. The page cache is
dropped first where the question is what the disk holds."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import blake3

from agent.offload.buffers import BufferPool
from agent.offload.errors import CopyStopped


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
    """Re-read a stored file from the disk (cache dropped first) and compare its hash."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot open stored file: {exc.strerror}"
    try:
        drop_cache(fd, 0, 0)
        hasher, n = hash_fd(fd, pool, stop)
    except OSError as exc:
        return False, f"cannot read stored file: {exc.strerror}"
    finally:
        os.close(fd)
    if n != size:
        return False, f"stored size {n} != recorded {size}"
    if hasher.digest() != digest:
        return False, f"stored BLAKE3 {hasher.hexdigest()} != recorded {digest.hex()}"
    return True, "re-read from disk; BLAKE3 matches"
