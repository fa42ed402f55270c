"""Reading a stored file back from the disk for verification: O_DIRECT, several reads in
flight, hashed in file order.

O_DIRECT reads never come from the page cache, so the hash is of what the disk returns
(and reading the file leaves nothing cached behind it). With a single read in flight the
disk idles while each chunk is hashed, and a verify that overlaps the next file's copy
gets a poor share of the disk; `READS_IN_FLIGHT` reader threads keep a queue at the disk
while the calling thread hashes the chunks in order.

Buffers come from the offload's shared pool one chunk at a time (the pool stays the one
bound on memory and its FIFO keeps the copies that run meanwhile served fairly); at most
`READS_IN_FLIGHT + 1` are held at once. Offsets are handed out in the order buffers were
obtained, so the next chunk to hash always has a buffer: no wait can deadlock.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass, field

import blake3

from agent.offload.buffers import BufferPool
from agent.offload.bulkthreads import lower_priority
from agent.offload.errors import CopyStopped

READS_IN_FLIGHT = 2
_POLL_S = 0.1  # how often waiting threads look at the stop flag


@dataclass(slots=True)
class _Shared:
    next_offset: int = 0
    ready: dict[int, tuple[mmap.mmap, int]] = field(default_factory=dict)
    error: OSError | None = None
    readers: int = 0  # reader threads still running


class ReadBack:
    """BLAKE3 of a whole file open with O_DIRECT (`fd`), read with reads in flight."""

    def __init__(self, fd: int, pool: BufferPool, stop: threading.Event) -> None:
        self._fd, self._pool, self._stop = fd, pool, stop
        self._halt = threading.Event()  # stop, or the hash is finished: readers leave
        self._slots = threading.Semaphore(READS_IN_FLIGHT + 1)
        self._cond = threading.Condition()
        self._s = _Shared(readers=READS_IN_FLIGHT)

    def run(self) -> tuple[blake3.blake3, int]:
        threads = [threading.Thread(target=self._read_loop, name="offload-readback",
                                    daemon=True) for _ in range(READS_IN_FLIGHT)]
        for t in threads:
            t.start()
        try:
            return self._hash_in_order()
        finally:
            self._halt.set()
            for t in threads:
                t.join()
            for buf, _ in self._s.ready.values():
                self._pool.release(buf)
            self._s.ready.clear()

    def _hash_in_order(self) -> tuple[blake3.blake3, int]:
        hasher, size, done = blake3.blake3(), self._pool.buffer_size, 0
        while True:
            buf, n = self._next(done)
            try:
                with memoryview(buf) as mv, mv[:n] as chunk:
                    hasher.update(chunk)
            finally:
                self._pool.release(buf)
                self._slots.release()
            done += n
            if n < size:  # end of file (O_DIRECT reads of a regular file are not short)
                return hasher, done

    def _next(self, offset: int) -> tuple[mmap.mmap, int]:
        s = self._s
        with self._cond:
            while offset not in s.ready:
                if s.error is not None:
                    raise s.error
                if self._stop.is_set() or s.readers == 0:
                    raise CopyStopped("stopped")
                self._cond.wait(_POLL_S)
            return s.ready.pop(offset)

    def _read_loop(self) -> None:
        lower_priority()  # inherited from the copy thread already; made sure of
        s, size = self._s, self._pool.buffer_size
        try:
            while not self._halt.is_set() and not self._stop.is_set():
                if not self._slots.acquire(timeout=_POLL_S):
                    continue
                buf = self._pool.acquire(self._halt)
                if buf is None:
                    self._slots.release()
                    return
                with self._cond:  # offsets in the order the buffers were obtained
                    offset = s.next_offset
                    s.next_offset += size
                try:
                    with memoryview(buf) as mv:
                        n = os.preadv(self._fd, [mv], offset)
                except OSError as exc:
                    self._pool.release(buf)
                    self._slots.release()
                    with self._cond:
                        s.error = s.error or exc
                        self._cond.notify_all()
                    return
                with self._cond:
                    s.ready[offset] = (buf, n)
                    self._cond.notify_all()
                if n < size:
                    return  # the end of the file: nothing more to read
        finally:
            with self._cond:
                s.readers -= 1
                self._cond.notify_all()
