"""A recorder's storage as a real block device whose reads the kernel throttles.

A recorder reads no faster than its USB 2.0 link (30-42 MB/s). The FUSE view can pace its
reads, but in Python: with 25 recorders at once on a small machine the 25 FUSE servers
took more CPU than the agent and could not deliver the links' rate, so the simulator, not
the agent, set the aggregate. Here the footage lives in an ext4 image on a loop device
(direct I/O to the image file, so no second page cache) and the kernel's block throttle
(cgroup v1 `blkio.throttle.read_bps_device` at the root of the hierarchy, which every
process below it obeys) holds every read of that device to the recorder's rate, at the
cost of a few kernel cycles. Reads through the page cache (the agent's buffered reads with
readahead) and O_DIRECT reads are throttled alike.

Layout: `<recorder dir>/storage.img` is the recorder's filesystem. While the recorder is
plugged the image is mounted read-write on `backing/` (what its firmware lists and
deletes); switching mass storage on bind-mounts it read-only on `media/`, off unmounts
`media/`. Unplug unmounts both (lazily when the reader still has files open: those reads go
on, unthrottled, until closed; a recorder pulled out mid-read is the FUSE faults' job),
clears the throttle and detaches the loop device. A simulator killed while plugged leaves
mounts and a loop device behind: the next attach of the same image clears them first.

Needs root, /dev/loop-control, losetup (util-linux), mkfs.ext4 (e2fsprogs)
and the cgroup v1 blkio throttle; `kernel_throttle_unavailable()` says what is missing.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import struct
import subprocess
from pathlib import Path

from hw_sim.errors import SimError

THROTTLE_FILE = Path("/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device")
IMAGE_NAME = "storage.img"
_TOOLS = ("losetup", "mkfs.ext4")

_live: dict[str, BlockVolume] = {}  # image path -> attached volume, detached at exit


class BlockVolumeError(SimError):
    """A loop device, mount or throttle operation of a recorder's block storage failed."""


def kernel_throttle_unavailable() -> str | None:
    """Why the kernel cannot throttle a recorder's reads here, or None when it can."""
    if os.geteuid() != 0:
        return "not root (loop devices, mounts and the blkio throttle need root)"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (loop devices)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt util-linux, e2fsprogs)"
    if not os.access(THROTTLE_FILE, os.W_OK):
        return f"no writable {THROTTLE_FILE} (cgroup v1 blkio throttle)"
    return None


def rate_by_kernel(rate_mb_s: float | None, by: str) -> bool:
    """Whether the kernel holds a recorder's read rate (`Faults.read_rate_mb_s`, asked of
    `Faults.read_rate_by`); else the FUSE view paces it. Only "kernel" insists."""
    if rate_mb_s is None or by == "fuse":
        return False
    why = kernel_throttle_unavailable()
    if why is None:
        return True
    if by == "kernel":
        raise BlockVolumeError(f"read_rate_by = kernel, but {why}")
    return False


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BlockVolumeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


