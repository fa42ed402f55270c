"""The device record: one udev-like device as plain data, and what is read from it.

Every device source produces these records and nothing else: the udev adapter converts
`pyudev.Device`s, the simulator adapter decodes dock-sim's announcements. `DeviceTracker`
decides everything from them, so allowlist, debounce and pairing are the same code for
real and simulated recorders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.devices.allowlist import format_vid_pid
from agent.devices.events import BlockStorage, DirectoryStorage, PortIdentity, StorageRef


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device event as udev reports it.

    `props` are the device's udev properties (ACTION, SUBSYSTEM, DEVPATH, DEVNAME, DEVTYPE,
    ID_FS_TYPE, ...). `usb` are the properties of its `usb_device` ancestor, with sysfs
    attributes the adapter could read added as `ATTR{name}`; None when it has none or it
    is already gone (remove events).
    """

    props: Mapping[str, str]
    usb: Mapping[str, str] | None = None

    @property
    def action(self) -> str:
        return self.props.get("ACTION", "add")

    @property
    def devpath(self) -> str:
        return self.props.get("DEVPATH", "")


def _hex4(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return f"{int(value, 16):04x}"
    except ValueError:
        return None


def usb_ids(usb: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(vid:pid, serial) of a usb_device from udev properties, sysfs attributes or PRODUCT."""
    vid = _hex4(usb.get("ID_VENDOR_ID") or usb.get("ATTR{idVendor}"))
    pid = _hex4(usb.get("ID_MODEL_ID") or usb.get("ATTR{idProduct}"))
    if (vid is None or pid is None) and usb.get("PRODUCT"):
        parts = usb["PRODUCT"].split("/")  # kernel: "1d6b/104/100", hex without padding
        if len(parts) >= 2:
            vid, pid = _hex4(parts[0]), _hex4(parts[1])
    vid_pid = format_vid_pid(vid, pid) if vid and pid else None
    serial = usb.get("ID_SERIAL_SHORT") or usb.get("ATTR{serial}") or None
    return vid_pid, serial


def is_hub(usb: Mapping[str, str]) -> bool:
    """USB class 09 (hub), from the kernel's TYPE=class/subclass/protocol or bDeviceClass."""
    device_class = usb.get("TYPE", "").split("/")[0]
    if device_class:
        return device_class == "9"
    return usb.get("ATTR{bDeviceClass}", "").strip() == "09"


STORAGE_DIR_PROPERTY = "DOCK_SIM_STORAGE_DIR"
"""dock-sim's block devices carry the directory their filesystem is readable at, because a
simulated recorder's storage is a directory, not a device node to mount. Honoured only for
records from the simulator."""


TTY_BORN_PROPERTY = "DOCK_SIM_TTY_BORN_NS"
"""dock-sim's control ports carry their pty's creation time (st_ctime in ns): a pty number is
reused as soon as it is free, so that time is what tells one recorder's port from the
next one's (agent.devices.port_identity). Honoured only for records from the simulator."""


def port_identity(usb_node: str, props: Mapping[str, str], *,
                  simulated: bool) -> PortIdentity | None:
    """The generation of a control port: its USB device's node (udev) or its pty's creation
    time (dock-sim). None when there is nothing to check against: no node, or a simulated
    port without its creation time (a pty has no sysfs device to ask)."""
    if simulated:
        born = props.get(TTY_BORN_PROPERTY, "")
        return PortIdentity(usb_node, int(born)) if born.isdigit() else None
    return PortIdentity(usb_node) if usb_node else None


def storage_of(props: Mapping[str, str], *, directories: bool,
               usb_node: str = "") -> StorageRef | None:
    """The storage a block device record holds, or None while it holds no filesystem (a
    partition table, no medium, or udev still probing). `directories`: accept the
    simulator's already-readable directories. `usb_node`: its USB device's node."""
    fs_type = props.get("ID_FS_TYPE", "")
    usage = props.get("ID_FS_USAGE", "filesystem")
    devtype = props.get("DEVTYPE", "")
    devnode = props.get("DEVNAME", "")
    if not (fs_type and usage == "filesystem" and devnode and devtype in ("disk", "partition")):
        return None
    directory = props.get(STORAGE_DIR_PROPERTY) if directories else None
    if directory:
        return DirectoryStorage(directory)
    return BlockStorage(devnode, fs_type, devtype == "disk", usb_node)
