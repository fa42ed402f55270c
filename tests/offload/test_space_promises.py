"""Admission counts what each running offload still has to write: bytes already on the
disk are off the free space, and must not also stay promised (a long copy would otherwise
keep every other bay out twice over)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.offload import Offloader

from .offload_helpers import ctx, make_file

MiB = 1 << 20
NAME = b"DCIM/100BWC/A.MP4"


def partial_size(store: Path) -> int:
    return sum(os.lstat(Path(d) / n).st_size for d, _s, names in os.walk(store)
               for n in names if n.startswith(".partial-"))


async def test_a_second_bay_fits_beside_a_copy_under_way(
    make_offloader: Callable[..., Offloader], fault_mount: Callable[..., Any],
    tmp_path: Path, small_store: Path,
) -> None:
    backing = tmp_path / "backing"
    make_file(backing, NAME, 5 * MiB)
    # the copy stalls on retried reads at 4 MiB of 5 (15 failures, 20 retries allowed)
    mnt = await fault_mount(backing, eio=[(NAME, 4 * MiB)], eio_count=15)
    other = tmp_path / "other"
    make_file(other, "DCIM/B.MP4", 2 * MiB)
    o = make_offloader(small_store, read_retries=20)
    first = asyncio.create_task(o.offload(ctx("RA000001"), mnt))
    for _ in range(6000):
        if partial_size(small_store) >= 4 * MiB:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the first copy did not reach 4 MiB")
    # 8 MiB disk: 4 MiB written, 1 MiB still promised to the first bay, 2 MiB needed here
    second = await o.offload(ctx("RB000001"), other)
    assert second.outcome == "complete", second.detail
    assert (await first).outcome == "complete"
