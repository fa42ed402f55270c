"""A full evidence disk never wedges the dock (the real agent, a small real filesystem for
state and store, FUSE fault storage, a real broker).

1. A recording that keeps growing while it is copied is stopped at the size admission
   counted: stored as read, flagged `file_changed` (the fault reaches MQTT), never wiped;
   the disk keeps its reserve, and the recorder in the next bay is offloaded as usual.
2. Another writer fills the disk to the last byte in the middle of a copy: the session
   ends cleanly with `dock_storage_full` on MQTT (the database gives back its reserved
   room to record it), the partial file is gone, the other bays go on; when space returns
   the fault clears, and the agent stops with exit code 0.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .checks import all_ledger_delivered, ledger_events
from .conftest import DOCK_ID, RigFactory
from .harness import Rig, check_stored_exactly, expected, until

DISK_MIB = 64


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs holding the agent's state directory and evidence store."""
    if os.geteuid() != 0 or not fuse_available():
        pytest.skip("needs root (tmpfs mount) and FUSE (growing-file fault)")
    mp = tmp_path / "disk"
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m,mode=0755", "tmpfs",
                    str(mp)], check=True)
    try:
        yield mp
    finally:
        subprocess.run(["umount", "-l", str(mp)], check=False)


def officer(n: int) -> OfficerRecord:
    return OfficerRecord(f"700{n}001", f"Officer {n}", "U07", "Unit 7")


def faults_on_mqtt(central: Central, code: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ledger_events(central)
            if e["payload"]["kind"] == "fault" and e["payload"]["data"]["code"] == code]


def cleared_on_mqtt(central: Central, code: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in ledger_events(central)
            if e["payload"]["kind"] == "fault_cleared" and e["payload"]["data"]["code"] == code]


async def bay_state(rig: Rig, serial: str) -> str | None:
    code, out, _ = await rig.dockctl("status", "--json")
    if code != 0:
        return None
    for b in json.loads(out)["bays"]:
        if b.get("serial") == serial:
            return str(b["state"])
    return None


def fill(path: Path) -> None:
    """Write until the disk refuses (ENOSPC) even a small block: nothing is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.timeout(600)
async def test_full_disk_never_wedges_the_agent(make_rig: RigFactory, broker: Broker,
                                                central: Central, small_disk: Path) -> None:
    rig = make_rig(broker.settings(DOCK_ID),
                   offload={"reserve_mib": 2, "read_retries": 20, "wipe_after_offload": True})
    rig.state_dir = small_disk / "state"
    rig.store_dir = small_disk / "evidence"
    rig.write_config()
    # Listed (and admitted) at 40 MiB, the recording grows to 80 MiB while it is read:
    # without a bound the copy would take the 64 MiB disk to its last byte.
    growing = RecorderSpec("BWC70001", officer=officer(1),
                           footage=FootageSpec(sizes=(80 * MIB,), seed=71),
                           faults=Faults(growing=(0,), grow_step_bytes=256 * 1024))
    neighbour = RecorderSpec("BWC70002", officer=officer(2),
                             footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=72))
    # Reads stall on a retried EIO at 3 MiB of 6: the disk is filled meanwhile.
    stalled = RecorderSpec("BWC70003", officer=officer(3),
                           footage=FootageSpec(sizes=(6 * MIB,), seed=73),
                           faults=Faults(eio_at=((0, 3 * MIB),), eio_count=19))
    late = RecorderSpec("BWC70004", officer=officer(4),
                        footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=74))

    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()

    # -- 1. a growing recording is bounded; the next bay goes on
    await rig.plug("1", growing)
    # the next bay docks while the copy is well under way (its written bytes are off the
    # free space, and no longer promised to it as well)
    await until(lambda: rig.partial_bytes() > 16 * MIB or bool(rig.stored(growing.serial)),
                "the growing file's copy under way", agent=rig.agent)
    await rig.plug("2", neighbour)
    await rig.wait_released(growing.serial, timeout=180)
    await rig.wait_released(neighbour.serial, timeout=180)
    (row,) = rig.stored(growing.serial)
    assert row.size == 40 * MIB and not row.wiped  # what admission counted, kept
    data = (rig.root / "recorders").rglob("*")
    assert any(p.is_file() and p.stat().st_size == 80 * MIB for p in data)  # untouched
    flagged = rig.query("SELECT source_changed FROM evidence_files WHERE id = ?", (row.id,))
    assert "grew past its admitted size" in flagged[0][0]
    await until(lambda: bool(faults_on_mqtt(central, "file_changed")),
                "file_changed fault on MQTT", agent=rig.agent)
    check_stored_exactly(rig, neighbour, await expected(neighbour))
    assert rig.partial_bytes() == 0
    assert free_bytes(small_disk) > 2 * MIB  # the offload reserve was never touched
    assert await bay_state(rig, growing.serial) == "released"

    # -- 2. the disk fills to the last byte mid-copy: clean fault, nothing left behind
    await rig.plug("3", stalled)
    await until(lambda: rig.partial_bytes() >= 3 * MIB, "the stalled copy holds 3 MiB",
                agent=rig.agent)
    filler = small_disk / "filler"
    fill(filler)
    await until(lambda: bool(faults_on_mqtt(central, "dock_storage_full")),
                "dock_storage_full fault on MQTT", agent=rig.agent, timeout=120)
    await until(lambda: rig.partial_bytes() == 0, "the partial file removed", agent=rig.agent)
    assert await bay_state(rig, stalled.serial) == "failed"
    assert rig.stored(stalled.serial) == []
    assert not rig.query("SELECT 1 FROM offload_journal")
    # the recorder in the next bay is handled as well: refused for space, not crashed
    await rig.plug("4", late)
    await until(lambda: len(faults_on_mqtt(central, "dock_storage_full")) >= 2,
                "the next bay refused for space", agent=rig.agent, timeout=120)
    assert await bay_state(rig, late.serial) == "failed"

    # -- space returns: the faults clear; everything recorded reached the central side
    filler.unlink()
    await until(lambda: len(cleared_on_mqtt(central, "dock_storage_full")) >= 2,
                "dock_storage_full cleared on MQTT", agent=rig.agent, timeout=120)
    assert not rig.query("SELECT 1 FROM faults WHERE code = 'dock_storage_full'"
                         " AND cleared_us IS NULL")
    await until(lambda: all_ledger_delivered(rig, central), "every ledger entry delivered",
                agent=rig.agent, timeout=120)
    assert (rig.state_dir / "dock.sqlite3.reserve").exists()  # held again
    # the virtual dock keeps answering while the agent stops (it runs on this loop)
    assert await asyncio.to_thread(rig.agent.terminate) == 0, rig.agent.log_tail()
    assert "Traceback" not in rig.agent.log_text()
