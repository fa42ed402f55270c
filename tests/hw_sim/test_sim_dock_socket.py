"""dock-sim announcements reach SimDeviceSource as the right domain events."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.devices.events import (
    DeviceEvent,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.devices.sim_source import SimAnnouncementError, SimDeviceSource, parse_line
from hw_sim.dock import VirtualDock
from hw_sim.errors import BayError

from .sim_helpers import Collector, OpenClient, small_spec


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
        await asyncio.wait_for(collector.source.connected.wait(), 10)
        rec = await dock.plug("B", small_spec())
        evs = await collector.wait_for(1)
        assert evs == [RecorderPlugged(key="BWC00001", bay="B", tty_path=rec.tty_path,
                                       source="sim")]
        client = await open_client(evs[0].tty_path)  # type: ignore[union-attr]
        await client.set_mass_storage(True)
        evs = await collector.wait_for(2)
        assert evs[1] == StorageAppeared(key="BWC00001", bay="B",
                                         storage=DirectoryStorage(str(rec.storage_dir)),
                                         source="sim")
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
                RecorderPlugged(key="BWC00001", bay="1", tty_path=r1.tty_path, source="sim"),
                RecorderPlugged(key="BWC00002", bay="2", tty_path=r2.tty_path, source="sim"),
                StorageAppeared(key="BWC00002", bay="2",
                                storage=DirectoryStorage(str(r2.storage_dir)), source="sim"),
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
                                                 source="sim")
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


async def test_wire_format_and_bad_lines(tmp_path: Path, sock: Path) -> None:
    async with VirtualDock(bays=1, socket_path=sock, workdir=tmp_path) as dock:
        await dock.plug("1", small_spec())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.settimeout(5)
            line = await asyncio.to_thread(s.makefile("rb").readline)
        msg = json.loads(line)
        assert msg["v"] == 1 and msg["type"] == "state" and msg["bays"] == ["1"]
        assert msg["recorders"][0]["serial"] == "BWC00001"
        assert msg["recorders"][0]["storage"] is None
    for bad in [b"not json\n", b"[1]\n", b'{"v": 2, "type": "state"}\n', b'{"v": 1}\n']:
        with pytest.raises(SimAnnouncementError):
            parse_line(bad)
    src = SimDeviceSource(sock)
    out: list[DeviceEvent] = []
    with pytest.raises(SimAnnouncementError):
        src.handle({"v": 1, "type": "plugged", "bay": "1"}, out.append)  # no serial
    with pytest.raises(SimAnnouncementError):
        src.handle({"v": 1, "type": "storage", "serial": "X", "path": "/p"}, out.append)
    src.handle({"v": 1, "type": "future_thing"}, out.append)  # ignored
    src.handle({"v": 1, "type": "plugged", "bay": "1", "serial": "X", "tty": "/t"}, out.append)
    src.handle({"v": 1, "type": "plugged", "bay": "1", "serial": "X", "tty": "/t"}, out.append)
    assert out == [RecorderPlugged(key="X", bay="1", tty_path="/t", source="sim")]


async def test_garbage_on_the_socket_is_skipped(tmp_path: Path, sock: Path,
                                                collector: Collector) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"v":1,"type":"state","recorders":[]}\n')
        writer.write(b"garbage\n")
        writer.write(b'{"v":1,"type":"plugged","bay":"1","serial":"S","tty":"/dev/x"}\n')
        await writer.drain()
        await reader.read()

    server = await asyncio.start_unix_server(serve, path=str(sock))
    async with server:
        evs = await collector.wait_for(1)
        assert evs == [RecorderPlugged(key="S", bay="1", tty_path="/dev/x", source="sim")]
        assert collector.source.bad_lines == 1


def test_state_reconciliation_is_minimal() -> None:
    src = SimDeviceSource("/nonexistent")
    out: list[DeviceEvent] = []

    def state(*recs: tuple[str, str, str, str | None]) -> None:
        src.handle({"v": 1, "type": "state", "recorders": [
            {"serial": s, "bay": b, "tty": t, "storage": p} for s, b, t, p in recs]}, out.append)

    state(("S1", "1", "/t1", None), ("S2", "2", "/t2", "/m2"))
    assert out == [
        RecorderPlugged(key="S1", bay="1", tty_path="/t1", source="sim"),
        RecorderPlugged(key="S2", bay="2", tty_path="/t2", source="sim"),
        StorageAppeared(key="S2", bay="2", storage=DirectoryStorage("/m2"), source="sim"),
    ]
    out.clear()
    state(("S1", "1", "/t1", None), ("S2", "2", "/t2", "/m2"))
    assert out == []  # nothing changed, nothing emitted
    state(("S1", "1", "/t9", "/m1"), ("S2", "2", "/t2", None))
    assert out == [
        RecorderUnplugged(key="S1", bay="1"),  # a new tty is a new attachment
        StorageRemoved(key="S2", bay="2"),
        RecorderPlugged(key="S1", bay="1", tty_path="/t9", source="sim"),
        StorageAppeared(key="S1", bay="1", storage=DirectoryStorage("/m1"), source="sim"),
    ]
    out.clear()
    src.handle({"v": 1, "type": "storage", "bay": "1", "serial": "S1", "path": "/m1b"},
               out.append)
    src.handle({"v": 1, "type": "unplugged", "bay": "1", "serial": "S1"}, out.append)
    src.handle({"v": 1, "type": "unplugged", "bay": "1", "serial": "S1"}, out.append)  # again
    assert out == [
        StorageRemoved(key="S1", bay="1"),
        StorageAppeared(key="S1", bay="1", storage=DirectoryStorage("/m1b"), source="sim"),
        StorageRemoved(key="S1", bay="1"),
        RecorderUnplugged(key="S1", bay="1"),
    ]
