"""Which USB devices are recorders: the `[[devices.allow]]` list.

Only a device whose VID:PID is listed and whose USB serial matches the entry's pattern is a
recorder. Everything else in a bay is rejected and never mounted or read: an unknown mass
storage device at an evidence dock is a leak channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.devices.errors import DeviceConfigError
from agent.settings import AllowedDevice

_HEX4 = re.compile(r"^[0-9a-fA-F]{4}$")


@dataclass(frozen=True, slots=True)
class Allowed:
    vid_pid: str
    storage_only: bool


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class _Entry:
    vid_pid: str
    pattern: re.Pattern[str] | None
    storage_only: bool


def format_vid_pid(vid: str, pid: str) -> str:
    return f"{vid.lower()}:{pid.lower()}"


class AllowList:
    def __init__(self, allow: Sequence[AllowedDevice], *, allow_storage_only: bool) -> None:
        self.allow_storage_only = allow_storage_only
        self._entries: list[_Entry] = []
        for i, item in enumerate(allow):
            if not (_HEX4.match(item.vid) and _HEX4.match(item.pid)):
                raise DeviceConfigError(
                    f"devices.allow[{i}]: vid and pid must be 4 hex digits, "
                    f"got {item.vid!r}:{item.pid!r}"
                )
            try:
                pattern = re.compile(item.serial_pattern) if item.serial_pattern else None
            except re.error as exc:
                raise DeviceConfigError(
                    f"devices.allow[{i}]: serial_pattern {item.serial_pattern!r} is not a "
                    f"valid regular expression: {exc}"
                ) from exc
            self._entries.append(
                _Entry(format_vid_pid(item.vid, item.pid), pattern, item.storage_only)
            )

    def check(self, vid_pid: str | None, serial: str | None) -> Allowed | Refused:
        """Decide whether a USB device is an allowed recorder."""
        if vid_pid is None:
            return Refused("USB vendor/product id unknown")
        candidates = [e for e in self._entries if e.vid_pid == vid_pid.lower()]
        if not candidates:
            return Refused(f"USB device {vid_pid} is not in the recorder allowlist")
        if not serial:
            return Refused(f"recorder {vid_pid} reports no USB serial number to identify it by")
        matching = [e for e in candidates if e.pattern is None or e.pattern.fullmatch(serial)]
        if not matching:
            return Refused(
                f"USB serial {serial!r} of {vid_pid} does not match the allowed serial pattern"
            )
        entry = matching[0]
        if entry.storage_only and not self.allow_storage_only:
            return Refused(
                f"{vid_pid} is a storage-only recorder and devices.allow_storage_only is false"
            )
        return Allowed(entry.vid_pid, entry.storage_only)
