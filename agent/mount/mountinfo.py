"""Reading /proc/self/mountinfo: what is mounted where, from which device, with which flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_point: str
    device: tuple[int, int]  # major, minor of the filesystem's device
    options: frozenset[str]  # per-mount options: ro, nosuid, nodev, noexec, ...
    fs_type: str
    source: str
    super_options: frozenset[str]


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        major, _, minor = fields[2].partition(":")
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                device=(int(major), int(minor)),
                options=frozenset(fields[5].split(",")),
                fs_type=tail[0],
                source=_unescape(tail[1]),
                super_options=frozenset(tail[2].split(",")),
            )
        )
    return entries


def read_mountinfo(path: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    return parse_mountinfo(path.read_text())


def mounted_at(entries: list[MountEntry], mount_point: str) -> MountEntry | None:
    """The top-most mount at `mount_point`, if any."""
    found = [e for e in entries if e.mount_point == mount_point]
    return found[-1] if found else None


def mounts_of_device(entries: list[MountEntry], rdev: int) -> list[MountEntry]:
    device = (os.major(rdev), os.minor(rdev))
    return [e for e in entries if e.device == device]
