"""The offloader's bulk threads (copy and hash, store writes, read-back for verification)
run at a lower CPU priority than the event loop and the database writer; the buffer pool
wakes exactly the waiter it hands a buffer to."""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.offload import Offloader, buffers
from agent.offload.buffers import BufferPool
from agent.offload.bulkthreads import (
    BULK_NICE,
    BULK_POLICY,
    bulk_nice_target,
    lower_priority,
    thread_nice,
    thread_policy,
)
from agent.store.db import Database

from .offload_helpers import check_store_invariants, ctx, make_footage, queue_waiters

MiB = 1 << 20
DEADLINE_S = 120.0  # generous: the machine may be loaded


def _process_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, os.getpid())


async def test_bulk_threads_run_below_the_loop_and_the_database_writer(
    make_offloader: Callable[..., Offloader], source: Path, db: Database, store: Path,
    db_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, set[tuple[int, int]]] = {}
    lock = threading.Lock()
    acquire, release = BufferPool.acquire, BufferPool.release

    def note() -> None:
        name = threading.current_thread().name.rstrip("_0123456789")
        with lock:
            seen.setdefault(name, set()).add((thread_nice(), thread_policy()))

    def noting_acquire(self: BufferPool, stop: threading.Event) -> mmap.mmap | None:
        note()
        return acquire(self, stop)

    def noting_release(self: BufferPool, buf: mmap.mmap) -> None:
        note()
        release(self, buf)

    monkeypatch.setattr(BufferPool, "acquire", noting_acquire)
    monkeypatch.setattr(BufferPool, "release", noting_release)
    make_footage(source, [6 * MiB + 17, 3 * MiB])
    o = make_offloader(verify="always")  # 1 MiB buffers: several chunks, writes and reads
    result = await o.offload(ctx(), source)
    assert result.outcome == "complete" and len(result.stored) == 2
    assert len(check_store_invariants(db_path, store)) == 2

    target = bulk_nice_target()
    assert target == min(19, _process_nice() + BULK_NICE)
    # the copy threads, their writer threads and the verification's reader threads
    assert {"offload", "offload-writer", "offload-readback"} <= set(seen)
    assert all(got == {(target, BULK_POLICY)} for got in seen.values()), seen
    # the control path keeps the process's priority and the normal policy
    assert (thread_nice(), thread_policy()) == (_process_nice(), os.SCHED_OTHER)
    assert await db.write(lambda conn: (thread_nice(), thread_policy())) == (
        _process_nice(), os.SCHED_OTHER)


def test_lowering_is_idempotent_and_only_for_the_calling_thread() -> None:
    got: list[tuple[int, int]] = []

    def bulk() -> None:
        lower_priority()
        lower_priority()  # a second call (or an inherited value) changes nothing
        got.append((thread_nice(), thread_policy()))
        child = threading.Thread(target=lambda: got.append((thread_nice(), thread_policy())))
        child.start()  # a thread started by a bulk thread inherits its priority
        child.join(DEADLINE_S)

    t = threading.Thread(target=bulk)
    t.start()
    t.join(DEADLINE_S)
    assert got == [(bulk_nice_target(), BULK_POLICY)] * 2
    assert (thread_nice(), thread_policy()) == (_process_nice(), os.SCHED_OTHER)


def test_a_release_wakes_only_the_waiter_it_hands_the_buffer_to() -> None:
    pool = BufferPool(4096, 1)
    stop = threading.Event()
    held = pool.acquire(stop)
    assert held is not None
    served: list[int] = []

    def take(i: int) -> None:
        if pool.acquire(stop) is not None:
            served.append(i)

    threads = queue_waiters(pool, 4, take)
    pool.release(held)
    threads[0].join(DEADLINE_S)
    assert served == [0]  # the head got it, straight from the release
    assert len(pool._queue) == 3 and pool.outstanding == 1  # the rest still wait
    stop.set()  # the others give up and leave the queue
    for t in threads[1:]:
        t.join(DEADLINE_S)
    assert served == [0] and not pool._queue
    pool.release(held)  # no waiter left: back to the free list
    assert pool.outstanding == 0


class _Interrupted(threading.Event):
    """A waiter's event whose wait is interrupted by an exception once `armed` is set."""

    armed = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if _Interrupted.armed.wait(timeout):
            raise RuntimeError("interrupted")
        return False


def test_an_interrupted_waiter_never_keeps_a_place_or_a_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = BufferPool(4096, 1)
    stop = threading.Event()
    held = pool.acquire(stop)
    assert held is not None
    errors: list[BaseException] = []

    def take() -> None:
        try:
            pool.acquire(stop)
        except RuntimeError as exc:
            errors.append(exc)

    class InterruptedWaiter(buffers._Waiter):
        def __init__(self) -> None:
            super().__init__()
            self.ready = _Interrupted()

    monkeypatch.setattr(buffers, "_Waiter", InterruptedWaiter)
    t = threading.Thread(target=take)
    t.start()
    while len(pool._queue) < 1:
        threading.Event().wait(0.001)
    pool.release(held)  # handed to the waiter, which is then interrupted
    _Interrupted.armed.set()
    t.join(DEADLINE_S)
    assert errors and not pool._queue
    assert pool.outstanding == 0  # passed back, not lost
    assert pool.acquire(stop) is not None
