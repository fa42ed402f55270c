"""Records from the simulator meet the same tracker as udev's; what only the simulator may
say (a pty as control port, a directory as storage) is refused from udev."""

from __future__ import annotations

import asyncio

from agent.devices.events import (
    BlockStorage,
    DeviceEvent,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
)
from agent.devices.feed import TrackerFeed
from agent.devices.matching import DeviceTracker
from agent.devices.records import STORAGE_DIR_PROPERTY, DeviceRecord, storage_of
from agent.settings import AllowedDevice

from .conftest import settings

USB = {"SUBSYSTEM": "usb", "DEVTYPE": "usb_device", "DEVPATH": "/devices/platform/x/usb1/1-1",
       "ID_VENDOR_ID": "1d6b", "ID_MODEL_ID": "0104", "ID_SERIAL_SHORT": "BWC00001"}
PTY = {"SUBSYSTEM": "tty", "DEVNAME": "/dev/pts/4", "DEVPATH": USB["DEVPATH"] + "/1-1:1.0/tty/p4"}
DISK = {"SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": "/dev/sdz",
        "DEVPATH": USB["DEVPATH"] + "/1-1:1.1/host0/block/sdz", "ID_FS_TYPE": "vfat",
        STORAGE_DIR_PROPERTY: "/srv/recorder"}


def add(props: dict[str, str]) -> DeviceRecord:
    return DeviceRecord(props | {"ACTION": "add"}, USB)


def test_directory_storage_only_from_the_simulator() -> None:
    assert storage_of(DISK, directories=True) == DirectoryStorage("/srv/recorder")
    assert storage_of(DISK, directories=False) == BlockStorage("/dev/sdz", "vfat", True)
    assert storage_of(DISK | {"ID_FS_TYPE": ""}, directories=True) is None


def test_sim_tracker_pairs_pty_and_directory() -> None:
    tracker = DeviceTracker(settings(), source="sim")
    events = [e for r in (add(USB), add(PTY), add(DISK)) for e in tracker.handle(r, 0.0)]
    assert events == [
        RecorderPlugged("BWC00001", "1-1", "/dev/pts/4", "1d6b:0104", "sim"),
        StorageAppeared("BWC00001", "1-1", DirectoryStorage("/srv/recorder"), "1d6b:0104",
                        False, "sim"),
    ]


def test_udev_tracker_ignores_what_only_the_simulator_may_say() -> None:
    tracker = DeviceTracker(settings())
    events = [e for r in (add(USB), add(PTY), add(DISK)) for e in tracker.handle(r, 0.0)]
    assert events == []  # a pty is no recorder port: no control channel, nothing told
    tracker = DeviceTracker(settings(allow=[AllowedDevice(vid="1d6b", pid="0104",
                                                          storage_only=True)]))
    events = [e for r in (add(USB), add(DISK)) for e in tracker.handle(r, 0.0)]
    assert [e.storage for e in events if isinstance(e, StorageAppeared)] == [
        BlockStorage("/dev/sdz", "vfat", True)]  # the device node, never the directory


async def test_feed_sends_the_debounced_unplug_when_its_window_passes() -> None:
    got: list[DeviceEvent] = []
    arrived = asyncio.Event()

    def emit(event: DeviceEvent) -> None:
        got.append(event)
        arrived.set()

    feed = TrackerFeed(DeviceTracker(settings(debounce_ms=20), source="sim"), emit)
    try:
        feed.handle(add(USB))
        feed.handle(add(PTY))
        assert [type(e) for e in got] == [RecorderPlugged]
        arrived.clear()
        feed.resync([])  # everything gone: held for the window, then told by the timer
        async with asyncio.timeout(60):
            await arrived.wait()
        assert got[-1] == RecorderUnplugged("BWC00001", "1-1")
    finally:
        feed.close()


async def test_feed_flush_ends_pending_windows_now() -> None:
    got: list[DeviceEvent] = []
    feed = TrackerFeed(DeviceTracker(settings(debounce_ms=600_000), source="sim"), got.append)
    feed.handle(add(USB))
    feed.handle(add(PTY))
    feed.resync([])
    assert [type(e) for e in got] == [RecorderPlugged]
    feed.flush()
    assert got[-1] == RecorderUnplugged("BWC00001", "1-1") and feed.tracker.next_deadline() is None
    feed.close()
