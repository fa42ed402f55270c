"""Which block devices the helper may mount, and with which filesystem type.

The helper trusts nothing the agent says about a device. The default policy asks udev:
only devices our udev rule tagged `DOCK_AGENT_RECORDER=1` (USB IDs of allowed recorders)
are mounted, with the filesystem udev's blkid probe found. The policy is replaceable so
tests and benches can mount loop devices, which no udev rule tags.
"""

from __future__ import annotations

import subprocess
from typing import Protocol

import pyudev

from agent.mount.errors import MountRefused

ALLOWED_FILESYSTEMS = frozenset({"vfat", "exfat", "ext4"})
TAG = "DOCK_AGENT_RECORDER"


class DevicePolicy(Protocol):
    def filesystem_of(self, devnode: str) -> str:
        """The filesystem type to mount `devnode` with; raises MountRefused if not allowed."""
        ...


def _allowed(fs_type: str, devnode: str) -> str:
    if fs_type not in ALLOWED_FILESYSTEMS:
        raise MountRefused(
            "filesystem_not_allowed",
            f"{devnode} holds {fs_type or 'no known filesystem'}; the helper mounts only "
            f"{', '.join(sorted(ALLOWED_FILESYSTEMS))}",
        )
    return fs_type


class UdevTagPolicy:
    """Production policy: the udev database must say this is a tagged recorder."""

    def filesystem_of(self, devnode: str) -> str:
        try:
            device = pyudev.Devices.from_device_file(pyudev.Context(), devnode)
        except (pyudev.DeviceNotFoundError, OSError, ValueError) as exc:
            raise MountRefused("unknown_device", f"udev does not know {devnode}: {exc}") from exc
        props = device.properties
        if props.get(TAG) != "1":
            raise MountRefused(
                "untagged",
                f"{devnode} is not tagged {TAG}=1 by the dock-agent udev rule: not a recorder",
            )
        return _allowed(str(props.get("ID_FS_TYPE", "")), devnode)


class ProbePolicy:
    """Tests and benches only: any block device, filesystem from a fresh blkid probe."""

    def filesystem_of(self, devnode: str) -> str:
        result = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", devnode],
            capture_output=True, text=True, check=False, timeout=30,
        )
        return _allowed(result.stdout.strip(), devnode)
