"""Resuming a copy from what an interrupted run left: a partial whose durable prefix still
hashes to what its pending row says, or a file already renamed to its final name whose
commit never happened. Anything else is not trusted: the copy starts over."""

from __future__ import annotations

import os
import threading

import blake3

from agent.offload.buffers import BufferPool
from agent.offload.copyjob import CopyHooks, CopyJob, store_error
from agent.offload.errors import StoreConflictError
from agent.offload.pending import JournalEntry
from agent.offload.rehash import drop_cache, hash_fd

INSTALLED = -1  # pseudo fd: the complete file is already under its final name
# (fd, offset, hasher, restart reason, already complete)
Opened = tuple[int, int, blake3.blake3, str | None, bool]


def try_resume(
    job: CopyJob, r: JournalEntry, pool: BufferPool, stop: threading.Event, hooks: CopyHooks
) -> Opened | str:
    """Reopen the partial of `r` when its durable prefix re-hashes from disk to the row's
    BLAKE3 (bytes past it are cut off); otherwise why the copy starts over."""
    mode = os.O_RDONLY if r.complete else os.O_RDWR
    try:
        if not r.complete:  # a crash between fchmod 0444 and the journal update
            job.partial.chmod(0o600)
        out = os.open(job.partial, mode | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if r.complete:
            return check_installed(job, r, pool, stop, hooks)
        return "partial file missing"
    except OSError as exc:
        raise store_error(exc, "opening the partial file") from exc
    try:
        if os.fstat(out).st_size < r.durable_len:
            os.close(out)
            return "partial shorter than its journalled durable length"
        drop_cache(out, 0, 0)  # re-hash what the disk holds, not what the cache holds
        hasher, n = hash_fd(out, pool, stop, r.durable_len)
        if n != r.durable_len or hasher.digest() != r.prefix_blake3:
            os.close(out)
            return "partial prefix does not match its journalled BLAKE3"
        if not r.complete:
            os.ftruncate(out, r.durable_len)  # bytes past the durable point are untrusted
    except OSError as exc:
        os.close(out)
        raise store_error(exc, "resuming the partial file") from exc
    except BaseException:
        os.close(out)
        raise
    hooks.resumed(r.durable_len)
    return out, r.durable_len, hasher, None, r.complete


def check_installed(
    job: CopyJob, r: JournalEntry, pool: BufferPool, stop: threading.Event, hooks: CopyHooks
) -> Opened | str:
    """A crash after the rename but before the commit: re-hash the installed file."""
    try:
        fd = os.open(job.final, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return "partial file missing"
    try:
        drop_cache(fd, 0, 0)
        hasher, n = hash_fd(fd, pool, stop)
    finally:
        os.close(fd)
    if n != r.durable_len or hasher.digest() != r.prefix_blake3:
        raise StoreConflictError(
            f"{job.final} exists uncommitted and does not match its journal; left alone"
        )
    hooks.resumed(n)
    return INSTALLED, n, hasher, None, True
