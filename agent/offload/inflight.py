"""Several writes of one copy in flight at once, and the durable points behind them.

A single write in flight leaves the disk idle between requests (the next buffer is only
handed over once the previous write returned); with a few threads each writing its own
span at its own offset, the disk sees a queue. The reader still hashes the chunks in file
order and submits them in that order; the writes may finish in any order. Writer threads
are added only while every one is busy, so a source slower than the disk keeps one.

The durable-length rule is unchanged: a durable point is only reported for the contiguous
prefix whose every write had returned before the `fdatasync` was issued (the `frontier`),
and only after that `fdatasync` returned. Bytes written past a gap (an earlier span still
in flight, or one that failed) are never claimed. Every buffer goes back to the pool,
also after a failed write or a stop, and the first error is kept for the copy to raise.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agent import crashpoint
from agent.offload.buffers import BufferPool
from agent.offload.bulkthreads import lower_priority
from agent.offload.copyjob import CopyHooks
from agent.offload.directio import PartialWriter
from agent.offload.rehash import drop_cache


@dataclass(slots=True)
class _Span:
    start: int
    end: int
    digest: bytes  # BLAKE3 of the file's bytes [0, end)
    done: bool = False


@dataclass(slots=True)
class _Frontier:
    """Submitted spans in file order; `synced` is the last durable length reported."""

    spans: deque[_Span] = field(default_factory=deque)
    written: int = 0  # every byte below this has been written
    digest: bytes = b""  # BLAKE3 of [0, written)
    synced: int = 0
    last_sync: float = 0.0
    syncing: bool = False


class InFlightWrites:
    """Writer threads of one copy (up to `threads`, started as the writes back up):
    `submit` chunks in file order, then `close`. Both are called from the copy's thread."""

    def __init__(self, writer: PartialWriter, pool: BufferPool, hooks: CopyHooks, *,
                 start: int, every: int, interval_s: float, threads: int,
                 queued: int) -> None:
        self._writer, self._pool, self._hooks = writer, pool, hooks
        self._every, self._interval = every, interval_s
        self._q: queue.Queue[tuple[mmap.mmap, _Span] | None] = queue.Queue(maxsize=queued)
        self._lock = threading.Lock()
        # the hooks' counters expect one caller at a time per copy (plain `+=`)
        self._progress_lock = threading.Lock()
        self._f = _Frontier(written=start, synced=start, last_sync=time.monotonic())
        self.error: BaseException | None = None
        self._max_threads = max(1, threads)
        self._idle = 0  # writer threads waiting for a chunk
        self._threads: list[threading.Thread] = []
        self._add_thread()

    @property
    def writers(self) -> tuple[int, int]:
        """(writer threads started, of them waiting for a chunk)."""
        with self._lock:
            return len(self._threads), self._idle

    def _add_thread(self) -> None:
        t = threading.Thread(target=self._loop, name="offload-writer", daemon=True)
        self._threads.append(t)
        t.start()

    def submit(self, buf: mmap.mmap, n: int, end: int, digest: bytes) -> None:
        """Queue `buf[:n]` for the span ending at `end` (blocks while the queue is full;
        the buffer belongs to the writers from here on)."""
        span = _Span(end - n, end, digest)
        with self._lock:
            self._f.spans.append(span)
            busy = self._idle == 0
        # Another writer only when every one is busy: a copy whose source is slower than
        # the disk (a recorder on USB 2.0) keeps a single writer thread.
        if busy and len(self._threads) < self._max_threads:
            self._add_thread()
        self._q.put((buf, span))

    def close(self) -> None:
        """Wait for every submitted write to finish (or be skipped after an error)."""
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join()

    def _loop(self) -> None:
        lower_priority()  # inherited from the copy thread already; made sure of
        while (item := self._next()) is not None:
            buf, span = item
            written = False
            try:
                if self.error is None:
                    with memoryview(buf) as mv, mv[:span.end - span.start] as view:
                        self._writer.write(view, span.start)
                    written = True
            except BaseException as exc:
                self._failed(exc)  # keep draining so every buffer goes back
            finally:
                self._pool.release(buf)  # before a durable point: another read can use it
            if written:
                try:
                    with self._progress_lock:
                        self._hooks.progress(span.end - span.start)
                    self._written(span)
                except BaseException as exc:
                    self._failed(exc)

    def _next(self) -> tuple[mmap.mmap, _Span] | None:
        with self._lock:
            self._idle += 1
        try:
            return self._q.get()
        finally:
            with self._lock:
                self._idle -= 1

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc

    def _written(self, span: _Span) -> None:
        """Advance the frontier; the thread that moves it past a durable point syncs (again,
        while the writes that finished meanwhile make another one due)."""
        f = self._f
        with self._lock:
            span.done = True
            while f.spans and f.spans[0].done:
                head = f.spans.popleft()
                f.written, f.digest = head.end, head.digest
        while (point := self._claim_sync()) is not None:
            self._sync(*point)

    def _claim_sync(self) -> tuple[int, bytes, int] | None:
        f = self._f
        with self._lock:
            due = (f.written - f.synced >= self._every
                   or time.monotonic() - f.last_sync >= self._interval)
            if f.syncing or not due or f.written == f.synced or self.error is not None:
                return None
            f.syncing = True
            return f.written, f.digest, f.synced

    def _sync(self, length: int, digest: bytes, since: int) -> None:
        synced = since
        try:
            os.fdatasync(self._writer.fd)  # every write below `length` had returned
            drop_cache(self._writer.fd, since, length - since)
            if self.error is None:
                self._hooks.durable(length, digest, False)
                synced = length
                crashpoint.reached("copy_synced")
        finally:
            with self._lock:
                self._f.syncing = False
                self._f.synced, self._f.last_sync = synced, time.monotonic()
