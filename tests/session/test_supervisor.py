"""The bay supervisor: many bays at once, isolation, storage-only recorders, rejected
devices, replug while the old session shuts down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.devices.events import (
    DeviceRejected,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.session.recorder_link import RecorderLink, recorder_client_opener
from agent.session.state_machine import State
from agent.settings import DeviceSettings, RecorderSettings
from hw_sim.recorder import VirtualRecorder
from hw_sim.spec import Faults

from .session_bench import Bench, Env, spec, wait_state


async def test_ten_bays_at_once(env: Env, bench: Bench) -> None:
    serials = [f"SN1000{i:02d}" for i in range(10)]
    await asyncio.gather(*(bench.plug(f"B{i:02d}", spec(sn)) for i, sn in enumerate(serials)))
    sessions = [bench.session(sn) for sn in serials]
    await asyncio.gather(*(wait_state(s, State.RELEASED, State.FAILED) for s in sessions))
    assert all(s.state is State.RELEASED for s in sessions), [s.faults for s in sessions]
    snap = bench.supervisor.snapshot()
    assert [b.bay for b in snap] == [f"B{i:02d}" for i in range(10)]
    assert [b.serial for b in snap] == serials
    assert len(env.stored_files()) == 20
    for s in sessions:  # each session's custody trail is complete and its own
        kinds = env.kinds(s.session_id)
        assert kinds[:3] == ["docked", "identified", "clock_checked"]
        assert kinds.count("offloaded") == 2
    assert env.faults() == []
    assert env.changes > 0  # on_change fired


async def test_hanging_recorder_does_not_delay_the_others(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(recorder=RecorderSettings(command_timeout_s=60, retries=0))
    await bench.plug("HANG", spec("SN200000", faults=Faults(
        silent_commands=frozenset({"identity"}))))
    hung = bench.session("SN200000")
    await wait_state(hung, State.AUTHENTICATED)
    serials = [f"SN2000{i:02d}" for i in range(1, 6)]
    await asyncio.gather(*(bench.plug(f"B{i}", spec(sn)) for i, sn in enumerate(serials)))
    others = [bench.session(sn) for sn in serials]
    await asyncio.gather(*(wait_state(s, State.RELEASED, State.FAILED) for s in others))
    assert all(s.state is State.RELEASED for s in others)
    assert hung.state is State.AUTHENTICATED  # still waiting for its reply
    await bench.unplug("HANG")
    assert hung.state is State.REMOVED and env.faults() == []  # type: ignore[comparison-overlap]


async def test_hanging_recorder_times_out_on_its_own(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(recorder=RecorderSettings(command_timeout_s=0.3, retries=0))
    await bench.plug("B1", spec("SN200100", faults=Faults(
        silent_commands=frozenset({"get_officer"}))))
    s = bench.session("SN200100")
    await wait_state(s, State.FAILED)
    (f,) = env.faults()
    assert f.code == "timeout" and "officer" in f.reason


def _storage_only_dir(tmp: Path) -> Path:
    root = tmp / "usbstick"
    (root / "DCIM").mkdir(parents=True)
    (root / "DCIM" / "20261123_080000.MP4").write_bytes(b"\x01" * 5000)
    (root / "DCIM" / "20261123_090000.MP4").write_bytes(b"\x02" * 7000)
    return root


async def test_storage_only_recorder(env: Env, make_bench: Any, tmp_path: Path) -> None:
    bench: Bench = await make_bench(devices=DeviceSettings(source="sim",
                                                           allow_storage_only=True))
    root = _storage_only_dir(tmp_path)
    sup = bench.supervisor
    await sup.handle(StorageAppeared(key="USB0001", bay="B4", storage=DirectoryStorage(
        str(root)), storage_only=True, source="sim"))
    s = bench.session("USB0001")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert s.state is State.RELEASED, s.faults
    assert [t.target for t in s.machine.history] == [State.MOUNTED, State.OFFLOADING,
                                                     State.RELEASED]
    ident: Any = env.entries(session_id=s.session_id, kind="identified")[0]
    assert ident.recorder == "USB0001" and ident.officer is None
    assert set(ident.data["unchecked"]) >= {"officer", "clock", "battery"}
    assert len(env.stored_files()) == 2
    assert sup.snapshot()[0].unchecked == ("officer", "clock", "battery")
    await sup.handle(StorageRemoved(key="USB0001", bay="B4"))  # all a storage-only has
    await s.wait_finished()
    assert env.kinds(s.session_id)[-1] == "undocked"
    assert sorted(p.name for p in (root / "DCIM").iterdir()) == [
        "20261123_080000.MP4", "20261123_090000.MP4"]  # originals untouched


async def test_storage_only_not_allowed_is_rejected(env: Env, bench: Bench,
                                                    tmp_path: Path) -> None:
    root = _storage_only_dir(tmp_path)
    await bench.supervisor.handle(StorageAppeared(
        key="USB0002", bay="B5", storage=DirectoryStorage(str(root)), storage_only=True))
    assert bench.supervisor.session("USB0002") is None
    (f,) = env.faults()
    assert f.code == "device_rejected" and f.severity == "warning" and f.bay == "B5"
    assert env.mounter.calls == [] and env.stored_files() == []


async def test_rejected_device_is_recorded(env: Env, bench: Bench) -> None:
    await bench.supervisor.handle(DeviceRejected(bay="B3", vid_pid="dead:beef", serial="X1",
                                                 reason="not an allowed recorder"))
    (e,) = env.entries(kind="device_rejected")
    assert e.bay == "B3" and e.data["vid_pid"] == "dead:beef"
    (f,) = env.faults()
    assert f.code == "device_rejected" and "not an allowed recorder" in f.reason
    assert bench.supervisor.rejections[0]["bay"] == "B3"


async def test_replug_waits_for_the_old_session(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN300000"))
    first = bench.session("SN300000")
    await wait_state(first, State.RELEASED)
    # Pull and immediately re-insert: both events arrive before the first session ends.
    await rec.stop()
    sup = bench.supervisor
    await sup.handle(RecorderUnplugged(key="SN300000", bay="B1"))
    tty = await rec.start()
    await sup.handle(RecorderPlugged(key="SN300000", bay="B1", tty_path=tty, source="sim"))
    second = bench.session("SN300000")
    assert second is not first
    await first.wait_finished()
    await wait_state(second, State.RELEASED, State.FAILED)
    assert second.state is State.RELEASED
    old_undocked = env.entries(session_id=first.session_id, kind="undocked")[0].seq
    new_docked = env.entries(session_id=second.session_id, kind="docked")[0].seq
    assert old_undocked < new_docked
    # already stored: the second docking copies nothing again
    assert second.offload_result is not None
    assert second.offload_result.stored == 0 and second.offload_result.already_stored == 2
    bench.recorders["B1"] = rec  # teardown unplugs it


async def test_released_recorder_battery_is_polled(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(battery_poll_s=0.05)
    await bench.plug("B1", spec("SN400000"))
    s = bench.session("SN400000")
    await wait_state(s, State.RELEASED)
    first = s.battery_at
    assert first is not None
    while s.battery_at == first:  # a later reading arrives while it stays docked
        await asyncio.sleep(0.02)
    assert s.state is State.RELEASED
    assert bench.supervisor.snapshot()[0].battery_at == s.battery_at


async def test_agent_shutdown_leaves_recorders_safe(env: Env, make_bench: Any) -> None:
    env.configure_offload(wipe_after_offload=True)
    bench: Bench = await make_bench(
        recorder=RecorderSettings(command_timeout_s=30, retries=0))
    rec = await bench.plug("B1", spec("SN400001", faults=Faults(
        silent_commands=frozenset({"delete_recording"}))))
    s = bench.session("SN400001")
    await wait_state(s, State.OFFLOADING)
    await bench.supervisor.aclose()  # the agent stops mid-offload
    assert s.finished and s.state is State.REMOVED
    undocked: Any = env.entries(session_id=s.session_id, kind="undocked")[0].data
    assert undocked["reason"] == "agent_stopped" and undocked["state_reached"] == "offloading"
    assert env.mounter.mounted == set()
    assert rec.firmware.state.mass_storage is False  # locked again: it can record/charge



async def test_a_new_recorder_waits_for_the_session_leaving_its_bay(env: Env,
                                                                    make_bench: Any) -> None:
    """A quick swap where the new recorder got the old one's port node (a pty, or
    ttyACM0 again): the old session, docked late, opened that node and holds it. Once
    the old docking is ended, the new recorder's session opens its port after the old
    session has let go of it (however slowly: a loaded machine), instead of being
    refused the lock."""
    real_opener = recorder_client_opener(RecorderSettings())

    async def slow_to_let_go(tty_path: str) -> RecorderLink:
        link = await real_opener(tty_path)
        close = link.close

        async def slow_close() -> None:
            await asyncio.sleep(0.3)
            await close()

        link.close = slow_close  # type: ignore[method-assign]
        return link

    bench: Bench = await make_bench(open_link=slow_to_let_go)
    sup = bench.supervisor
    tasks: set[asyncio.Task[None]] = set()

    def on_storage(path: Path | None) -> None:
        event = (StorageRemoved(key="SN500002", bay="B1") if path is None else
                 StorageAppeared(key="SN500002", bay="B1", storage=DirectoryStorage(str(path)),
                                 source="sim"))
        tasks.add(asyncio.get_running_loop().create_task(sup.handle(event)))

    new = VirtualRecorder(spec("SN500002"), bench.workdir, secret=bench.secret,
                          on_storage=on_storage)
    tty = await new.start()
    try:
        # The old recorder's session, told of the node before it was reused, opened it:
        await sup.handle(RecorderPlugged(key="SN500001", bay="B1", tty_path=tty,
                                         source="sim"))
        old = bench.session("SN500001")
        await wait_state(old, State.FAILED)  # the firmware named another serial: refused
        assert [f.code for f in old.faults] == ["serial_mismatch"]
        # The swap as the device tracker reports it: the old one leaves, the new one docks.
        await sup.handle(RecorderUnplugged(key="SN500001", bay="B1"))
        await sup.handle(RecorderPlugged(key="SN500002", bay="B1", tty_path=tty,
                                         source="sim"))
        second = bench.session("SN500002")
        await wait_state(second, State.RELEASED, State.FAILED)
        assert second.state is State.RELEASED, second.faults
        # the bay's custody trail: the old docking closed before the new one opened
        old_undocked = env.entries(session_id=old.session_id, kind="undocked")[0].seq
        new_docked = env.entries(session_id=second.session_id, kind="docked")[0].seq
        assert old_undocked < new_docked
        await sup.handle(RecorderUnplugged(key="SN500002", bay="B1"))
        await second.wait_finished()
    finally:
        await new.stop()
