"""Dock disk full: refused up front when it clearly cannot fit, ENOSPC mid-copy handled."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.offload import Offloader

from .offload_helpers import LoggingWiper, check_store_invariants, ctx, make_file, rows

MiB = 1 << 20
NAME = b"DCIM/100BWC/A.MP4"


def partials(store: Path) -> list[str]:
    return [n for _d, _s, names in os.walk(store) for n in names if n.startswith(".partial-")]


async def test_admission_refuses_when_it_will_not_fit(
    make_offloader: Callable[..., Offloader], source: Path, small_store: Path, db_path: Path
) -> None:
    make_file(source, "DCIM/A.MP4", 5 * MiB)
    make_file(source, "DCIM/B.MP4", 4 * MiB)
    wiper = LoggingWiper(source)
    s = await make_offloader(small_store, wipe_after_offload=True).offload(
        ctx(), source, wiper=wiper)
    assert s.outcome == "storage_full" and "dock storage full" in s.detail
    assert s.bytes_needed == 9 * MiB and s.bytes_free <= 8 * MiB
    # admission is per file: A fits and is stored (then wiped), B stays on the recorder
    assert [f.name for f in s.stored] == [b"DCIM/A.MP4"] and wiper.deleted == [b"DCIM/A.MP4"]
    assert (source / "DCIM/B.MP4").exists() and partials(small_store) == []
    assert rows(db_path, "SELECT * FROM offload_journal") == []
    # the reserve counts too: 2 MiB fits in the 3 left, but not with a 2 MiB reserve
    os.unlink(source / "DCIM/B.MP4")
    make_file(source, "DCIM/C.MP4", 2 * MiB)
    s2 = await make_offloader(small_store, reserve_mib=2).offload(ctx(), source)
    assert s2.outcome == "storage_full" and s2.stored == []
    s3 = await make_offloader(small_store, reserve_mib=0).offload(ctx(), source)
    assert s3.outcome == "complete" and len(s3.stored) == 1


async def test_enospc_mid_copy(
    make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    tmp_path: Path, small_store: Path, db_path: Path,
) -> None:
    """Another writer fills the disk while the copy is stalled on a retried read."""
    backing = tmp_path / "backing"
    data = make_file(backing, NAME, 6 * MiB)
    mnt = await fault_mount(backing, eio=[(NAME, 3 * MiB)], eio_count=6)
    wiper = LoggingWiper(backing)
    o = make_offloader(small_store, read_retries=10, wipe_after_offload=True)
    task = asyncio.create_task(o.offload(ctx(), mnt, wiper=wiper))
    filler = small_store / "filler"
    for _ in range(12000):  # (up to 60 s) wait until the first 3 MiB sit in the partial
        found = [Path(d) / n for d, _s, names in os.walk(small_store) for n in names
                 if n.startswith(".partial-")]
        if found and found[0].stat().st_size >= 3 * MiB:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("copy did not start")
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    s = await task
    assert s.outcome == "storage_full" and "full" in s.detail
    assert s.stored == [] and wiper.deleted == []
    assert rows(db_path, "SELECT * FROM evidence_files") == []
    assert rows(db_path, "SELECT * FROM offload_journal") == []  # partial given back
    assert partials(small_store) == []
    assert (backing / NAME.decode()).read_bytes() == data  # recorder untouched
    # space back: the next docking stores it
    filler.unlink()
    s2 = await make_offloader(small_store).offload(ctx(session="s2"), backing)
    assert s2.outcome == "complete" and (small_store / s2.stored[0].stored_relpath).read_bytes() \
        == data
    check_store_invariants(db_path, small_store)


async def test_two_bays_cannot_both_take_the_same_space(
    make_offloader: Callable[..., Offloader], tmp_path: Path, small_store: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_file(a, "DCIM/A.MP4", 5 * MiB)
    make_file(b, "DCIM/B.MP4", 5 * MiB)
    o = make_offloader(small_store)
    results = await asyncio.gather(o.offload(ctx("RA000001"), a), o.offload(ctx("RB000001"), b))
    assert sorted(r.outcome for r in results) == ["complete", "storage_full"]
    refused = next(r for r in results if r.outcome == "storage_full")
    # refused at admission (space promised to the other bay), not by ENOSPC mid-copy
    assert refused.detail.startswith("dock storage full") and refused.bytes_copied == 0
