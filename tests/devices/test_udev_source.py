"""The pyudev adapter on this machine's real udev context and netlink sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pyudev

from agent.devices.errors import DeviceConfigError
from agent.devices.events import DeviceEvent
from agent.devices.records import DeviceRecord
from agent.devices.udev_source import UdevDeviceSource, coldplug_records, to_record

from .conftest import settings


def _netlink_sockets() -> set[int]:
    """Inodes of the netlink sockets this process holds open."""
    netlink = {
        int(line.split()[-1])
        for line in Path("/proc/net/netlink").read_text().splitlines()[1:]
    }
    held: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[len("socket:[") : -1])
            if inode in netlink:
                held.add(inode)
    return held


async def test_source_starts_and_stops_cleanly() -> None:
    events: list[DeviceEvent] = []
    before = _netlink_sockets()
    source = UdevDeviceSource(settings(), context=pyudev.Context())
    task = asyncio.create_task(source.run(events.append))
    await asyncio.wait_for(source.ready.wait(), 30)
    monitor = _netlink_sockets() - before
    assert len(monitor) == 1  # the monitor is listening
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert not source.ready.is_set()
    # This build machine has no USB bays; whatever it has, nothing is mounted or offered.
    assert not any(type(e).__name__ == "StorageAppeared" for e in events)
    del task, source
    assert not monitor & _netlink_sockets()  # the monitor socket was released


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(DeviceConfigError):
        UdevDeviceSource(settings(bays={"nowhere": "Bay 1"}))


def test_real_devices_become_plain_records() -> None:
    context = pyudev.Context()
    records = coldplug_records(context)
    assert records, "every Linux machine has block or tty devices"
    for record in records:
        assert isinstance(record, DeviceRecord)
        assert record.action == "add"
        assert record.props["SUBSYSTEM"] in ("usb", "tty", "block")
        assert record.devpath.startswith("/devices/")
        assert all(isinstance(v, str) for v in record.props.values())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None, reason="needs root")
async def test_monitor_events_reach_the_tracker(tmp_path: Path) -> None:
    # udevd is not running on the build machine, so listen to the kernel's own uevents and
    # cause one by attaching a loop device; the tracker must see it as a plain record.
    seen: list[DeviceRecord] = []
    source = UdevDeviceSource(settings(), netlink_source="kernel")
    handle = source.tracker.handle

    def spy(record: DeviceRecord, now: float) -> list[DeviceEvent]:
        seen.append(record)
        return handle(record, now)

    source.tracker.handle = spy  # type: ignore[method-assign]
    events: list[DeviceEvent] = []
    task = asyncio.create_task(source.run(events.append))
    await asyncio.wait_for(source.ready.wait(), 30)
    seen.clear()
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (1 << 20))
    loop_dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        for _ in range(1200):  # up to 60 s on a loaded machine
            if any(r.props.get("DEVNAME") == loop_dev for r in seen):
                break
            await asyncio.sleep(0.05)
    finally:
        subprocess.run(["losetup", "-d", loop_dev], check=False)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    record = next(r for r in seen if r.props.get("DEVNAME") == loop_dev)
    assert record.props["SUBSYSTEM"] == "block" and record.usb is None
    assert events == []  # a loop device is in no bay


def test_to_record_of_a_real_block_device() -> None:
    context = pyudev.Context()
    device = next(iter(context.list_devices(subsystem="block")))
    record = to_record(device, "add")
    assert record.props["DEVNAME"] == device.device_node
    assert record.usb is None or "DEVPATH" in record.usb
