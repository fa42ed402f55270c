"""Writes into a partial file with O_DIRECT where the filesystem allows it.

Direct I/O moves the bytes from the (page-aligned) copy buffer to the disk without a
second copy into the page cache and without the dirty pages piling up behind it: on this
kind of hardware that is both the faster path and the cheaper one in CPU, once several
writes are in flight (`agent.offload.inflight`). It changes nothing in the durability
rules: the data is still only durable after `fdatasync`/`fsync` (the extent and size
metadata need it), and the caller does those exactly as before.

Alignment rules: an O_DIRECT write must start at an aligned file offset, have an aligned
length and come from an aligned buffer. Aligned spans go direct; a span that is not
aligned (the file's tail, or everything after a short read moved the offset) is written
buffered. The direct writes go through a second descriptor of the same open file (reopened
through /proc/self/fd, so it is the same inode whatever happens to the path) opened with
O_DIRECT; the caller's descriptor stays buffered. Nothing toggles a descriptor's flags, so
several threads may write different spans at once. A filesystem that refuses O_DIRECT
(EINVAL at the reopen, or on the first direct write) gets buffered writes for the rest of
the file.
"""

from __future__ import annotations

import contextlib
import errno
import os

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        with view[done:] as rest:
            done += os.pwrite(fd, rest, offset + done)


def open_direct(fd: int) -> int | str:
    """A second, O_DIRECT descriptor for writing the file open as `fd`; or why not."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
            raise
        return f"O_DIRECT refused: {exc.strerror}"


class PartialWriter:
    """Positional writes to one open partial; O_DIRECT for aligned spans when allowed.

    Safe for several threads writing different spans at once. `close()` closes only the
    direct descriptor it opened; the caller keeps and closes `fd`."""

    def __init__(self, fd: int, *, direct: bool = True) -> None:
        self.fd = fd
        self._direct_fd = -1
        self.refused: str | None = None
        if direct:
            got = open_direct(fd)
            if isinstance(got, str):
                self.refused = got
            else:
                self._direct_fd = got
        self.direct = self._direct_fd >= 0

    def write(self, view: memoryview, offset: int) -> None:
        """Write all of `view` at `offset` (aligned part direct, the rest buffered)."""
        n = len(view)
        dfd = self._direct_fd
        aligned = n - n % ALIGN if self.direct and offset % ALIGN == 0 else 0
        if aligned:
            try:
                with view[:aligned] as head:
                    _pwrite_all(dfd, head, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False  # later writes go buffered; this one is redone so
                self.refused = f"direct write refused: {exc.strerror}"
                aligned = 0
        if aligned < n:
            with view[aligned:] as rest:
                _pwrite_all(self.fd, rest, offset + aligned)

    def close(self) -> None:
        if self._direct_fd >= 0:
            self.direct = False
            with contextlib.suppress(OSError):
                os.close(self._direct_fd)
            self._direct_fd = -1
