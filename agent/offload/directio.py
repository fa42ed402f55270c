"""Writes into a partial file with O_DIRECT where the filesystem allows it.

Direct I/O moves the bytes from the (page-aligned) copy buffer to the disk without a
second copy into the page cache and without the dirty pages piling up behind it: on this
kind of hardware that is both the faster path and the cheaper one in CPU. It changes
nothing in the durability rules: the data is still only durable after `fdatasync`/`fsync`
(the extent and size metadata need it), and the caller does those exactly as before.

Alignment rules: an O_DIRECT write must start at an aligned file offset, have an aligned
length and come from an aligned buffer. Aligned spans go direct; a span that is not
aligned (the file's tail, or everything after a short read moved the offset) is written
buffered, by clearing O_DIRECT on the descriptor for that write. A filesystem that refuses
O_DIRECT (EINVAL when it is set, or on the first direct write) gets buffered writes for the
rest of the file.
"""

from __future__ import annotations

import errno
import fcntl
import os

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        with view[done:] as rest:
            done += os.pwrite(fd, rest, offset + done)


class PartialWriter:
    """Positional writes to one open partial; O_DIRECT for aligned spans when allowed."""

    def __init__(self, fd: int, *, direct: bool = True) -> None:
        self.fd = fd
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT
        self.direct = direct and self._set_direct(True)
        self.refused: str | None = None if self.direct or not direct else "O_DIRECT refused"

    def _set_direct(self, on: bool) -> bool:
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags | (os.O_DIRECT if on else 0))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return False
        return True

    def write(self, view: memoryview, offset: int) -> None:
        """Write all of `view` at `offset` (aligned part direct, the rest buffered)."""
        n = len(view)
        aligned = n - n % ALIGN if self.direct and offset % ALIGN == 0 else 0
        if aligned:
            try:
                with view[:aligned] as head:
                    _pwrite_all(self.fd, head, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._give_up(f"direct write refused: {exc.strerror}")
                aligned = 0
        if aligned < n:
            if self.direct:
                self._set_direct(False)
            try:
                with view[aligned:] as rest:
                    _pwrite_all(self.fd, rest, offset + aligned)
            finally:
                if self.direct:
                    self._set_direct(True)

    def _give_up(self, why: str) -> None:
        self.direct = False
        self.refused = why
        self._set_direct(False)
