"""Reading the backing files of the FUSE view with O_DIRECT where the request allows.

The FUSE view serves every application read itself (direct_io), so a buffered `pread` of
the backing file would put each byte through the page cache once more, only to be copied
out and dropped again: with 25 recorders on one disk that page-cache traffic cost the
simulator more CPU than the agent's whole offload. An aligned request is read with
O_DIRECT into a page-aligned buffer instead; an unaligned one (a read cut at a fault
offset, a small read of a tool) and a filesystem that refuses O_DIRECT (tmpfs) read
buffered as before. Both see the same bytes: O_DIRECT writes back dirty pages of the
range before it reads.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

ALIGN = 4096  # logical block size that O_DIRECT offsets and lengths must be multiples of


class BackingReader:
    """Positional reads of one open backing file (`fd`, opened buffered)."""

    _buffers = threading.local()  # one aligned buffer per FUSE worker thread

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            self.direct_fd: int | None = os.open(
                f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.direct_fd = None  # the filesystem refuses O_DIRECT

    def pread(self, size: int, offset: int) -> bytes:
        if self.direct_fd is None or offset % ALIGN or size <= 0:
            return os.pread(self.fd, size, offset)
        want = -(-size // ALIGN) * ALIGN
        buf = self._buffer(want)
        with memoryview(buf) as mv, mv[:want] as part:
            try:
                n = os.preadv(self.direct_fd, [part], offset)  # short only at end of file
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                return os.pread(self.fd, size, offset)  # an alignment this disk refuses
            return bytes(part[:min(n, size)])

    def _buffer(self, size: int) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._buffers, "buf", None)
        if buf is None or len(buf) < size:
            if buf is not None:
                buf.close()
            buf = mmap.mmap(-1, size)  # anonymous maps are page-aligned
            self._buffers.buf = buf
        return buf

    def close(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None
        os.close(self.fd)
