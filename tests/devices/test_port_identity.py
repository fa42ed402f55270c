"""Each plugged recorder's port carries its device generation, and a port node is judged
against it: by sysfs for udev (the tty's USB device and the number the kernel gave that
enumeration), by the pty's creation time for dock-sim."""

from __future__ import annotations

import os
from pathlib import Path

from agent.devices.events import BlockStorage, PortIdentity, RecorderPlugged, StorageAppeared
from agent.devices.matching import DeviceTracker
from agent.devices.port_identity import still_belongs, storage_still_belongs, usb_node_of
from agent.devices.records import DeviceRecord
from hw_sim import uevents

from .conftest import settings
from .test_replug import ALLOW, NEW, OLD, SimRecorder, run

USB = "devices/pci0000:00/0000:00:14.0/usb1/1-2"


def sysfs_with(root: Path, node: str, busnum: int | None, devnum: int) -> Path:
    """A sysfs tree where tty `node` is an interface of the USB device 1-2."""
    usb = root / USB
    tty = usb / "1-2:1.0" / "tty" / node
    tty.mkdir(parents=True, exist_ok=True)
    if busnum is not None:
        (usb / "busnum").write_text(f"{busnum}\n")
        (usb / "devnum").write_text(f"{devnum}\n")
    link = root / "class" / "tty" / node
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(tty, link.parent))
    (tty / "device").symlink_to("../..")  # as in sysfs: the tty's device is its interface
    return root


def test_udev_port_is_judged_by_the_usb_device_number(tmp_path: Path) -> None:
    sysfs = sysfs_with(tmp_path, "ttyACM0", 1, 7)
    mine = PortIdentity("/dev/bus/usb/001/007")
    assert usb_node_of("/dev/ttyACM0", "tty", sysfs) == "/dev/bus/usb/001/007"
    assert still_belongs("/dev/ttyACM0", mine, sysfs)
    # the next recorder enumerated (device 8) now has ttyACM0
    (tmp_path / USB / "devnum").write_text("8\n")
    assert not still_belongs("/dev/ttyACM0", mine, sysfs)
    # no device has the node any more
    assert not still_belongs("/dev/ttyACM1", mine, sysfs)


def test_udev_port_check_refuses_only_on_evidence(tmp_path: Path) -> None:
    mine = PortIdentity("/dev/bus/usb/001/007")
    assert still_belongs("/dev/ttyACM0", mine, tmp_path / "no-sysfs")  # sysfs not mounted
    sysfs = sysfs_with(tmp_path, "ttyS0", None, 0)  # a tty not below a USB device
    assert usb_node_of("/dev/ttyS0", "tty", sysfs) is None
    assert still_belongs("/dev/ttyS0", mine, sysfs)


def test_a_pty_is_judged_by_its_creation_time() -> None:
    master, slave = os.openpty()
    try:
        pty = os.ttyname(slave)
        mine = PortIdentity("/dev/bus/usb/001/002", uevents.born_ns(pty))
        assert still_belongs(pty, mine)
        assert not still_belongs(pty, PortIdentity(mine.usb_node, uevents.born_ns(pty) + 1))
    finally:
        os.close(slave)
        os.close(master)
    assert not still_belongs("/dev/pts/does-not-exist", mine)


def sim_plug(rec: SimRecorder, born: int) -> list[DeviceRecord]:
    tty = uevents.added(uevents.tty_props(1, rec.pty, born), rec.usb)
    props, usb = tty["props"], tty["usb"]
    assert props is not None
    return [rec.add("usb"), DeviceRecord(props, usb)]


def test_every_plug_tells_its_port_generation() -> None:
    t = DeviceTracker(settings(allow=ALLOW, debounce_ms=1500), source="sim")
    (old,) = run(t, sim_plug(OLD, 111), 0.0)
    assert isinstance(old, RecorderPlugged)
    assert old.port == PortIdentity(f"/dev/bus/usb/001/{OLD.devnum:03d}", 111)
    gone = run(t, [OLD.remove("tty"), OLD.remove("usb")], 0.1)
    new_events = run(t, sim_plug(NEW, 222), 0.2)
    plugged = [e for e in gone + new_events if isinstance(e, RecorderPlugged)]
    assert [p.port for p in plugged] == [
        PortIdentity(f"/dev/bus/usb/001/{NEW.devnum:03d}", 222)]


