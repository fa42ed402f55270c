"""Reading a recorder's file for its copy: O_DIRECT where the storage allows it.

Footage is read once and never again, so the page cache only costs here: every page is
allocated, filled, copied out to the copy buffer and dropped again. An O_DIRECT read fills
the (page-aligned) copy buffer straight from the device and leaves nothing behind; on a
dock with 25 bays reading at once that is most of the CPU a copy spends outside BLAKE3.
A read is direct when its offset is aligned (`ALIGN`, a multiple of every logical block
size a USB disk has); its length is rounded up inside the buffer and the bytes past the
wanted end are ignored. Anything else (an unaligned offset after a short read, a storage
that refuses O_DIRECT such as tmpfs or some FUSE servers) reads buffered, as before, from
the descriptor the copy opened.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

ALIGN = 4096


class SourceReader:
    """Positional reads of one open recorder file (`fd`, opened buffered by the copy)."""

    def __init__(self, fd: int, *, direct: bool) -> None:
        self.fd = fd
        self._direct = -1
        if not direct:
            return
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._direct = os.open(f"/proc/self/fd/{fd}",
                                       os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            # Refused (EINVAL and the like), or anything else about a second descriptor:
            # an optimisation never fails a copy; the buffered reads report real errors.
            self._direct = -1

    @property
    def direct(self) -> bool:
        return self._direct >= 0

    def pread(self, buf: mmap.mmap, offset: int, want: int) -> int:
        """Read up to `want` bytes at `offset` into the start of `buf`; bytes read."""
        if self._direct >= 0 and offset % ALIGN == 0 and len(buf) % ALIGN == 0:
            span = min(len(buf), -(-want // ALIGN) * ALIGN)
            with memoryview(buf) as mv, mv[:span] as part:
                try:
                    return min(os.preadv(self._direct, [part], offset), want)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.close()  # an alignment this storage refuses: buffered from now on
        with memoryview(buf) as mv, mv[:want] as part:
            return os.preadv(self.fd, [part], offset)

    def close(self) -> None:
        """Close the direct descriptor (the caller closes `fd`)."""
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
