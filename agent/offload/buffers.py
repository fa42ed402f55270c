"""Page-aligned copy buffers shared by every running offload, handed out in FIFO order.

`mmap.mmap(-1, n)` memory is page-aligned (a large `bytearray` is not, and reads into it
are several times slower). The pool is also the fairness mechanism between bays: every
chunk a copy reads needs a buffer, waiting copies are served strictly first-come
first-served, and a copy asks again for each chunk - so when offloads compete, their
chunks interleave round-robin and each gets an equal share of the disk bandwidth, while
the total memory is bounded by the pool's capacity. Buffers are created lazily.

The pool's memory does not grow with the number of bays: up to `FULL_COPIES` copies at
once (or one copy's `buffers`) every buffer has `buffer_mib`; when more copies run at once,
each buffer is made smaller instead of adding memory (`pool_shape`), and no larger than
`MANY_COPIES_BUFFER`: recorders on USB 2.0 (30-42 MB/s each) gain nothing from large
chunks (512 KiB is 15 ms of one such link), the disk still gets large writes in total
because many copies write at once, and the agent's memory stays within its budget
(25 bays: 26 buffers of 512 KiB, 13 MiB, instead of 26 of 768 KiB; 256 KiB halved the
memory again but cost about a fifth more CPU per GiB in syscalls and chunk handling).
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections import deque

MIN_BUFFER = 256 << 10
CHUNK = 64 << 10  # buffer sizes are multiples of this (page- and direct-I/O aligned)


FULL_COPIES = 4  # up to this many copies at once, every buffer keeps its configured size
MANY_COPIES_BUFFER = 2 * MIN_BUFFER  # the largest buffer when more copies than that run at once
STOP_POLL_S = 0.1  # how often a waiting thread looks at its stop flag


def pool_shape(buffer_mib: int, buffers: int, max_concurrent: int) -> tuple[int, int]:
    """(buffer size, capacity) of the shared pool: one buffer plus one for each copy that
    may run, in a memory budget that does not grow with the number of copies."""
    capacity = max(buffers, max_concurrent + 1)
    budget = (buffer_mib << 20) * max(buffers, FULL_COPIES + 1)
    size = min(buffer_mib << 20, budget // capacity // CHUNK * CHUNK)
    if max_concurrent > FULL_COPIES:
        size = min(size, MANY_COPIES_BUFFER)
    return max(MIN_BUFFER, size), capacity


class _Waiter:
    """One thread waiting for a buffer: woken alone, with the buffer already its own."""

    __slots__ = ("buf", "ready")

    def __init__(self) -> None:
        self.buf: mmap.mmap | None = None
        self.ready = threading.Event()


class BufferPool:
    """A released buffer goes straight to the longest waiting thread, and only that thread
    is woken. (A shared condition woken for every release made each of 25 waiting copies
    wake up and take the GIL just to see that it was not its turn: a quarter to a third of
    the agent's context switches under 25 bays.)"""

    def __init__(self, buffer_size: int, capacity: int) -> None:
        self.buffer_size = buffer_size
        self.capacity = capacity
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []
        self._made = 0
        self._queue: deque[_Waiter] = deque()  # only while no buffer is free

    def acquire(self, stop: threading.Event) -> mmap.mmap | None:
        """Wait for a buffer in arrival order; None when `stop` is set first."""
        with self._lock:
            if not self._queue:
                if self._free:
                    return self._free.pop()
                if self._made < self.capacity:
                    self._made += 1
                    return mmap.mmap(-1, self.buffer_size)
            waiter = _Waiter()
            self._queue.append(waiter)
        try:
            while not waiter.ready.wait(STOP_POLL_S):
                if stop.is_set():
                    break
        except BaseException:
            self._leave(waiter)  # interrupted: keep neither a place nor a buffer
            raise
        with self._lock:
            if waiter.buf is None:  # stopped before one was handed over: leave the queue
                self._queue.remove(waiter)
            return waiter.buf

    def _leave(self, waiter: _Waiter) -> None:
        with self._lock:
            buf = waiter.buf
            if buf is None:
                self._queue.remove(waiter)
                return
        self.release(buf)

    @property
    def outstanding(self) -> int:
        """Buffers handed out and not yet given back."""
        with self._lock:
            return self._made - len(self._free)

    def release(self, buf: mmap.mmap) -> None:
        with self._lock:
            if not self._queue:
                self._free.append(buf)
                return
            waiter = self._queue.popleft()
            waiter.buf = buf
        waiter.ready.set()

    def close(self) -> None:
        with self._lock:
            for buf in self._free:
                with contextlib.suppress(BufferError):  # still viewed: freed by the GC
                    buf.close()
            self._free.clear()
