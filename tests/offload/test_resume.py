"""Interrupted copies (cancel, unplug, read errors) and resuming them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest

from agent.offload import Offloader

from .offload_helpers import LoggingWiper, check_store_invariants, ctx, make_file, rows

MiB = 1 << 20
NAME = b"DCIM/100BWC/A.MP4"


async def until(pred: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Wait for an event (generous deadline: the machine may be loaded)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)
    assert pred(), what


async def wait_durable(db_path: Path, at_least: int, timeout: float = 120.0) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        conn = sqlite3.connect(db_path)
        try:
            r = conn.execute("SELECT durable_len FROM offload_journal").fetchone()
        finally:
            conn.close()
        if r is not None and r[0] >= at_least:
            return int(r[0])
        await asyncio.sleep(0.01)
    raise AssertionError("copy never became durable")


async def interrupted_copy(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path,
) -> tuple[Path, bytes, int, Offloader]:
    """Copy A.MP4 through a mount that stalls with EIO at 20 MiB, cancel it there."""
    backing = tmp_path / "backing"
    data = make_file(backing, NAME, 24 * MiB + 123)
    eio: list[int] = []
    mnt = await fault_mount(backing, eio=[(NAME, 20 * MiB)],
                            on_eio=lambda _name, offset: eio.append(offset))
    o = make_offloader(read_retries=20)
    task = asyncio.create_task(o.offload(ctx(), mnt))
    durable = await wait_durable(db_path, 16 * MiB)
    await until(lambda: len(eio) >= 2, "the failing read retried")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return backing, data, durable, o


def partial_path(store: Path, db_path: Path) -> Path:
    r = rows(db_path, "SELECT partial_relpath FROM offload_journal")
    assert len(r) == 1
    return store / str(r[0]["partial_relpath"])


async def test_cancel_keeps_durable_partial_then_resume(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing, data, durable, _ = await interrupted_copy(tmp_path, make_offloader, fault_mount,
                                                       db_path)
    assert durable == 16 * MiB
    j = rows(db_path, "SELECT * FROM offload_journal")[0]
    assert j["durable_len"] == durable and j["complete"] == 0
    assert bytes(j["prefix_blake3"]) == blake3.blake3(data[:durable]).digest()
    part = partial_path(store, db_path)
    assert part.name.startswith(".partial-") and part.stat().st_size >= durable
    assert rows(db_path, "SELECT * FROM evidence_files") == []
    # replug (plain directory this time) and resume from the durable point
    s = await make_offloader().offload(ctx(session="s2"), backing)
    assert s.outcome == "complete", s.detail
    assert s.stored[0].resumed_from == durable and s.restarted == []
    assert s.bytes_copied == len(data) - durable
    assert s.stored[0].blake3_hex == blake3.blake3(data).hexdigest()
    assert (store / s.stored[0].stored_relpath).read_bytes() == data
    assert not part.exists() and rows(db_path, "SELECT * FROM offload_journal") == []
    check_store_invariants(db_path, store)


async def test_corrupt_partial_prefix_is_detected(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing, data, _, _ = await interrupted_copy(tmp_path, make_offloader, fault_mount, db_path)
    part = partial_path(store, db_path)
    with open(part, "r+b") as fh:  # flip one byte inside the durable prefix
        fh.seek(5 * MiB)
        b = fh.read(1)
        fh.seek(5 * MiB)
        fh.write(bytes([b[0] ^ 0xFF]))
    s = await make_offloader().offload(ctx(session="s2"), backing)
    assert s.outcome == "complete"
    assert [p.reason for p in s.restarted] == [
        "partial prefix does not match its journalled BLAKE3"]
    assert s.stored[0].resumed_from == 0 and s.bytes_copied == len(data)
    assert s.stored[0].blake3_hex == blake3.blake3(data).hexdigest()
    check_store_invariants(db_path, store)


async def test_source_changed_since_interruption_restarts(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing, _, _, _ = await interrupted_copy(tmp_path, make_offloader, fault_mount, db_path)
    new = make_file(backing, NAME, 3 * MiB, seed=b"replaced")  # truncated and rewritten
    s = await make_offloader().offload(ctx(session="s2"), backing)
    assert [p.reason for p in s.restarted] == ["source changed since the interrupted copy"]
    assert (store / s.stored[0].stored_relpath).read_bytes() == new
    check_store_invariants(db_path, store)


async def test_unplug_mid_file_is_interrupted_then_resumes(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing = tmp_path / "backing"
    a = make_file(backing, NAME, 20 * MiB)
    b = make_file(backing, b"DCIM/100BWC/B.MP4", MiB)
    mnt = await fault_mount(backing, unplug=(NAME, 17 * MiB + 5))
    wiper = LoggingWiper(backing)
    s = await make_offloader(wipe_after_offload=True).offload(ctx(), mnt, wiper=wiper)
    assert s.outcome == "interrupted" and "gone" in s.detail
    assert s.stored == [] and s.failed == [] and wiper.deleted == []
    assert rows(db_path, "SELECT durable_len FROM offload_journal")[0][0] == 16 * MiB
    assert rows(db_path, "SELECT * FROM evidence_files") == []
    s2 = await make_offloader().offload(ctx(session="s2"), backing)
    assert s2.outcome == "complete"
    got = {f.name: f for f in s2.stored}
    assert got[NAME].resumed_from == 16 * MiB
    assert got[NAME].blake3_hex == blake3.blake3(a).hexdigest()
    assert got[b"DCIM/100BWC/B.MP4"].blake3_hex == blake3.blake3(b).hexdigest()
    check_store_invariants(db_path, store)


async def test_read_error_retried_then_file_fails_and_next_goes_on(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing = tmp_path / "backing"
    make_file(backing, NAME, 3 * MiB)
    b = make_file(backing, b"DCIM/100BWC/B.MP4", 2 * MiB)
    mnt = await fault_mount(backing, eio=[(NAME, 2 * MiB)])  # always fails
    wiper = LoggingWiper(backing)
    s = await make_offloader(read_retries=2, wipe_after_offload=True).offload(
        ctx(), mnt, wiper=wiper)
    assert s.outcome == "complete"
    assert [f.name for f in s.failed] == [NAME]
    assert "read error at offset 2097152 after 3 attempts" in s.failed[0].reason
    assert [f.name for f in s.stored] == [b"DCIM/100BWC/B.MP4"]
    assert (store / s.stored[0].stored_relpath).read_bytes() == b
    index = check_store_invariants(db_path, store)
    assert [bytes(r["source_name"]) for r in index] == [b"DCIM/100BWC/B.MP4"]
    assert wiper.deleted == [b"DCIM/100BWC/B.MP4"]
    assert (backing / NAME.decode()).exists()


async def test_files_unreadable_from_their_first_byte_leave_no_pending_copy(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    """Nothing of them is durable, so nothing is kept to resume: no pending row and no
    partial per unreadable file (a hostile recorder may hold many)."""
    backing = tmp_path / "backing"
    names = [b"DCIM/100BWC/E%d.MP4" % i for i in range(3)]
    for n in names:
        make_file(backing, n, MiB)
    b = make_file(backing, b"DCIM/100BWC/OK.MP4", MiB)
    mnt = await fault_mount(backing, eio=[(n, 0) for n in names])
    s = await make_offloader(read_retries=0).offload(ctx(), mnt)
    assert s.outcome == "complete" and sorted(p.name for p in s.failed) == names
    assert [(f.name, f.blake3_hex) for f in s.stored] == [
        (b"DCIM/100BWC/OK.MP4", blake3.blake3(b).hexdigest())]
    assert rows(db_path, "SELECT * FROM offload_journal") == []
    assert not [n for _d, _s, ns in os.walk(store) for n in ns if n.startswith(".partial-")]


async def test_transient_read_error_is_retried(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing = tmp_path / "backing"
    a = make_file(backing, NAME, 3 * MiB)
    mnt = await fault_mount(backing, eio=[(NAME, MiB + 7)], eio_count=2)
    s = await make_offloader(read_retries=2).offload(ctx(), mnt)
    assert s.failed == [] and s.stored[0].blake3_hex == blake3.blake3(a).hexdigest()
    check_store_invariants(db_path, store)


async def test_file_changing_during_copy_is_flagged_not_wiped(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    backing = tmp_path / "backing"
    data = make_file(backing, NAME, 2 * MiB)
    mnt = await fault_mount(backing, growing=[NAME], grow_step=256 * 1024)
    wiper = LoggingWiper(backing)
    s = await make_offloader(wipe_after_offload=True).offload(ctx(), mnt, wiper=wiper)
    assert len(s.changed) == 1 and "changed during copy" in (s.changed[0].changed or "")
    assert s.wiped == [] and wiper.deleted == []
    stored = (store / s.stored[0].stored_relpath).read_bytes()
    # what was read, bit for bit, and no more than admission counted (the listed size)
    assert data.startswith(stored) and len(stored) == MiB
    check_store_invariants(db_path, store)
    faults = rows(db_path, "SELECT code, detail FROM faults")
    assert len(faults) == 1 and faults[0]["code"] == "file_changed"
    flagged = rows(db_path, "SELECT source_changed FROM evidence_files")
    assert "changed during copy" in flagged[0]["source_changed"]
    assert os.path.exists(backing / NAME.decode())
    # A later docking with the recording now complete stores the whole file as a record of
    # its own (the flagged prefix stays as it is); only that complete, verified copy may
    # let the recorder's file be wiped.
    s2 = await make_offloader(wipe_after_offload=True).offload(ctx(session="s2"), backing,
                                                               wiper=wiper)
    (whole,) = s2.stored
    assert whole.changed is None and (store / whole.stored_relpath).read_bytes() == data
    assert s2.wiped == [NAME]
    first = rows(db_path, "SELECT size, source_changed, wiped FROM evidence_files ORDER BY id")
    assert first[0]["size"] == MiB and first[0]["source_changed"] and not first[0]["wiped"]


async def test_close_stops_a_running_copy_and_reports_progress(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path,
) -> None:
    backing = tmp_path / "backing"
    make_file(backing, NAME, 24 * MiB + 123)
    eio: list[int] = []
    mnt = await fault_mount(backing, eio=[(NAME, 20 * MiB)],
                            on_eio=lambda _name, offset: eio.append(offset))
    o = make_offloader(read_retries=20)
    seen: list[Any] = []
    task = asyncio.create_task(o.offload(ctx(), mnt, on_progress=seen.append))
    await wait_durable(db_path, 16 * MiB)

    def mid_file_tick() -> bool:
        return any(p.current_file == NAME and 0 < p.bytes_done < p.bytes_total
                   and p.rate_bps > 0 and p.eta_s is not None for p in seen)

    # stalled on the failing read, with a progress tick from the middle of the file
    await until(lambda: bool(eio) and mid_file_tick(), "a progress tick mid-file")
    await o.close()
    s = await task
    assert s.outcome == "interrupted" and s.stored == []
    assert rows(db_path, "SELECT durable_len FROM offload_journal")[0][0] == 16 * MiB
    mid = [p for p in seen if p.current_file == NAME and 0 < p.bytes_done < p.bytes_total]
    assert mid and mid[0].files_total == 1 and mid[0].rate_bps > 0 and mid[0].eta_s is not None
    assert seen[-1].current_file is None
