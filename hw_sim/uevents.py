"""The udev-like device records of a virtual dock's recorders.

A recorder in bay N is what udev would report for a composite USB device on port N of a
host controller named `dock-sim`: the USB device itself (vendor/model ids and serial from
the spec), its control port (a pty instead of a ttyACM node) and, while its storage is
exposed, a block device whose filesystem is already readable at a directory. The agent
pairs and filters these exactly as it does real udev records (allowlist, bays, debounce).
Each record is {"props": {...}, "usb": {...} | null}: the device's properties and its USB
ancestor's, as the agent's udev adapter reads them.
"""

from __future__ import annotations

from pathlib import Path

CONTROLLER = "dock-sim"
STORAGE_DIR_PROPERTY = "DOCK_SIM_STORAGE_DIR"
TTY_BORN_PROPERTY = "DOCK_SIM_TTY_BORN_NS"
_BUS = 1

Props = dict[str, str]
Record = dict[str, Props | None]


def id_path(port: int) -> str:
    """udev's ID_PATH of the USB port behind bay number `port` (1-based)."""
    return f"platform-{CONTROLLER}-usb-0:{port}"


def _usb_devpath(port: int) -> str:
    return f"/devices/platform/{CONTROLLER}/usb{_BUS}/{_BUS}-{port}"


def usb_props(port: int, serial: str, vid: str, pid: str, model: str,
              devnum: int | None = None) -> Props:
    """The USB device of a recorder on `port`; ids are 4 hex digits. `devnum` is the
    device number the bus gave this enumeration (a kernel counts up at every plug, so a
    recorder put into a bay gets another device node than the one pulled out of it)."""
    num = port + 1 if devnum is None else devnum
    return {
        "SUBSYSTEM": "usb", "DEVTYPE": "usb_device", "DEVPATH": _usb_devpath(port),
        "DEVNAME": f"/dev/bus/usb/{_BUS:03d}/{num:03d}",
        "BUSNUM": f"{_BUS:03d}", "DEVNUM": f"{num:03d}", "ID_PATH": id_path(port),
        "ID_VENDOR_ID": vid.lower(), "ID_MODEL_ID": pid.lower(), "ID_MODEL": model,
        "ID_SERIAL_SHORT": serial, "ID_SERIAL": f"{CONTROLLER}_{model}_{serial}",
        "PRODUCT": f"{int(vid, 16):x}/{int(pid, 16):x}/100",
        "TYPE": "239/2/1",  # miscellaneous/IAD: a composite device, not a hub
    }


def born_ns(tty: str) -> int:
    """A pty's creation time: this pty, not a later one under the same number."""
    return Path(tty).stat().st_ctime_ns


def tty_props(port: int, tty: str, born_ns: int | None = None) -> Props:
    """The recorder's control port; its DEVPATH follows the pty, as a new ttyACM would.
    `born_ns`: the pty's creation time (st_ctime), which tells this pty from a later one
    under the same number, as a kernel's device number tells two enumerations apart."""
    node = Path(tty).name
    props = {
        "SUBSYSTEM": "tty", "DEVNAME": tty, "ID_PATH": f"{id_path(port)}:1.0",
        "DEVPATH": f"{_usb_devpath(port)}/{_BUS}-{port}:1.0/tty/pts{node}",
    }
    if born_ns is not None:
        props[TTY_BORN_PROPERTY] = str(born_ns)
    return props


def block_props(port: int, directory: str) -> Props:
    """The recorder's storage as a whole-disk filesystem, readable at `directory`."""
    return {
        "SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": f"/dev/{CONTROLLER}{port}",
        "DEVPATH": f"{_usb_devpath(port)}/{_BUS}-{port}:1.1/host{port}/block/simd{port}",
        "ID_PATH": f"{id_path(port)}:1.1-scsi-0:0:0:0", "ID_FS_TYPE": "vfat",
        "ID_FS_USAGE": "filesystem", STORAGE_DIR_PROPERTY: directory,
    }


def added(props: Props, usb: Props) -> Record:
    return {"props": {**props, "ACTION": "add"}, "usb": usb}


def removed(props: Props) -> Record:
    """What udev keeps of a device that is gone: no parent, identity properties only."""
    keep = ("SUBSYSTEM", "DEVTYPE", "DEVPATH", "DEVNAME", "PRODUCT", "TYPE")
    return {"props": {k: props[k] for k in keep if k in props} | {"ACTION": "remove"},
            "usb": None}
