"""dock-sim announcements reach SimDeviceSource, and through its DeviceTracker (allowlist,
bays, pairing, debounce) become the right domain events."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.devices.events import (
    DeviceRejected,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.devices.records import DeviceRecord
from agent.devices.sim_source import SimAnnouncementError, parse_line, parse_record
from agent.settings import AllowedDevice
from hw_sim import uevents
from hw_sim.dock import VirtualDock
from hw_sim.errors import BayError

from .sim_helpers import Collector, OpenClient, sim_devices, small_spec

SIM = "1209:d0c5"  # the simulated recorders' USB vendor:product id


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "sim.sock"


@pytest.fixture
async def collector(sock: Path) -> AsyncIterator[Collector]:
    c = Collector(sock)
    yield c
    await c.close()


async def test_plug_unlock_lock_unplug(
    tmp_path: Path, sock: Path, collector: Collector, open_client: OpenClient
) -> None:
    async with VirtualDock(bays=["A", "B"], socket_path=sock, workdir=tmp_path) as dock:
        await asyncio.wait_for(collector.source.ready.wait(), 10)
        rec = await dock.plug("B", small_spec())
        evs = await collector.wait_for(1)
        assert evs == [RecorderPlugged(key="BWC00001", bay="B", tty_path=rec.tty_path,
                                       vid_pid=SIM, source="sim")]
        client = await open_client(evs[0].tty_path)  # type: ignore[union-attr]
        await client.set_mass_storage(True)
        evs = await collector.wait_for(2)
        assert evs[1] == StorageAppeared(key="BWC00001", bay="B",
                                         storage=DirectoryStorage(str(rec.storage_dir)),
                                         vid_pid=SIM, source="sim")
        assert (Path(evs[1].storage.path) / "DCIM").is_dir()  # type: ignore[union-attr]
        await client.set_mass_storage(False)
        evs = await collector.wait_for(3)
        assert evs[2] == StorageRemoved(key="BWC00001", bay="B")
        await client.set_mass_storage(True)
        await collector.wait_for(4)
        await dock.unplug("B")
        evs = await collector.wait_for(6)
        assert evs[4:] == [StorageRemoved(key="BWC00001", bay="B"),
                           RecorderUnplugged(key="BWC00001", bay="B")]


async def test_state_on_connect_and_sim_going_away(
    tmp_path: Path, sock: Path, open_client: OpenClient
) -> None:
    dock = VirtualDock(bays=2, socket_path=sock, workdir=tmp_path)
    await dock.start()
    try:
        r1 = await dock.plug("1", small_spec("BWC00001"))
        r2 = await dock.plug("2", small_spec("BWC00002"))
        c = await open_client(r2.tty_path)
        await c.set_mass_storage(True)
        col = Collector(sock)  # the agent starts after the simulator
        try:
            evs = await col.wait_for(3)
            assert set(evs) == {
                RecorderPlugged(key="BWC00001", bay="1", tty_path=r1.tty_path, vid_pid=SIM,
                                source="sim"),
                RecorderPlugged(key="BWC00002", bay="2", tty_path=r2.tty_path, vid_pid=SIM,
                                source="sim"),
                StorageAppeared(key="BWC00002", bay="2",
                                storage=DirectoryStorage(str(r2.storage_dir)), vid_pid=SIM,
                                source="sim"),
            }
            await dock.stop()  # the simulator goes away: everything is unplugged
            evs = await col.wait_for(6)
            assert set(evs[3:]) == {
                RecorderUnplugged(key="BWC00001", bay="1"),
                StorageRemoved(key="BWC00002", bay="2"),
                RecorderUnplugged(key="BWC00002", bay="2"),
            }
            dock2 = VirtualDock(bays=2, socket_path=sock, workdir=tmp_path)  # and comes back
            async with dock2:
                r3 = await dock2.plug("1", small_spec("BWC00003"))
                evs = await col.wait_for(7)
                assert evs[6] == RecorderPlugged(key="BWC00003", bay="1", tty_path=r3.tty_path,
                                                 vid_pid=SIM, source="sim")
        finally:
            await col.close()
    finally:
        await dock.stop()


@pytest.fixture
def source_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """INFO records of the device source, captured from before it starts."""
    caplog.set_level(logging.INFO, logger="agent.devices.sim_source")
    return caplog


async def test_source_waits_for_the_socket(tmp_path: Path, sock: Path,
                                           source_logs: pytest.LogCaptureFixture,
                                           collector: Collector) -> None:
    caplog = source_logs

    def attempts() -> int:
        records = caplog.get_records("setup") + caplog.records  # it may start during setup
        return sum("waiting for dock-sim" in r.getMessage() for r in records)

    async with asyncio.timeout(60):  # a failed connection attempt; it keeps retrying
        while attempts() < 1:
            await asyncio.sleep(0.01)
    assert collector.events == [] and not collector.task.done()
    async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
        await dock.plug("1", small_spec())
        evs = await collector.wait_for(1)
        assert isinstance(evs[0], RecorderPlugged)


async def test_bay_errors(tmp_path: Path) -> None:
    async with VirtualDock(bays=2, workdir=tmp_path) as dock:
        await dock.plug("1", small_spec())
        with pytest.raises(BayError, match="occupied"):
            await dock.plug("1", small_spec("BWC00002"))
        with pytest.raises(BayError, match="already in bay"):
            await dock.plug("2", small_spec())
        with pytest.raises(BayError, match="no bay"):
            await dock.plug("9", small_spec("BWC00003"))
        with pytest.raises(BayError, match="empty"):
            await dock.unplug("2")
        assert dock.listing() == [("1", "BWC00001", None), ("2", None, None)]


async def test_dock_announces_a_fault_unplug(tmp_path: Path, sock: Path,
                                             collector: Collector) -> None:
    async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
        rec = await dock.plug("1", small_spec())
        await collector.wait_for(1)
        rec._fault_unplug()  # what the FUSE unplug notice triggers
        evs = await collector.wait_for(2)
        assert evs[1] == RecorderUnplugged(key="BWC00001", bay="1")
        assert "1" not in dock.recorders and rec.unplugged.is_set()


async def test_wire_format(tmp_path: Path, sock: Path) -> None:
    async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
        tty_path = (await dock.plug("1", small_spec())).tty_path
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.settimeout(5)
            line = await asyncio.to_thread(s.makefile("rb").readline)
    msg = parse_line(line)
    assert msg["v"] == 2 and msg["type"] == "state"
    assert msg["bays"] == [{"label": "1", "id_path": "platform-dock-sim-usb-0:1"}]
    usb, tty = (parse_record(d) for d in msg["devices"])
    assert usb.props["ID_SERIAL_SHORT"] == "BWC00001" and usb.props["ACTION"] == "add"
    assert (usb.props["ID_VENDOR_ID"], usb.props["ID_MODEL_ID"]) == ("1209", "d0c5")
    assert tty.props["DEVNAME"] == tty_path and tty.usb == usb.usb
    assert tty.props["DEVPATH"].startswith(usb.props["DEVPATH"] + "/")


@pytest.mark.parametrize("bad", [b"not json\n", b"[1]\n", b'{"v": 1, "type": "state"}\n',
                                 b'{"v": 2}\n'])
def test_bad_lines_are_refused(bad: bytes) -> None:
    with pytest.raises(SimAnnouncementError):
        parse_line(bad)


@pytest.mark.parametrize("bad", [[], {"usb": None}, {"props": {"A": 1}},
                                 {"props": {}, "usb": ["x"]}])
def test_bad_records_are_refused(bad: object) -> None:
    with pytest.raises(SimAnnouncementError):
        parse_record(bad)


def test_a_record_is_a_device_record() -> None:
    record = parse_record({"props": {"SUBSYSTEM": "tty"}, "usb": None})
    assert record == DeviceRecord({"SUBSYSTEM": "tty"})


def _line(msg_type: str, **fields: object) -> bytes:
    return json.dumps({"v": 2, "type": msg_type, **fields}).encode() + b"\n"


async def test_garbage_on_the_socket_is_skipped(tmp_path: Path, sock: Path,
                                                collector: Collector) -> None:
    usb = uevents.usb_props(1, "BWC00007", "1209", "d0c5", "X")
    tty = uevents.tty_props(1, "/dev/pts/77")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_line("state", bays=[{"label": "1", "id_path": uevents.id_path(1)}],
                           devices=[]))
        writer.write(b"garbage\n")
        writer.write(_line("uevent", device={"props": ["not", "a", "map"]}))
        writer.write(_line("future_thing"))  # unknown types are ignored
        writer.write(_line("uevent", device=uevents.added(usb, usb)))
        writer.write(_line("uevent", device=uevents.added(tty, usb)))
        await writer.drain()
        await reader.read()

    server = await asyncio.start_unix_server(serve, path=str(sock))
    async with server:
        evs = await collector.wait_for(1)
        assert evs == [RecorderPlugged(key="BWC00007", bay="1", tty_path="/dev/pts/77",
                                       vid_pid=SIM, source="sim")]
        assert collector.source.bad_lines == 2


# --- the simulator path goes through the real device logic ------------------------------------

async def test_device_not_on_the_allowlist_is_refused(tmp_path: Path, sock: Path,
                                                      open_client: OpenClient) -> None:
    col = Collector(sock)
    try:
        async with VirtualDock(bays=2, socket_path=sock, workdir=tmp_path) as dock:
            stranger = await dock.plug("1", small_spec("BWC00009", usb_vid="dead",
                                                       usb_pid="beef"))
            client = await open_client(stranger.tty_path)
            await client.set_mass_storage(True)  # its storage shows; it must not be reported
            await dock.plug("2", small_spec("BWC00001"))
            evs = await col.wait_for(2)
            rejected, plugged = evs[:2]
            assert isinstance(rejected, DeviceRejected) and rejected.bay == "1"
            assert (rejected.vid_pid, rejected.serial) == ("dead:beef", "BWC00009")
            assert "not in the recorder allowlist" in rejected.reason
            assert isinstance(plugged, RecorderPlugged) and plugged.key == "BWC00001"
            await dock.unplug("1")
            await dock.unplug("2")
            evs = await col.wait_for(3)
            assert evs[2:] == [RecorderUnplugged(key="BWC00001", bay="2")]
    finally:
        await col.close()


async def test_serial_pattern_refuses_a_recorder(tmp_path: Path, sock: Path) -> None:
    allow = [AllowedDevice(vid="1209", pid="d0c5", serial_pattern="BWC1[0-9]{4}")]
    col = Collector(sock, sim_devices(allow=allow))
    try:
        async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
            await dock.plug("1", small_spec("BWC00001"))
            evs = await col.wait_for(1)
            assert isinstance(evs[0], DeviceRejected)
            assert "does not match the allowed serial pattern" in evs[0].reason
    finally:
        await col.close()


async def test_flapping_plug_is_debounced(tmp_path: Path, sock: Path,
                                          open_client: OpenClient) -> None:
    """Out and back in within the window (a recorder rebooting, a bouncing contact): the
    session is not ended; a control port that came back elsewhere is announced again."""
    col = Collector(sock, sim_devices(debounce_ms=600_000))
    try:
        async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
            rec = await dock.plug("1", small_spec())
            await col.wait_for(1)
            await dock.unplug("1")
            rec = await dock.plug("1", small_spec())
            client = await open_client(rec.tty_path)
            await client.set_mass_storage(True)
            storage = StorageAppeared(key="BWC00001", bay="1",
                                      storage=DirectoryStorage(str(rec.storage_dir)),
                                      vid_pid=SIM, source="sim")
            async with asyncio.timeout(60):
                while storage not in col.events:
                    await col.wait_for(len(col.events) + 1)
            assert not any(isinstance(e, RecorderUnplugged) for e in col.events)
            assert all(e.tty_path in (col.events[0].tty_path, rec.tty_path)  # type: ignore
                       for e in col.events if isinstance(e, RecorderPlugged))
            assert col.events[-1] == storage
            assert col.source.tracker.next_deadline() is None  # the pending unplug is off
    finally:
        await col.close()


async def test_flap_longer_than_the_window_is_an_unplug(tmp_path: Path, sock: Path) -> None:
    col = Collector(sock, sim_devices(debounce_ms=50))
    try:
        async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
            await dock.plug("1", small_spec())
            await col.wait_for(1)
            await dock.unplug("1")
            evs = await col.wait_for(2)  # the window's timer, not another announcement
            assert evs[1] == RecorderUnplugged(key="BWC00001", bay="1")
    finally:
        await col.close()


async def test_storage_and_serial_are_paired_by_the_tracker(
    tmp_path: Path, sock: Path, open_client: OpenClient
) -> None:
    """The disk record names no recorder: it is paired with the tty through their USB
    device, as udev's are."""
    col = Collector(sock)
    try:
        async with VirtualDock(bays=2, socket_path=sock, workdir=tmp_path) as dock:
            r1 = await dock.plug("1", small_spec("BWC00001"))
            r2 = await dock.plug("2", small_spec("BWC00002"))
            await col.wait_for(2)
            c2 = await open_client(r2.tty_path)
            await c2.set_mass_storage(True)
            evs = await col.wait_for(3)
            assert evs[2] == StorageAppeared(key="BWC00002", bay="2",
                                             storage=DirectoryStorage(str(r2.storage_dir)),
                                             vid_pid=SIM, source="sim")
            disk = uevents.block_props(2, str(r2.storage_dir))
            assert not any("SERIAL" in k for k in disk)
            c1 = await open_client(r1.tty_path)
            await c1.set_mass_storage(True)
            evs = await col.wait_for(4)
            assert (evs[3].key, evs[3].bay) == ("BWC00001", "1")  # type: ignore[union-attr]
    finally:
        await col.close()


