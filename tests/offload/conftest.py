from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.offload import Offloader
from agent.settings import OffloadSettings
from agent.store.db import Database
from agent.store.ledger import Ledger

from .offload_helpers import DOCK_ID, SCHEMAS, FixedHours

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "dock.sqlite3"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    p = tmp_path / "evidence"
    p.mkdir()
    return p


@pytest.fixture
def source(tmp_path: Path) -> Path:
    p = tmp_path / "recorder"
    p.mkdir()
    return p


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    d = Database(db_path, SCHEMAS)
    yield d
    d.close()


def small_settings(**kw: Any) -> OffloadSettings:
    base = OffloadSettings(buffer_mib=1, buffers=3, fdatasync_every_mib=8, reserve_mib=0,
                           verify="always")
    return replace(base, **kw)


@pytest.fixture
async def make_offloader(db: Database, store: Path) -> AsyncIterator[Callable[..., Offloader]]:
    made: list[Offloader] = []

    def make(store_root: Path | None = None, deadline_h: float = 1e6, **kw: Any) -> Offloader:
        o = Offloader(db, Ledger(DOCK_ID), store_root or store, small_settings(**kw),
                      FixedHours(deadline_h), TZ)
        made.append(o)
        return o

    yield make
    for o in made:
        await o.close()


@pytest.fixture
async def fault_mount(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start hw_sim's fault-injecting FUSE view of a backing directory (root + fuse3)."""
    from hw_sim.fusemount import FaultMount, fuse_available

    if not fuse_available() or os.geteuid() != 0:
        pytest.skip("needs root and FUSE")
    mounts: list[FaultMount] = []

    async def start(backing: Path, **kw: Any) -> Path:
        mp = tmp_path / f"mnt{len(mounts)}"
        m = FaultMount(backing, mp, **kw)
        await m.start()
        mounts.append(m)
        return mp

    yield start
    for m in mounts:
        await m.stop()
        # after an "unplug" the mount answers EIO, ismount() says no and a plain
        # unmount is skipped: detach whatever is still listed
        if str(m.mountpoint) in Path("/proc/mounts").read_text().split():
            subprocess.run(["fusermount3", "-uz", str(m.mountpoint)], check=False)


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs as the evidence disk (root only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mp = tmp_path / "small"
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mp)], check=True)
    try:
        yield mp
    finally:
        subprocess.run(["umount", "-l", str(mp)], check=False)
