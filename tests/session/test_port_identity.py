"""A session opening its port node in the instant after another recorder took that node
(before the device source has heard of the swap) finds the node is no longer its
recorder's: the docking ends as an undocking, never as a `serial_mismatch` against the
recorder that left. Real virtual recorders on real ptys; the node both recorders are
given in turn (ttyACM0 on a real dock) is a link re-pointed from one pty to the other,
and dock-sim's generation of a pty is its creation time."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.devices import port_identity
from agent.devices.events import (
    BlockStorage,
    DirectoryStorage,
    PortIdentity,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRef,
    StorageRemoved,
)
from agent.session.recorder_link import LinkOpener, RecorderLink, recorder_client_opener
from agent.session.runner import DockingSession
from agent.session.state_machine import State
from agent.settings import DeviceSettings, RecorderSettings
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.uevents import born_ns

from .session_bench import Bench, Env, TrackingMounter, spec, wait_state

MakeBench = Callable[..., Awaitable[Bench]]

BAY = "B1"


@pytest.fixture(autouse=True)
def link_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.session.steps.link")


def opener_telling(opened: asyncio.Event) -> LinkOpener:
    """The real opener, telling when a link is open (the session checks the node next,
    before it sends anything)."""
    real = recorder_client_opener(RecorderSettings(command_timeout_s=0.5, retries=1))

    async def open_link(tty_path: str) -> RecorderLink:
        link = await real(tty_path)
        opened.set()
        return link

    return open_link


async def decided(session: DockingSession, caplog: pytest.LogCaptureFixture) -> None:
    """The session judged the node it opened: it found it another device's (and waits for
    the unplug), or it went on to talk to the recorder there and failed."""
    while not (session.state is State.FAILED or any(
            "now belongs to another device" in r.getMessage() for r in caplog.records)):
        await asyncio.sleep(0.01)


def repoint(node: Path, pty: str) -> None:
    """The kernel gives the node to the device now holding `pty`."""
    tmp = node.with_name(node.name + ".new")
    tmp.symlink_to(pty)
    tmp.replace(node)


async def test_a_port_node_taken_by_the_next_recorder_is_an_undocking_not_a_mismatch(
        env: Env, make_bench: MakeBench, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    opened = asyncio.Event()
    bench: Bench = await make_bench(open_link=opener_telling(opened))
    node = tmp_path / "ttyACM0"
    old = VirtualRecorder(spec("SN000301"), tmp_path / "old", secret=DEFAULT_FLEET_SECRET)
    tasks: set[asyncio.Task[None]] = set()

    def storage(path: Path | None) -> None:  # the newcomer's storage, once it is unlocked
        if path is not None:
            tasks.add(asyncio.get_running_loop().create_task(bench.supervisor.handle(
                StorageAppeared("SN000302", BAY, DirectoryStorage(str(path)), source="sim"))))

    new = VirtualRecorder(spec("SN000302"), tmp_path / "new", secret=DEFAULT_FLEET_SECRET,
                          on_storage=storage)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_pty = await old.start()
    repoint(node, old_pty)
    told = RecorderPlugged("SN000301", BAY, str(node), source="sim",
                           port=PortIdentity("/dev/bus/usb/001/002", born_ns(old_pty)))

    # The race: the old recorder is pulled and the next one takes the node before the
    # dock hears of either; only then does the old recorder's plug reach the session.
    await old.stop()
    new_pty = await new.start()
    repoint(node, new_pty)
    await bench.supervisor.handle(told)
    s_old = bench.session("SN000301")
    await opened.wait()
    await decided(s_old, caplog)
    await bench.supervisor.handle(RecorderUnplugged("SN000301", BAY))
    await s_old.wait_finished()

    # then the dock hears of the newcomer, on the same node, and docks it
    await bench.supervisor.handle(RecorderPlugged(
        "SN000302", BAY, str(node), source="sim",
        port=PortIdentity("/dev/bus/usb/001/003", born_ns(new_pty))))
    s_new = bench.session("SN000302")
    await wait_state(s_new, State.RELEASED, State.FAILED)
    assert s_new.state is State.RELEASED, s_new.faults

    assert env.faults() == []  # no serial_mismatch (nor any other) against either
    assert env.kinds(s_old.session_id) == ["docked", "undocked"]
    (undocked,) = env.entries(session_id=s_old.session_id, kind="undocked")
    assert undocked.data["reason"] == "unplugged" and undocked.recorder == "SN000301"
    assert env.entries(recorder="SN000302", kind="identified")
    assert len(env.stored_files()) == 2  # the newcomer's footage, filed under its serial
    await bench.supervisor.handle(RecorderUnplugged("SN000302", BAY))
    await s_new.wait_finished()
    await new.stop()


async def test_a_port_node_gone_before_the_open_is_an_undocking(
        env: Env, make_bench: MakeBench, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The recorder left and a device in another bay got its node: the plug that
    reaches the session late is an undocking, and the other recorder is never touched."""
    opened = asyncio.Event()
    bench: Bench = await make_bench(open_link=opener_telling(opened))
    node = tmp_path / "ttyACM0"
    old = VirtualRecorder(spec("SN000303"), tmp_path / "old", secret=DEFAULT_FLEET_SECRET)
    (tmp_path / "old").mkdir()
    old_pty = await old.start()
    repoint(node, old_pty)
    told = RecorderPlugged("SN000303", BAY, str(node), source="sim",
                           port=PortIdentity("/dev/bus/usb/001/004", born_ns(old_pty)))
    other = VirtualRecorder(spec("SN000304"), tmp_path / "other",
                            secret=DEFAULT_FLEET_SECRET)
    (tmp_path / "other").mkdir()
    await old.stop()
    repoint(node, await other.start())  # a device in another bay got the node
    await bench.supervisor.handle(told)
    s_old = bench.session("SN000303")
    await opened.wait()
    await decided(s_old, caplog)
    await bench.supervisor.handle(RecorderUnplugged("SN000303", BAY))
    await s_old.wait_finished()
    assert env.faults() == [], [(f.reason, f.detail) for f in env.faults()]
    assert env.kinds(s_old.session_id) == ["docked", "undocked"]
    assert other.firmware.state.deletes == 0 and other.firmware.state.mass_storage is False
    await other.stop()


