"""Several bays at once, the fair buffer pool, orphan partials, crash leftovers."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import blake3

from agent.offload import Offloader, pending
from agent.offload.buffers import BufferPool
from agent.offload.names import partial_name
from agent.offload.pending import JournalEntry
from agent.store.db import Database

from .offload_helpers import (
    check_store_invariants,
    ctx,
    make_file,
    make_footage,
    queue_waiters,
    rows,
)

MiB = 1 << 20


async def test_many_recorders_concurrently(
    make_offloader: Callable[..., Offloader], tmp_path: Path, store: Path, db_path: Path
) -> None:
    o = make_offloader(max_concurrent=3)
    sources = []
    for i in range(6):
        src = tmp_path / f"rec{i}"
        make_footage(src, [MiB + i, 2 * MiB, 17])
        sources.append(src)
    results = await asyncio.gather(*(
        o.offload(ctx(f"RC{i:06d}", session=f"s{i}"), src) for i, src in enumerate(sources)))
    assert all(r.outcome == "complete" and len(r.stored) == 3 for r in results)
    index = check_store_invariants(db_path, store)
    assert len(index) == 18 and len({r["recorder_serial"] for r in index}) == 6


async def test_max_concurrent_one_serialises(
    make_offloader: Callable[..., Offloader], tmp_path: Path, db_path: Path
) -> None:
    o = make_offloader(max_concurrent=1)
    a, b = tmp_path / "a", tmp_path / "b"
    make_footage(a, [3 * MiB, 3 * MiB])
    make_footage(b, [3 * MiB, 3 * MiB])
    await asyncio.gather(o.offload(ctx("RA000001"), a), o.offload(ctx("RB000001"), b))
    spans: dict[str, tuple[int, int]] = {}
    for r in rows(db_path, "SELECT recorder_serial, offload_start_us, offload_end_us"
                           " FROM evidence_files"):
        lo, hi = spans.get(r[0], (r[1], r[2]))
        spans[r[0]] = (min(lo, r[1]), max(hi, r[2]))
    (a0, a1), (b0, b1) = spans["RA000001"], spans["RB000001"]
    assert a1 <= b0 or b1 <= a0  # never overlapping


async def test_same_recorder_twice_at_once_is_refused(
    make_offloader: Callable[..., Offloader], source: Path
) -> None:
    make_footage(source, [4 * MiB])
    o = make_offloader()
    first = asyncio.create_task(o.offload(ctx(), source))
    await asyncio.sleep(0)
    second = await asyncio.gather(o.offload(ctx(), source), return_exceptions=True)
    assert "already being offloaded" in str(second[0])
    assert (await first).outcome == "complete"


def test_buffer_pool_serves_waiters_in_arrival_order() -> None:
    pool = BufferPool(4096, 1)
    stop = threading.Event()
    held = pool.acquire(stop)
    assert held is not None
    order: list[int] = []

    def take(i: int) -> None:
        buf = pool.acquire(stop)
        assert buf is not None
        order.append(i)
        pool.release(buf)

    threads = queue_waiters(pool, 5, take)
    pool.release(held)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert pool._made == 1  # never more buffers than the capacity
    stop.set()
    held = pool.acquire(threading.Event())
    assert pool.acquire(stop) is None  # a stopped waiter gives up


async def test_orphan_partials_removed_claimed_kept(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db: Database
) -> None:
    d = store / "U-3" / "RC000001" / "O-17" / "2026-09-21"
    d.mkdir(parents=True)
    orphan = d / ".partial-0123456789abcdef0123456789abcdef"
    orphan.write_bytes(b"left over")
    claimed_name = partial_name("RC000009", b"DCIM/X.MP4")
    claimed = d / claimed_name
    claimed.write_bytes(b"resumable")
    rel = "U-3/RC000001/O-17/2026-09-21/"
    entry = JournalEntry("RC000009", b"DCIM/X.MP4", rel + "X.MP4", rel + claimed_name, 100, 1)
    await db.write(lambda c: pending.put(c, entry))
    make_footage(source, [10])
    o = make_offloader()
    await o.offload(ctx(), source)
    assert not orphan.exists() and claimed.exists()
    assert o.orphans_removed == [orphan]


async def test_crash_after_rename_before_commit(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db: Database,
    db_path: Path,
) -> None:
    """The file is complete under its final name but was never recorded: re-hashed and
    committed, not copied again."""
    data = make_file(source, "DCIM/A.MP4", 2 * MiB)
    st = os.stat(source / "DCIM/A.MP4")
    rel_dir = "U-3/RC000001/O-17/2026-09-21"
    final = store / rel_dir / "A.MP4"
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    final.chmod(0o444)
    entry = JournalEntry("RC000001", b"DCIM/A.MP4", f"{rel_dir}/A.MP4",
                         f"{rel_dir}/{partial_name('RC000001', b'DCIM/A.MP4')}", len(data),
                         st.st_mtime_ns, len(data), blake3.blake3(data).digest(), True)
    await db.write(lambda c: pending.put(c, entry))
    s = await make_offloader().offload(ctx(), source)
    assert s.outcome == "complete" and s.bytes_copied == 0
    assert s.stored[0].resumed_from == len(data)
    assert s.stored[0].stored_relpath == f"{rel_dir}/A.MP4"
    check_store_invariants(db_path, store)
    assert rows(db_path, "SELECT * FROM offload_journal") == []


async def test_crash_after_rename_with_wrong_content_is_not_recorded(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db: Database,
    db_path: Path,
) -> None:
    data = make_file(source, "DCIM/A.MP4", MiB)
    st = os.stat(source / "DCIM/A.MP4")
    rel_dir = "U-3/RC000001/O-17/2026-09-21"
    final = store / rel_dir / "A.MP4"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"x" * len(data))
    entry = JournalEntry("RC000001", b"DCIM/A.MP4", f"{rel_dir}/A.MP4",
                         f"{rel_dir}/{partial_name('RC000001', b'DCIM/A.MP4')}", len(data),
                         st.st_mtime_ns, len(data), blake3.blake3(data).digest(), True)
    await db.write(lambda c: pending.put(c, entry))
    s = await make_offloader().offload(ctx(), source)
    assert s.outcome == "complete" and len(s.failed) == 1
    assert "does not match its journal" in s.failed[0].reason
    assert rows(db_path, "SELECT * FROM evidence_files") == []
    assert final.read_bytes() == b"x" * len(data)  # left alone for a human
