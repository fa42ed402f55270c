"""The serial a recorder's firmware claims is checked against the USB serial the dock
sees, and one serial is docked in one bay at a time: a recorder that fails either check is
refused before anything is unlocked or wiped, and the refusal is in the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.devices.events import DirectoryStorage, StorageAppeared
from agent.session.state_machine import State
from firmware_bridge.messages import LogKind
from hw_sim.recorder import VirtualRecorder
from hw_sim.spec import Faults

from .session_bench import Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)


def _never_unlocked(rec: VirtualRecorder) -> bool:
    return (rec.firmware.state.mass_storage is False and rec.firmware.state.deletes == 0
            and not any(e.kind == LogKind.MASS_STORAGE_ON for e in rec.firmware.state.event_log))


async def test_firmware_claiming_another_serial_is_refused(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000090", faults=Faults(claimed_serial="SN000091")))
    s = bench.session("SN000090")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED

    (f,) = env.faults()
    assert f.code == "serial_mismatch" and f.severity == "error"
    assert "SN000090" in f.reason and "SN000091" in f.reason
    assert f.detail["usb_serial"] == "SN000090" and f.detail["claimed_serial"] == "SN000091"
    assert f.recorder == "SN000090" and f.bay == "B1"
    # No unlock, no mount, no copy, no wipe - and nothing filed under the claimed serial.
    assert _never_unlocked(rec) and env.mounter.calls == [] and env.stored_files() == []
    assert env.kinds(s.session_id) == ["docked", "fault"]
    assert env.entries(recorder="SN000091") == []
    assert bench.supervisor.snapshot()[0].state == "failed"
    await bench.unplug("B1")
    assert env.kinds(s.session_id)[-1] == "undocked"


async def test_same_serial_in_a_second_bay_is_refused_there(
        env: Env, bench: Bench, tmp_path: Path) -> None:
    bench.deliver_storage = False  # hold the first docking before its offload
    first = await bench.plug("B1", spec("SN000092"))
    s1 = bench.session("SN000092")
    await wait_state(s1, State.STORAGE_UNLOCKED)

    twin_home = tmp_path / "twin"
    twin_home.mkdir()
    twin = await bench.plug("B2", spec("SN000092"), workdir=twin_home)
    await bench.settle()
    (f,) = env.faults(code="device_rejected")
    assert f.bay == "B2" and f.recorder == "SN000092"
    assert "already docked in bay B1" in f.reason
    (rej,) = env.entries(kind="device_rejected")
    assert rej.recorder == "SN000092" and rej.bay == "B2" and rej.data["docked_in"] == "B1"
    assert _never_unlocked(twin)
    # The first docking is untouched and goes on to offload everything.
    assert bench.session("SN000092") is s1 and not s1.finished
    while first.storage_path is None:
        await asyncio.sleep(0.01)
    await bench.supervisor.handle(StorageAppeared(
        key="SN000092", bay="B1", storage=DirectoryStorage(str(first.storage_path))))
    await wait_state(s1, *ENDED)
    assert s1.state is State.RELEASED, s1.faults
    assert len(env.stored_files()) == 2
    assert [b.bay for b in bench.supervisor.snapshot()] == ["B1"]

    # Pulling the twin out of B2 does not end the docking in B1.
    await bench.unplug("B2")
    assert not s1.finished and s1.state is State.RELEASED
    assert len(env.faults(code="device_rejected")) == 1
    await bench.unplug("B1")
    assert s1.finished


async def test_a_recorder_moved_to_another_bay_is_not_a_duplicate(
        env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000093"))
    s1 = bench.session("SN000093")
    await wait_state(s1, *ENDED)
    await bench.unplug("B1")
    await bench.plug("B2", spec("SN000093"))
    s2 = bench.session("SN000093")
    await wait_state(s2, *ENDED)
    assert s2 is not s1 and s2.state is State.RELEASED
    assert env.faults() == []
