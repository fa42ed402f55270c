"""Real loop devices, real filesystems and a real helper socket for the mount tests.

Root-only parts skip when not root (CI runs as root). Every loop device and mount made
here is torn down in finalizers, even when a test fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.mount import syscalls
from agent.mount.helper import HelperConfig, HelperServer, MountService
from agent.mount.mountinfo import read_mountinfo
from agent.mount.policy import DevicePolicy, ProbePolicy

IS_ROOT = os.geteuid() == 0
AGENT_UID = 65534  # the agent's stand-in: nobody
AGENT_GID = 65534
FILES = {"DCIM/100BWC/VID_0001.MP4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64,
         "DCIM/100BWC/VID_0002.MP4": b"second clip"}

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mount, losetup)")


def kernel_filesystems() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines()}


def fs_params() -> list[object]:
    have = kernel_filesystems()
    return [
        pytest.param(fs, marks=pytest.mark.skipif(fs not in have, reason=f"kernel lacks {fs}"))
        for fs in ("vfat", "ext4")
    ]


def _make_image(path: Path, fs_type: str, tmp: Path, root_owner: int | None = None) -> None:
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    if fs_type == "ext4":
        src = tmp / "content"
        for name, data in FILES.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        owner = [] if root_owner is None else ["-E", f"root_owner={root_owner}:{root_owner}"]
        subprocess.run(["mkfs.ext4", "-q", "-F", *owner, "-d", str(src), str(path)], check=True)
        return
    subprocess.run(["mkfs.vfat", "-n", "BWC10234", str(path)], check=True,
                   capture_output=True)
    # Fill it through a temporary read-write mount (the kernel has vfat: the test runs).
    loop = subprocess.run(["losetup", "--find", "--show", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()
    target = tmp / "fill"
    target.mkdir()
    try:
        syscalls.mount(loop, str(target), "vfat", 0, "")
        try:
            for name, data in FILES.items():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(data)
        finally:
            syscalls.umount(str(target), lazy=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


@dataclass
class LoopDevice:
    devnode: str
    fs_type: str
    image: Path


@contextlib.contextmanager
def loop_device(image: Path, fs_type: str) -> Iterator[LoopDevice]:
    devnode = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                             capture_output=True, text=True).stdout.strip()
    try:
        yield LoopDevice(devnode, fs_type, image)
    finally:
        rdev = os.stat(devnode).st_rdev
        for entry in read_mountinfo():  # anything a failed test left mounted
            if entry.device == (os.major(rdev), os.minor(rdev)):
                with contextlib.suppress(OSError):
                    syscalls.umount(entry.mount_point, lazy=True)
        subprocess.run(["losetup", "-d", devnode], check=False)


@pytest.fixture
def make_loop(tmp_path: Path) -> Iterator[Callable[..., LoopDevice]]:
    stack = contextlib.ExitStack()
    counter = iter(range(100))

    def make(fs_type: str = "ext4", *, blank: bool = False,
             root_owner: int | None = None) -> LoopDevice:
        n = next(counter)
        image = tmp_path / f"recorder{n}.img"
        if blank:
            with image.open("wb") as f:
                f.truncate(8 * 1024 * 1024)
        else:
            work = tmp_path / f"work{n}"
            work.mkdir()
            _make_image(image, fs_type, work, root_owner)
        return stack.enter_context(loop_device(image, fs_type))

    with stack:
        yield make


@dataclass
class Helper:
    service: MountService
    server: HelperServer
    socket_path: Path
    mount_root: Path


def start_helper(tmp: Path, policy: DevicePolicy) -> tuple[Helper, threading.Thread]:
    mount_root = tmp / "run" / "media"
    mount_root.parent.mkdir(parents=True, exist_ok=True)
    config = HelperConfig(mount_root, AGENT_UID, AGENT_GID, policy)
    service = MountService(config)
    socket_path = tmp / "mount.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(8)
    server = HelperServer(service, listener)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Helper(service, server, socket_path, mount_root), thread


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Helper]:
    h, thread = start_helper(tmp_path, ProbePolicy())
    try:
        yield h
    finally:
        h.server.close()
        thread.join(5)
        for entry in read_mountinfo():
            if entry.mount_point.startswith(str(h.mount_root) + "/"):
                with contextlib.suppress(OSError):
                    syscalls.umount(entry.mount_point, lazy=True)
        shutil.rmtree(h.mount_root, ignore_errors=True)
