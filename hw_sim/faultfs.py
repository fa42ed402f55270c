# ruff: noqa: PTH115, PTH116, PTH208
# (bytes paths on purpose: names on a recorder need not be valid UTF-8)
"""A read-only FUSE passthrough of a recorder's backing directory that injects file faults.

Runs in its own process (`python -m hw_sim.faultfs CONFIG_JSON`), so libfuse's signal
handling and blocking main loop stay out of the simulator's event loop; `hw_sim.fusemount`
starts and unmounts it. Faults:
  - EIO at offset: a read covering the offset returns the bytes before it (a short read),
    a read starting at it fails with EIO (`eio_count` times, or always); each failure
    prints "eio <name hex> <offset>" on stdout.
  - unplug at byte N of a file: reads stop at N; the first read at/after N prints
    "unplug" on stdout (the recorder then unplugs) and from then on every operation fails
    with EIO, like a vanished USB device.
  - "ready" is printed once the filesystem serves requests (and would unmount on SIGTERM).
  - growing file: its size starts at half the real size and grows by `grow_step` bytes
    with every read until the whole file is visible.
  - unlistable directory: listing it fails with EACCES (its own attributes are fine).
  - unstatable entry: looking up its attributes fails with EIO.
  - read rate: every read waits its turn so the storage delivers at most `rate` bytes/s
    (a recorder's USB 2.0 link; `hw_sim.storage.ReadPacer`).
Files are opened with direct_io so every application read reaches this process unchanged
(no page cache, no readahead hiding the fault offsets).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import stat
import sys
import threading
from typing import Any

import mfusepy

from hw_sim.backingread import BackingReader
from hw_sim.storage import ReadPacer

ReadDirResult = list[str]


class FaultFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, config: dict[str, Any]) -> None:
        self.base = os.fsencode(config["backing"])
        self.eio = {bytes.fromhex(p): off for p, off in config.get("eio", [])}
        self.eio_left: dict[bytes, int | None] = dict.fromkeys(self.eio, config.get("eio_count"))
        unplug = config.get("unplug")
        self.unplug: tuple[bytes, int] | None = (
            (bytes.fromhex(unplug[0]), int(unplug[1])) if unplug else None
        )
        self.grow_step = int(config.get("grow_step", 65536))
        self.growing: dict[bytes, int] = {}  # name -> currently visible size
        for p in config.get("growing", []):
            name = bytes.fromhex(p)
            self.growing[name] = os.lstat(self._full(b"/" + name)).st_size // 2
        self.unlistable = {os.fsencode(p).strip(b"/") for p in config.get("unlistable", [])}
        self.unstatable = {os.fsencode(p).strip(b"/") for p in config.get("unstatable", [])}
        self.gone = False
        self._lock = threading.Lock()
        rate = config.get("rate")
        self.pacer = ReadPacer(float(rate)) if rate else None
        self.readers: dict[int, BackingReader] = {}  # open file handle -> its reader

    # --- helpers ------------------------------------------------------------------------
    def _full(self, rel: bytes) -> bytes:
        return self.base + rel

    @staticmethod
    def _rel(path: str) -> bytes:
        return os.fsencode(path).lstrip(b"/")

    @staticmethod
    def _notice(line: str) -> None:
        """Tell the simulator (our parent) what just happened; one line on stdout."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _check(self) -> None:
        if self.gone:
            raise mfusepy.FuseOSError(errno.EIO)

    # --- operations -----------------------------------------------------------------------
    def init(self, path: str) -> None:
        # libfuse handles FUSE_INIT inside its loop, i.e. after its SIGTERM handler (which
        # unmounts) is in place: only from now on does the parent's death take the mount away.
        self._notice("ready")

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._check()
        if self._rel(path) in self.unstatable:
            raise mfusepy.FuseOSError(errno.EIO)
        try:
            st = os.lstat(self._full(os.fsencode(path)))
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from None
        attrs = {
            key: getattr(st, key)
            for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev",
                        "st_ino", "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
        }
        for k in ("atime", "mtime", "ctime"):
            attrs[f"st_{k}"] = attrs.pop(f"st_{k}_ns")
        with self._lock:
            visible = self.growing.get(self._rel(path))
        if visible is not None:
            attrs["st_size"] = visible
        return attrs

    def readdir(self, path: str, fh: int) -> ReadDirResult:
        self._check()
        if self._rel(path) in self.unlistable:
            raise mfusepy.FuseOSError(errno.EACCES)
        try:
            names = os.listdir(self._full(os.fsencode(path)))
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from None
        return [".", "..", *(os.fsdecode(n) for n in names)]

    def readlink(self, path: str) -> str:
        self._check()
        return os.fsdecode(os.readlink(self._full(os.fsencode(path))))

    def open(self, path: str, flags: int) -> int:
        self._check()
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise mfusepy.FuseOSError(errno.EROFS)
        try:
            fh = os.open(self._full(os.fsencode(path)), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from None
        reader = BackingReader(fh)
        with self._lock:
            self.readers[fh] = reader
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._check()
        rel = self._rel(path)
        end = offset + size
        with self._lock:
            if rel in self.growing:
                visible = self.growing[rel]
                end = min(end, visible)
                full = os.fstat(fh).st_size
                self.growing[rel] = min(full, visible + self.grow_step)
            fault = self.eio.get(rel)
            if fault is not None and offset <= fault < end:
                left = self.eio_left[rel]
                if left is None or left > 0:
                    if offset == fault:
                        if left is not None:
                            self.eio_left[rel] = left - 1
                        self._notice(f"eio {rel.hex()} {fault}")
                        raise mfusepy.FuseOSError(errno.EIO)
                    end = fault
            if self.unplug is not None and rel == self.unplug[0]:
                at = self.unplug[1]
                if offset >= at:
                    self.gone = True
                    self._notice("unplug")
                    raise mfusepy.FuseOSError(errno.EIO)
                end = min(end, at)
        if end <= offset:
            return b""
        slot_end = None if self.pacer is None else self.pacer.book(end - offset)
        with self._lock:
            reader = self.readers.get(fh)
        data = (os.pread(fh, end - offset, offset) if reader is None
                else reader.pread(end - offset, offset))
        if self.pacer is not None and slot_end is not None:
            self.pacer.wait(slot_end)
        return data

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            reader = self.readers.pop(fh, None)
        if reader is None:
            os.close(fh)
        else:
            reader.close()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        self._check()
        st = os.statvfs(self.base)
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the simulator dies, so libfuse unmounts on its way
    out instead of leaving a dead mount behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    config = json.loads(args[0])
    st = os.stat(config["backing"])
    if not stat.S_ISDIR(st.st_mode):
        print(f"backing {config['backing']} is not a directory", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"foreground": True, "ro": True, "direct_io": True,
                               "fsname": "hw_sim", "default_permissions": True,
                               # no attribute caching: a growing file's size is always fresh
                               "attr_timeout": 0, "entry_timeout": 0, "negative_timeout": 0}
    if os.geteuid() == 0:
        options["allow_other"] = True
    mfusepy.FUSE(FaultFS(config), config["mountpoint"], **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