async def test_configured_bays_win_over_the_announced_ones(tmp_path: Path,
                                                           sock: Path) -> None:
    col = Collector(sock, sim_devices(bays={uevents.id_path(2): "Front 2"}))
    try:
        async with VirtualDock(bays=2, socket_path=sock, workdir=tmp_path) as dock:
            await dock.plug("1", small_spec("BWC00001"))  # a port outside every bay
            await dock.plug("2", small_spec("BWC00002"))
            evs = await col.wait_for(1)
            assert [(e.key, e.bay) for e in evs] == [("BWC00002", "Front 2")]  # type: ignore
    finally:
        await col.close()


async def test_another_dock_ends_the_old_docks_pending_unplugs(tmp_path: Path,
                                                               sock: Path) -> None:
    """A simulator back with other bays is another dock: what the old one had is gone
    at once, not after the (here endless) debounce window, and the new bays apply."""
    col = Collector(sock, sim_devices(debounce_ms=600_000))
    try:
        async with VirtualDock(bays=["1"], socket_path=sock, workdir=tmp_path) as dock:
            await dock.plug("1", small_spec("BWC00001"))
            await col.wait_for(1)
        assert not any(isinstance(e, RecorderUnplugged) for e in col.events)  # held
        async with VirtualDock(bays=["X", "Y"], socket_path=sock, workdir=tmp_path) as dock2:
            evs = await col.wait_for(2)
            assert evs[1] == RecorderUnplugged(key="BWC00001", bay="1")
            rec = await dock2.plug("Y", small_spec("BWC00001"))
            evs = await col.wait_for(3)
            assert evs[2] == RecorderPlugged(key="BWC00001", bay="Y", tty_path=rec.tty_path,
                                             vid_pid=SIM, source="sim")
    finally:
        await col.close()


async def test_another_recorder_in_a_debouncing_bay_ends_the_old_docking_at_once(
        tmp_path: Path, sock: Path) -> None:
    """A swap inside the window: the recorder pulled out is undocked before the one put
    in is docked (its pty node may well be the old one's), not after the window."""
    col = Collector(sock, sim_devices(debounce_ms=600_000))
    try:
        async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
            old_tty = (await dock.plug("1", small_spec("BWC00011"))).tty_path
            await col.wait_for(1)
            await dock.unplug("1")
            new = await dock.plug("1", small_spec("BWC00012"))
            evs = await col.wait_for(3)
            assert evs == [
                RecorderPlugged("BWC00011", "1", old_tty, SIM, "sim"),
                RecorderUnplugged("BWC00011", "1"),
                RecorderPlugged("BWC00012", "1", new.tty_path, SIM, "sim"),
            ]
            assert col.source.tracker.next_deadline() is None  # nothing left to debounce
    finally:
        await col.close()
