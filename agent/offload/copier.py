"""Copying one recorder file into a durable partial while hashing it (worker threads).

Runs entirely off the event loop. The calling worker thread reads the source into pooled
page-aligned buffers and feeds BLAKE3 in the same pass; a writer thread writes each
buffer to the partial file, calls `fdatasync` every `fdatasync_every` bytes (bounding
dirty memory on a small dock) and only then reports the new durable length, so the
journal never runs ahead of the disk. Pages already on disk are dropped from the cache.

Resume: when the journal has a durable prefix for this file and the source still has
the size and mtime it had when that prefix was written, the prefix is re-read from disk
and re-hashed; only a digest equal to the journal's lets the copy continue from there.
Otherwise the partial is discarded and the copy starts over (the reason is reported).

The source is never mapped (an unplug would raise SIGBUS) and never opened for writing.

Bound: a copy reads at most the size the file had when it was listed (what admission
counted against free space). A file that grew past it (a recording still being written, a
hostile device) is stopped there: the first bytes are stored as evidence of what was read,
flagged `file_changed` and never wiped; the recorder keeps the whole file for a later
docking. No source can make a copy eat the disk's reserve.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

import blake3

from agent import crashpoint
from agent.offload.buffers import BufferPool
from agent.offload.copyjob import CopyHooks, CopyJob, CopyResult, store_error
from agent.offload.directio import PartialWriter
from agent.offload.errors import CopyStopped, SourceGoneError, SourceReadError
from agent.offload.inflight import InFlightWrites
from agent.offload.rehash import drop_cache, sequential
from agent.offload.resume import INSTALLED, Opened, try_resume
from agent.offload.sourceread import SourceReader
from agent.offload.walk import open_source
from agent.store.durable import fsync_dir

GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO, errno.ESHUTDOWN, errno.ENOTCONN})


def writes_in_flight(depth: int, chunks: int) -> tuple[int, int]:
    """(writer threads, queued chunks) for a copy of `depth` buffers and `chunks` chunks
    left: one buffer is being read and hashed, up to three are being written (never more
    than there are chunks), the rest wait in the queue."""
    threads = max(1, min(3, depth - 2, chunks))
    return threads, max(1, depth - 1 - threads)


def _pread_checked(src: SourceReader, buf: mmap.mmap, offset: int, want: int) -> int:
    n = src.pread(buf, offset, want)
    if n == 0 and os.fstat(src.fd).st_size > offset:
        raise OSError(errno.EIO, "premature end of file")
    return n


def _more_after(fd: int, offset: int) -> bool:
    """Whether the source has bytes past `offset` (it grew beyond its admitted size)."""
    try:
        return bool(os.pread(fd, 1, offset)) or os.fstat(fd).st_size > offset
    except OSError:
        return False  # a read error past the admitted end changes nothing stored


class Copier:
    """One file's copy; `run()` blocks its worker thread until the partial is complete."""

    def __init__(
        self, job: CopyJob, hooks: CopyHooks, pool: BufferPool, stop: threading.Event
    ) -> None:
        self.job = job
        self.hooks = hooks
        self.pool = pool
        self.stop = stop
        self._writer_error: BaseException | None = None
        self._grew = False  # the source had more bytes than admission counted

    def run(self) -> CopyResult:
        job = self.job
        try:
            src = open_source(job.source_root, job.source.relpath)
        except OSError as exc:
            raise self._read_failure(exc, "opening") from exc
        try:
            st0 = os.fstat(src)
            identity = (st0.st_size, st0.st_mtime_ns)
            out, offset, hasher, restart, complete = self._prepare(identity)
            installed = out == INSTALLED
            try:
                if not complete:
                    hasher, offset = self._pump(src, out, offset, hasher)
                    self._finish(out, offset, hasher.digest())
            finally:
                if not installed:
                    os.close(out)
            st1 = os.fstat(src)
        finally:
            os.close(src)
        changed = None
        start = identity if job.resume is None or restart is not None else (
            job.resume.source_size, job.resume.source_mtime_ns)
        if self._grew:
            changed = (f"changed during copy: grew past its admitted size of {offset}"
                       f" bytes; the first {offset} bytes are stored")
        elif (st1.st_size, st1.st_mtime_ns) != start:
            changed = (f"size/mtime changed during copy: {start[0]}/{start[1]} ->"
                       f" {st1.st_size}/{st1.st_mtime_ns}")
        elif offset != st1.st_size:
            changed = f"read {offset} bytes from a file of size {st1.st_size}"
        resumed = 0 if job.resume is None or restart is not None else job.resume.durable_len
        return CopyResult(offset, hasher.digest(), changed, resumed, restart, installed)

    # -- resume ---------------------------------------------------------------------------

    def _prepare(
        self, identity: tuple[int, int]
    ) -> Opened:
        """Open the partial: (fd, offset, hasher, restart_reason, already_complete)."""
        r = self.job.resume
        reason: str | None = None
        if r is not None and (r.durable_len > 0 or r.complete):
            if (r.source_size, r.source_mtime_ns) != identity:
                reason = "source changed since the interrupted copy"
            else:
                got = try_resume(self.job, r, self.pool, self.stop, self.hooks)
                if isinstance(got, str):
                    reason = got
                else:
                    return got
        if r is not None or identity != (self.job.source.size, self.job.source.mtime_ns):
            self.hooks.reset(*identity)  # (a fresh row already holds exactly this)
        try:
            self.job.partial.unlink(missing_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(self.job.partial, flags, 0o600)
            fsync_dir(self.job.partial.parent)  # so a journalled partial survives power loss
        except OSError as exc:
            raise store_error(exc, "creating the partial file") from exc
        return out, 0, blake3.blake3(), reason, False

    # -- the pipeline ---------------------------------------------------------------------

    def _pump(
        self, src: int, out: int, offset: int, hasher: blake3.blake3
    ) -> tuple[blake3.blake3, int]:
        # At most `depth` buffers per copy: one being read and hashed, the rest queued or
        # being written (`writes_in_flight` of them at once).
        limit = self.job.source.size
        chunks = -(-(limit - offset) // self.pool.buffer_size)  # a small file: one writer
        threads, queued = writes_in_flight(self.job.depth, chunks)
        writer = PartialWriter(out, direct=self.job.direct)
        writes = InFlightWrites(writer, self.pool, self.hooks, start=offset,
                                every=self.job.fdatasync_every,
                                interval_s=self.job.fdatasync_interval_s,
                                threads=threads, queued=queued)
        sequential(src)
        reader = SourceReader(src, direct=self.job.direct)
        # Never more than admission counted (`limit`): a source that keeps growing (a
        # recording still being written, a hostile device) must not eat the disk's reserve.
        try:
            while writes.error is None:
                if self.stop.is_set():
                    raise CopyStopped("copy stopped")
                if offset >= limit:
                    self._grew = _more_after(src, offset)
                    break
                buf = self.pool.acquire(self.stop)
                if buf is None:
                    raise CopyStopped("copy stopped")
                try:
                    n = self._read(reader, buf, offset, min(len(buf), limit - offset))
                except BaseException:
                    self.pool.release(buf)
                    raise
                if n == 0:
                    self.pool.release(buf)
                    break
                with memoryview(buf) as mv, mv[:n] as chunk:
                    hasher.update(chunk)
                offset += n
                writes.submit(buf, n, offset, hasher.digest())
                drop_cache(src, offset - n, n)
        finally:
            writes.close()
            writer.close()
            reader.close()
        if writes.error is not None:
            err = writes.error
            if isinstance(err, OSError):
                raise store_error(err, "writing the partial file") from err
            raise err
        return hasher, offset

    def _finish(self, out: int, size: int, digest: bytes) -> None:
        try:
            os.fchmod(out, 0o444)
            os.fsync(out)
        except OSError as exc:
            raise store_error(exc, "flushing the partial file") from exc
        drop_cache(out, 0, 0)
        self.hooks.durable(size, digest, True)
        crashpoint.reached("copy_complete")

    def _read(self, src: SourceReader, buf: mmap.mmap, offset: int, want: int) -> int:
        """Read the next chunk (at most `want` bytes); EIO is retried, and so is an end of
        file that comes before the size `fstat` reports (a vanishing device can look like
        that)."""
        attempt = 0
        while True:
            try:
                return _pread_checked(src, buf, offset, want)
            except OSError as exc:
                if exc.errno in GONE_ERRNOS or self._root_gone():
                    raise SourceGoneError(f"recorder storage gone: {exc.strerror}") from exc
                if exc.errno != errno.EIO or attempt >= self.job.read_retries:
                    raise SourceReadError(
                        f"read error at offset {offset} after {attempt + 1} attempts:"
                        f" {exc.strerror}"
                    ) from exc
                attempt += 1
                if self.stop.wait(0.05 * attempt):
                    raise CopyStopped("copy stopped") from exc

    def _read_failure(self, exc: OSError, what: str) -> Exception:
        if exc.errno in GONE_ERRNOS or self._root_gone():
            return SourceGoneError(f"recorder storage gone while {what}: {exc.strerror}")
        return SourceReadError(f"{what} failed: {exc.strerror}")

    def _root_gone(self) -> bool:
        try:
            dev = os.stat(self.job.source_root).st_dev  # noqa: PTH116 - bytes path
        except OSError:
            return True
        return dev != self.job.source_dev