# mount(2) and umount2(2) straight from libc: 25 recorders plugged at once spent seconds
# spawning mount(8) in turn, which set when each bay's storage appeared.
MS_RDONLY, MS_REMOUNT, MS_NOATIME, MS_BIND = 1, 32, 1024, 4096
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: Path, fstype: str | None, flags: int) -> None:
    ok = _libc.mount(None if source is None else os.fsencode(source), os.fsencode(target),
                     None if fstype is None else fstype.encode(), flags, None) == 0
    if not ok:
        err = ctypes.get_errno()
        raise BlockVolumeError(f"mount {source} on {target}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def unmount(path: Path) -> bool:
    """Unmount `path` (lazily when busy) if something is mounted there; True if lazy."""
    if not is_mounted(path):
        return False
    if _libc.umount2(os.fsencode(path), 0) == 0:
        return False
    if ctypes.get_errno() != errno.EBUSY:
        return False  # gone meanwhile, or not ours to unmount: nothing left to do here
    _libc.umount2(os.fsencode(path), MNT_DETACH)
    return True


def image_size(total_bytes: int, files: int) -> int:
    """Bytes for an image holding `files` files of `total_bytes` in all, with room for the
    filesystem's own metadata and the few small entries a spec adds (hostile names)."""
    size = total_bytes + total_bytes // 32 + files * 16384 + (48 << 20)
    return -(-size // (1 << 20)) << 20


def _device_number(device: str) -> str:
    st = Path(device).stat()
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def set_read_limit(device: str, rate: int) -> None:
    """Throttle every read of `device` to `rate` bytes/s (0 removes the limit)."""
    try:
        THROTTLE_FILE.write_text(f"{_device_number(device)} {rate}\n")
    except OSError as exc:
        raise BlockVolumeError(f"cannot set the read limit of {device}: {exc}") from exc


def read_limit(device: str) -> int:
    """The read limit the kernel holds for `device` (0: none)."""
    number = _device_number(device)
    for line in THROTTLE_FILE.read_text().splitlines():
        dev, _, rate = line.partition(" ")
        if dev == number:
            return int(rate)
    return 0


BLKROSET = 0x125D  # linux/fs.h: set a block device's read-only flag
LOOP_CLR_FD = 0x4C01  # linux/loop.h: detach (on a device still in use: once it is released)
ATTACHED = ".attached"  # beside the image while a loop device holds it: a crash leaves it


def make_writable(device: str) -> None:
    """Clear the read-only flag some hosts give every new loop device (the image itself
    is writable: the recorder's firmware writes and deletes on it)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", 0))
    except OSError as exc:
        raise BlockVolumeError(f"cannot make {device} writable: {exc}") from exc
    finally:
        os.close(fd)


def loop_devices_of(image: Path) -> list[str]:
    """Loop devices backed by `image` (left attached by a killed simulator, say)."""
    out = _run("losetup", "--noheadings", "--output", "NAME", "--associated", str(image))
    return [line.strip() for line in out.splitlines() if line.strip()]


class BlockVolume:
    """One recorder's image, loop device, throttle and mounts (blocking calls)."""

    def __init__(self, recorder_dir: Path, rate: int) -> None:
        if rate < 0:
            raise BlockVolumeError("a read rate must not be negative (0: no limit)")
        self.image = recorder_dir / IMAGE_NAME
        self.backing = recorder_dir / "backing"
        self.media = recorder_dir / "media"
        self.rate = rate
        self.device: str | None = None

    def set_rate(self, rate: int) -> None:
        """A new read limit in bytes/s (0: none), at once if attached."""
        self.rate = rate
        if self.device is not None:
            set_read_limit(self.device, rate)

    # --- plug and unplug ---------------------------------------------------------------
    def attach(self, total_bytes: int, files: int, *, fresh: bool = False) -> None:
        """Attach the image (a new, empty one when missing or `fresh`), throttle its loop
        device and mount it read-write on backing/."""
        self.clear_leftovers()
        if fresh:
            self.image.unlink(missing_ok=True)
        if not self.image.exists():
            self._make_image(image_size(total_bytes, files), files)
        self.device = _run("losetup", "--find", "--show", "--direct-io=on", str(self.image))
        _live[str(self.image)] = self
        self.image.with_name(IMAGE_NAME + ATTACHED).write_text(self.device + "\n")
        try:
            make_writable(self.device)
            set_read_limit(self.device, self.rate)
            self.backing.mkdir(parents=True, exist_ok=True)
            mount(self.device, self.backing, "ext4", MS_NOATIME)
        except BlockVolumeError:
            self.detach()
            raise
        lost = self.backing / "lost+found"
        if lost.is_dir():
            lost.rmdir()  # not a recorder's: the agent would list it as a stray entry

    def settle(self) -> None:
        """Write out what was just written and drop it from the page cache (by mounting
        again), so the host's first reads come from the device at the device's rate."""
        if self.device is None:
            raise BlockVolumeError(f"{self.image} is not attached")
        if unmount(self.backing):
            raise BlockVolumeError(f"{self.backing} is busy: its footage stays cached")
        mount(self.device, self.backing, "ext4", MS_NOATIME)

    def _make_image(self, size: int, files: int) -> None:
        tmp = self.image.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.truncate(size)  # sparse: the disk holds only what is written
        _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-N", str(files + 1024),
             "-E", "lazy_itable_init=0", str(tmp))
        tmp.replace(self.image)

    def detach(self) -> None:
        """Unmount both views, lift the throttle and detach the loop device. Idempotent."""
        unmount(self.media)
        unmount(self.backing)
        device, self.device = self.device, None
        _live.pop(str(self.image), None)
        if device is not None:
            with contextlib.suppress(BlockVolumeError, OSError):
                set_read_limit(device, 0)
            detach_loop(device)
        self.image.with_name(IMAGE_NAME + ATTACHED).unlink(missing_ok=True)

    def clear_leftovers(self) -> None:
        clear_leftovers(self.image.parent)

    # --- mass storage on and off ---------------------------------------------------------
    def expose(self) -> Path:
        """Mass storage on: the filesystem appears read-only on media/."""
        if self.device is None:
            raise BlockVolumeError(f"{self.image} is not attached")
        if not is_mounted(self.media):
            self.media.mkdir(parents=True, exist_ok=True)
            mount(str(self.backing), self.media, None, MS_BIND)
            try:
                mount(None, self.media, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            except BlockVolumeError:
                unmount(self.media)
                raise
        return self.media

    def hide(self) -> None:
        """Mass storage off: media/ goes away (lazily if the host still reads)."""
        unmount(self.media)


def clear_leftovers(recorder_dir: Path) -> None:
    """Undo what a simulator killed while the recorder was plugged left behind: mounts on
    media/ and backing/, and loop devices still backed by its image (with their throttle).
    Does nothing where no image was ever made."""
    image = recorder_dir / IMAGE_NAME
    if not image.exists():
        return
    unmount(recorder_dir / "media")
    unmount(recorder_dir / "backing")
    marker = recorder_dir / (IMAGE_NAME + ATTACHED)
    if not marker.exists() or shutil.which("losetup") is None:
        return  # detached cleanly last time: no loop device to look for
    for device in loop_devices_of(image):
        with contextlib.suppress(BlockVolumeError, OSError):
            set_read_limit(device, 0)
        detach_loop(device)
    marker.unlink(missing_ok=True)


def detach_loop(device: str) -> None:
    """Detach a loop device; one still in use (a lazily unmounted filesystem with files
    open) is marked to go away by itself once released (autoclear)."""
    with contextlib.suppress(OSError):
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        finally:
            os.close(fd)


@atexit.register
def _detach_leftovers() -> None:
    for volume in list(_live.values()):
        with contextlib.suppress(Exception):
            volume.detach()