def test_udev_records_give_the_usb_node_only() -> None:
    """From udev the pty property is ignored: only dock-sim's records may carry it."""
    t = DeviceTracker(settings(allow=ALLOW), source="udev")
    usb = uevents.usb_props(1, "CUST0099", "1209", "d0c5", "BWC-1", 9)
    tty = {"SUBSYSTEM": "tty", "DEVNAME": "/dev/ttyACM0", "ACTION": "add",
           "DEVPATH": usb["DEVPATH"] + "/1-1:1.0/tty/ttyACM0",
           uevents.TTY_BORN_PROPERTY: "5"}
    events = run(t, [DeviceRecord({**usb, "ACTION": "add"}, usb), DeviceRecord(tty, usb)],
                 0.0)
    (plugged,) = [e for e in events if isinstance(e, RecorderPlugged)]
    assert plugged.port == PortIdentity("/dev/bus/usb/001/009")


def test_a_simulated_port_without_its_creation_time_is_not_checked() -> None:
    """An older dock-sim names no creation time: a pty has no sysfs device to ask, so
    there is nothing to check against (never a docking refused on no evidence)."""
    t = DeviceTracker(settings(allow=ALLOW), source="sim")
    (plugged,) = run(t, [OLD.add("usb"), OLD.add("tty")], 0.0)
    assert isinstance(plugged, RecorderPlugged) and plugged.port is None


def test_a_block_node_is_judged_by_its_usb_device(tmp_path: Path) -> None:
    usb = tmp_path / USB
    block = usb / "1-2:1.1" / "host3" / "target3:0:0" / "3:0:0:0" / "block" / "sda" / "sda1"
    block.mkdir(parents=True)
    (usb / "busnum").write_text("1\n")
    (usb / "devnum").write_text("7\n")
    link = tmp_path / "class" / "block" / "sda1"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(block, link.parent))
    mine = BlockStorage("/dev/sda1", "vfat", False, "/dev/bus/usb/001/007")
    assert storage_still_belongs(mine, tmp_path)
    (usb / "devnum").write_text("8\n")  # the next recorder's storage is sda1 now
    assert not storage_still_belongs(mine, tmp_path)
    assert not storage_still_belongs(BlockStorage("/dev/sdb1", "vfat", False,
                                                  "/dev/bus/usb/001/007"), tmp_path)
    assert storage_still_belongs(BlockStorage("/dev/sda1", "vfat", False), tmp_path)


def test_announced_storage_names_its_usb_device() -> None:
    t = DeviceTracker(settings(allow=ALLOW), source="udev")
    usb = uevents.usb_props(1, "CUST0098", "1209", "d0c5", "BWC-1", 11)
    disk = {"SUBSYSTEM": "block", "DEVTYPE": "partition", "DEVNAME": "/dev/sda1",
            "ACTION": "add", "ID_FS_TYPE": "vfat", "ID_FS_USAGE": "filesystem",
            "DEVPATH": usb["DEVPATH"] + "/1-1:1.1/host3/target3:0:0/3:0:0:0/block/sda/sda1"}
    tty = {"SUBSYSTEM": "tty", "DEVNAME": "/dev/ttyACM0", "ACTION": "add",
           "DEVPATH": usb["DEVPATH"] + "/1-1:1.0/tty/ttyACM0"}
    events = run(t, [DeviceRecord({**usb, "ACTION": "add"}, usb), DeviceRecord(tty, usb),
                     DeviceRecord(disk, usb)], 0.0)
    (appeared,) = [e for e in events if isinstance(e, StorageAppeared)]
    assert isinstance(appeared.storage, BlockStorage)
    assert appeared.storage.usb_node == "/dev/bus/usb/001/011"
