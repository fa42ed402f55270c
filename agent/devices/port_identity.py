"""Does a port node (or a storage node) still belong to the device the dock was told of?

Between a recorder leaving and the device source hearing of it, its port node (ttyACM0,
a reused pty) may already belong to the next recorder: a session opening the node then
would talk to another recorder and take its answers for a disagreement about serials.
The session opens the node first and asks here second (an open node stays with its
device: if that device goes, the open node only hangs up), so a "no" means the node now
belongs to another device, or to none: the recorder it was told of is gone. The same holds
for a recorder's block device (sda1 goes to the next device), checked once mounted.
"""

from __future__ import annotations

from pathlib import Path

from agent.devices.events import BlockStorage, PortIdentity

SYSFS = Path("/sys")  # where the kernel says which device has which node


def usb_node_of(node: str, device_class: str = "tty", sysfs: Path | None = None) -> str | None:
    """The USB device node (/dev/bus/usb/BBB/DDD) a /dev node of `device_class` ("tty",
    "block") belongs to now, by sysfs; "" if no device has the node; None if sysfs cannot
    tell (not mounted, not below a USB device)."""
    sysfs = SYSFS if sysfs is None else sysfs
    devices = sysfs / "class" / device_class
    if not devices.is_dir():
        return None
    try:
        device = (devices / Path(node).name).resolve(strict=True)
    except OSError:
        return ""  # the node's device is gone
    for directory in (device, *device.parents):
        if directory == sysfs or directory == directory.parent:
            break
        try:
            bus = int((directory / "busnum").read_text())
            dev = int((directory / "devnum").read_text())
        except (OSError, ValueError):
            continue
        return f"/dev/bus/usb/{bus:03d}/{dev:03d}"
    return None


def still_belongs(tty_path: str, port: PortIdentity, sysfs: Path | None = None) -> bool:
    """Whether the node at `tty_path` still belongs to the device `port` names (True when
    that cannot be told: the check only ever refuses on evidence)."""
    if port.born_ns is not None:  # dock-sim's pty: its creation time is its generation
        try:
            return Path(tty_path).stat().st_ctime_ns == port.born_ns
        except OSError:
            return False
    owner = usb_node_of(tty_path, "tty", sysfs)
    return owner is None or owner == port.usb_node


def storage_still_belongs(storage: BlockStorage, sysfs: Path | None = None) -> bool:
    """Whether the block node still belongs to the USB device it was announced on (True
    when that cannot be told)."""
    if not storage.usb_node:
        return True
    owner = usb_node_of(storage.devnode, "block", sysfs)
    return owner is None or owner == storage.usb_node
