"""Injected recorder faults: each becomes one named fault and the recorder is left safe."""

from __future__ import annotations

from typing import Any

import pytest

from agent.devices.events import RecorderUnplugged
from agent.session.state_machine import State
from agent.settings import DeviceSettings, RecorderSettings
from hw_sim.spec import Faults

from .session_bench import Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)


async def test_auth_refused(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B2", spec("SN000010", faults=Faults(refuse_auth=True)))
    s = bench.session("SN000010")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "auth_refused" and f.bay == "B2" and f.recorder == "SN000010"
    assert "authentication refused" in f.reason
    assert rec.firmware.state.mass_storage is False and env.mounter.calls == []
    assert env.kinds(s.session_id) == ["docked", "fault"]
    assert bench.supervisor.snapshot()[0].state == "failed"
    await bench.unplug("B2")
    assert env.kinds(s.session_id)[-1] == "undocked"
    assert env.entries(kind="undocked")[0].data["state_reached"] == "failed"


async def test_failing_battery_is_reported_and_footage_still_offloaded(
        env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000011", faults=Faults(battery_failing=True)))
    s = bench.session("SN000011")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED
    (f,) = env.faults()
    assert f.code == "battery_failed" and f.severity == "warning"
    assert f.officer == "0042" and f.recorder == "SN000011" and f.bay == "B1"
    assert "battery" in f.detail
    assert len(env.stored_files()) == 2


async def test_missing_reply_times_out_and_leaves_recorder_safe(
        env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000012", faults=Faults(
        silent_commands=frozenset({"storage"}))))
    s = bench.session("SN000012")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "timeout" and "storage" in f.reason
    assert f.detail["state"] == "clock_checked"
    assert rec.firmware.state.mass_storage is False and env.mounter.calls == []


async def test_garbled_replies_are_retried(env: Env, bench: Bench) -> None:
    # the first reply (hello, idempotent) arrives with a flipped byte: CRC error, resent
    rec = await bench.plug("B1", spec("SN000013", faults=Faults(garble_replies=1)))
    s = bench.session("SN000013")
    await wait_state(s, *ENDED)
    assert rec.replies_garbled == 1
    assert s.state is State.RELEASED and env.faults() == []