class BlockAsDirectoryMounter(TrackingMounter):
    """Mounts a block device by showing a prepared directory (the filesystem it holds)."""

    def __init__(self, holds: Path) -> None:
        super().__init__()
        self.holds = holds

    async def mount(self, key: str, storage: StorageRef) -> Path:
        if isinstance(storage, BlockStorage):
            storage = DirectoryStorage(str(self.holds))
        return await super().mount(key, storage)


def fake_sysfs(root: Path, node: str, devnum: int) -> Path:
    """sysfs where block device `node` belongs to USB device 001/`devnum`."""
    usb = root / "devices" / "platform" / "usb1" / "1-1"
    block = usb / "1-1:1.1" / "host0" / "block" / node
    block.mkdir(parents=True)
    (usb / "busnum").write_text("1\n")
    (usb / "devnum").write_text(f"{devnum}\n")
    link = root / "class" / "block" / node
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(block, link.parent))
    return root


async def test_a_storage_node_taken_by_the_next_recorder_is_never_read(
        env: Env, make_bench: MakeBench, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage-only recorder's sdz1 went to the next recorder (USB device 6) before the
    dock heard of it: the session mounts the node, finds it another device's, reads
    nothing of it and ends as an undocking when the removal follows."""
    footage = tmp_path / "footage" / "DCIM"
    footage.mkdir(parents=True)
    (footage / "next-recorders-file.mp4").write_bytes(b"not this recorder's" * 100)
    monkeypatch.setattr(port_identity, "SYSFS", fake_sysfs(tmp_path / "sys", "sdz1", 6))
    env.mounter = BlockAsDirectoryMounter(tmp_path / "footage")
    bench: Bench = await make_bench(devices=DeviceSettings(
        source="udev", allow_storage_only=True, storage_wait_s=5.0))
    mine = BlockStorage("/dev/sdz1", "vfat", False, "/dev/bus/usb/001/005")
    await bench.supervisor.handle(StorageAppeared("SO000401", BAY, mine, storage_only=True))
    s = bench.session("SO000401")
    while not (s.ctx.res.storage_lost or s.state in (State.OFFLOADING, State.FAILED)):
        await asyncio.sleep(0.01)
    await bench.supervisor.handle(StorageRemoved("SO000401", BAY))
    await s.wait_finished()

    assert env.stored_files() == [] and env.faults() == []
    assert State.MOUNTED not in {t.target for t in s.machine.history}
    assert env.kinds(s.session_id) == ["docked", "identified", "undocked"]
    assert env.mounter.mounted == set()  # let go of at once
