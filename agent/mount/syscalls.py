"""mount(2), umount2(2) and the block-device read-only switch, called directly.

Calling the kernel rather than mount(8) keeps the helper free of PATH lookups, option
parsing and path canonicalisation, and lets it name the target through a directory file
descriptor (race-free against a swapped path component).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import struct

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_NOATIME = 1024
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
BLKROSET = 0x125D  # _IO(0x12, 93)

READ_ONLY_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: str, fs_type: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fs_type.encode(), flags, data.encode()):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def umount(target: str, *, lazy: bool) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
    if _libc.umount2(target.encode(), flags):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def set_block_read_only(devnode: str) -> None:
    """Make the kernel refuse every write to the device, whatever a filesystem tries."""
    fd = os.open(devnode, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1))
    finally:
        os.close(fd)
