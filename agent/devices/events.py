"""Domain events emitted by a device source (udev or the simulator).

After detection nothing downstream knows which source produced an event: both the
udev source and the simulator source emit exactly these types into one queue.
`key` identifies the physical recorder attachment: the USB `ID_SERIAL_SHORT` for udev,
the recorder serial for the simulator. `bay` is the operator-facing bay label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class BlockStorage:
    """A block device holding the recorder's filesystem (udev)."""

    devnode: str  # e.g. /dev/sda1, or /dev/sda for a whole-disk filesystem
    fs_type: str  # udev ID_FS_TYPE, e.g. "vfat", "exfat"
    whole_disk: bool  # filesystem directly on the disk, no partition table
    # Its USB device's node (/dev/bus/usb/BBB/DDD) at this enumeration: the session checks
    # the block node still belongs to it once mounted (agent.devices.port_identity), as
    # sda1 goes to the next device when this one leaves. Not part of the equality.
    usb_node: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class DirectoryStorage:
    """An already-readable directory holding the recorder's files (simulator)."""

    path: str


StorageRef = BlockStorage | DirectoryStorage


@dataclass(frozen=True, slots=True)
class PortIdentity:
    """Which device a control port node belongs to, as the kernel numbers it.

    A port node (ttyACM0, a pty) goes to the next device as soon as its device is gone, so
    a session opening the node checks it still belongs to the recorder it was told of
    (agent.devices.port_identity). `usb_node`: the recorder's USB device node
    (/dev/bus/usb/BBB/DDD), numbered anew at every enumeration (udev: the tty's sysfs
    device names it). `born_ns`: dock-sim only, the pty's creation time (its st_ctime),
    new with every pty however its number is reused.
    """

    usb_node: str
    born_ns: int | None = None


@dataclass(frozen=True, slots=True)
class RecorderPlugged:
    """A recorder's control channel (serial tty) appeared in a bay."""

    key: str
    bay: str
    tty_path: str
    vid_pid: str | None = None
    source: Literal["udev", "sim"] = "udev"
    # The port's device generation: what the session checks when it opens the node. Not
    # part of the event's equality (which recorder, which bay, which node).
    port: PortIdentity | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StorageAppeared:
    """A recorder's mass storage became visible (after unlock, or a storage-only recorder)."""

    key: str
    bay: str
    storage: StorageRef
    vid_pid: str | None = None
    storage_only: bool = False  # no serial control channel will follow
    source: Literal["udev", "sim"] = "udev"


@dataclass(frozen=True, slots=True)
class StorageRemoved:
    key: str
    bay: str


@dataclass(frozen=True, slots=True)
class RecorderUnplugged:
    """The recorder left the bay (tty gone, or the whole USB device gone)."""

    key: str
    bay: str


@dataclass(frozen=True, slots=True)
class DeviceRejected:
    """A USB device that is not an allowed recorder. It is never mounted or read."""

    bay: str
    vid_pid: str | None
    serial: str | None
    reason: str
    devpath: str | None = None


DeviceEvent = (
    RecorderPlugged | StorageAppeared | StorageRemoved | RecorderUnplugged | DeviceRejected
)