async def test_line_noise_everywhere_is_one_clear_fault(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000014", faults=Faults(garble_byte_prob=0.5, seed=7)))
    s = bench.session("SN000014")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code in ("timeout", "protocol_error") and f.bay == "B1"
    assert env.mounter.calls == []


async def test_storage_that_never_appears(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(devices=DeviceSettings(source="sim", storage_wait_s=1))
    bench.deliver_storage = False
    rec = await bench.plug("B1", spec("SN000015"))
    s = bench.session("SN000015")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "storage_not_found" and f.detail["state"] == "storage_unlocked"
    assert rec.firmware.state.mass_storage is False  # locked again on the way out
    assert "storage locked" in s.done


async def test_clock_set_refused_by_device(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000016", clock_offset_s=30.0,
                                faults=Faults(clock_set="error")))
    s = bench.session("SN000016")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED
    (f,) = env.faults()
    assert f.code == "clock_not_set" and "set_error" in f.detail


async def test_slow_recorder_within_timeouts_is_fine(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(
        recorder=RecorderSettings(command_timeout_s=2.0, retries=0))
    await bench.plug("B1", spec("SN000017", faults=Faults(reply_delay_s=0.05)))
    s = bench.session("SN000017")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED and env.faults() == []
    d: Any = env.entries(session_id=s.session_id, kind="clock_checked")[0].data
    assert d["rtt_ms"] >= 50  # the delay shows as round trip, not as drift
    assert abs(d["drift_before_ms"]) < 1000


async def test_mount_failure(env: Env, make_bench: Any, tmp_path: Any) -> None:
    from agent.devices.events import DirectoryStorage, StorageAppeared

    bench: Bench = await make_bench()
    bench.deliver_storage = False
    rec = await bench.plug("B1", spec("SN000030"))
    s = bench.session("SN000030")
    await wait_state(s, State.STORAGE_UNLOCKED)
    bogus = tmp_path / "not-a-dir"
    bogus.write_bytes(b"")
    await bench.supervisor.handle(StorageAppeared(key="SN000030", bay="B1",
                                                  storage=DirectoryStorage(str(bogus))))
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "mount_failed" and str(bogus) in f.detail["storage"]
    assert rec.firmware.state.mass_storage is False and env.mounter.mounted == set()
    assert env.stored_files() == []


async def test_evidence_store_full(env: Env, make_bench: Any) -> None:
    env.configure_offload(reserve_mib=1 << 30)  # no disk has a PiB to spare
    bench: Bench = await make_bench()
    rec = await bench.plug("B1", spec("SN000031"))
    s = bench.session("SN000031")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "dock_storage_full" and f.recorder == "SN000031"
    assert rec.firmware.state.mass_storage is False and env.mounter.mounted == set()
    assert env.stored_files() == []
    assert sorted(p.name for p in rec.storage.root.rglob("*.MP4")) != []  # nothing wiped


async def test_tty_lost_without_unplug_is_a_fault(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(
        recorder=RecorderSettings(command_timeout_s=30, retries=0), unplug_grace_s=0.2)
    rec = await bench.plug("B1", spec("SN000032", faults=Faults(
        silent_commands=frozenset({"identity"}))))
    s = bench.session("SN000032")
    await wait_state(s, State.AUTHENTICATED)
    await rec.stop()  # the port dies, but no unplug event ever comes
    bench.recorders.pop("B1")
    await wait_state(s, State.FAILED)
    (f,) = env.faults()
    assert f.code == "protocol_error" and "link closed" in f.reason
    await bench.supervisor.handle(RecorderUnplugged(key="SN000032", bay="B1"))
    await s.wait_finished()
    assert env.kinds(s.session_id)[-1] == "undocked"


def _fuse_available() -> bool:
    import os
    import shutil

    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


needs_fuse = pytest.mark.skipif(not _fuse_available(), reason="needs FUSE (/dev/fuse)")


@needs_fuse
async def test_read_errors_become_a_fault_and_nothing_is_wiped(env: Env, make_bench: Any) -> None:
    env.configure_offload(wipe_after_offload=True, read_retries=0)
    bench: Bench = await make_bench()
    rec = await bench.plug("B1", spec("SN000040", faults=Faults(eio_at=((1, 4096),))))
    s = bench.session("SN000040")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults
    codes = sorted(f.code for f in env.faults())
    assert codes == ["read_error"]
    assert s.offload_result is not None and s.offload_result.failed == 1
    assert s.offload_result.stored == 1 and s.offload_result.wiped == 1
    assert len(list(rec.storage.root.rglob("*.MP4"))) == 1  # the unread file stays


@needs_fuse
async def test_recorder_pulled_mid_file(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000041", faults=Faults(unplug_at=(1, 8192))))
    s = bench.session("SN000041")
    await s.wait_finished()  # the fault unplugs it; the bench delivers the events
    assert s.state is State.REMOVED
    undocked: Any = env.entries(session_id=s.session_id, kind="undocked")[0].data
    assert undocked["state_reached"] == "offloading"  # an unplug, not a failure
    assert env.faults() == []
    assert ("unmount", "SN000041", True) in env.mounter.calls
    assert env.mounter.mounted == set()
    assert rec.firmware.state.mass_storage is False


async def test_hostile_storage_entries_are_refused_and_reported(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000042", faults=Faults(hostile_names=True)))
    s = bench.session("SN000042")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults
    codes = [f.code for f in env.faults()]
    assert codes == ["hostile_content"]
    assert s.offload_result is not None and (s.offload_result.refused or 0) >= 1
    assert (s.offload_result.stored or 0) >= 2  # the real footage still came off
