"""Durable points are time- and size-based: a recorder pulled out mid-file resumes from
the last point even when the size bound (`fdatasync_every_mib`) was never reached, because
the copy also became durable every `fdatasync_interval_s`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3

from agent.offload import Offloader

from .offload_helpers import check_store_invariants, ctx, make_file, rows

MiB = 1 << 20
NAME = b"DCIM/100BWC/A.MP4"


async def pulled_then_replugged(tmp_path: Path, make_offloader: Callable[..., Offloader],
                                fault_mount: Callable[..., Any], db_path: Path,
                                interval_s: float) -> tuple[int, bytes, Any]:
    backing = tmp_path / f"backing-{interval_s:g}"
    data = make_file(backing, NAME, 20 * MiB)
    # A slow source (a read error retried at every MiB, as a flaky USB link does), pulled
    # out at 17 MiB: far below the size bound of 4096 MiB.
    mnt = await fault_mount(backing, eio=[(NAME, k * MiB) for k in range(1, 17)],
                            eio_count=1, unplug=(NAME, 17 * MiB + 5))
    s = await make_offloader(fdatasync_every_mib=4096, fdatasync_interval_s=interval_s,
                             read_retries=3).offload(ctx(), mnt)
    assert s.outcome == "interrupted"
    durable = rows(db_path, "SELECT durable_len FROM offload_journal")[0][0]
    s2 = await make_offloader(fdatasync_every_mib=4096).offload(ctx(session="s2"), backing)
    assert s2.outcome == "complete", s2.detail
    (stored,) = s2.stored
    assert stored.blake3_hex == blake3.blake3(data).hexdigest()
    return int(durable), data, stored


async def test_time_based_points_make_a_pull_resume_mid_file(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path, store: Path,
) -> None:
    durable, data, stored = await pulled_then_replugged(
        tmp_path, make_offloader, fault_mount, db_path, interval_s=0.05)
    assert 0 < durable <= 17 * MiB
    assert stored.resumed_from == durable  # resumed mid-file, not from byte 0
    assert (store / stored.stored_relpath).read_bytes() == data
    check_store_invariants(db_path, store)


async def test_without_them_the_same_pull_starts_again_from_zero(
    tmp_path: Path, make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    db_path: Path,
) -> None:
    durable, _, stored = await pulled_then_replugged(
        tmp_path, make_offloader, fault_mount, db_path, interval_s=600.0)
    assert durable == 0 and stored.resumed_from == 0
