"""The state database on a disk filled to the last byte (a real tmpfs, real SQLite): custody
records still get written (the database's reserve is given back), a disk full beyond that
is a clear `DatabaseFull` and never wedges the connection, and the reserve comes back with
the space."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database, DatabaseFull
from agent.store.faults import FaultCode, open_faults, raise_fault
from agent.store.ledger import Ledger

from .store_helpers import DOCK

MiB = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mp = tmp_path / "disk"
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mp)], check=True)
    try:
        yield mp
    finally:
        subprocess.run(["umount", "-l", str(mp)], check=False)


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def fault(db: Database, ledger: Ledger, n: int) -> None:
    # a recorder-sized detail: the write needs fresh pages on the disk
    db.write_sync(lambda c: raise_fault(c, ledger, FaultCode.DOCK_STORAGE_FULL, f"full {n}",
                                        recorder=f"BWC{n:05d}",
                                        detail={"files": ["x" * 200] * 200}))


def test_custody_records_are_written_on_a_full_disk(disk: Path) -> None:
    db = Database(disk / "state" / "dock.sqlite3", ALL_SCHEMAS, reserve_bytes=2 * MiB)
    ledger = Ledger(DOCK)
    reserve = disk / "state" / "dock.sqlite3.reserve"
    try:
        assert reserve.stat().st_size == 2 * MiB
        fill(disk / "filler")
        fault(db, ledger, 1)  # fits only because the reserve was given back
        assert not reserve.exists()
        assert [f.recorder for f in db.read_sync(open_faults)] == ["BWC00001"]
        # full beyond the reserve: a clear error, and the transaction is rolled back
        fill(disk / "filler2")
        with pytest.raises(DatabaseFull, match="disk full"):
            for n in range(2, 200):
                fault(db, ledger, n)
        written = len(db.read_sync(open_faults))
        # the connection is not wedged: with space back, writing goes on, reserve held again
        (disk / "filler").unlink()
        (disk / "filler2").unlink()
        fault(db, ledger, 500)
        assert len(db.read_sync(open_faults)) == written + 1
        assert reserve.stat().st_size == 2 * MiB
        head = db.read_sync(lambda c: c.execute("SELECT count(*) FROM ledger").fetchone()[0])
        assert head == written + 1  # every ledger entry committed, none half-written
    finally:
        db.close()
