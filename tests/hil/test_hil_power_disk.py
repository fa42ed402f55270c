"""The power-cut trials' state disk loses what a drive with a volatile write cache loses
(no qemu needed): through nbdkit's write-back cache, a write is on the image only once a
FLUSH or its FUA flag put it there; a cut loses every other write (docs/power-cut.md)."""

from __future__ import annotations

import shutil
import socket
import struct
from pathlib import Path

import pytest

from .hil_power import StateDisk

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None,
                                reason="nbdkit is installed by scripts/lib/bootstrap.sh")

_REQUEST, _REPLY = 0x25609513, 0x67446698
_WRITE, _FLUSH, _FUA = 1, 3, 1
KIB = 1024


class NbdClient:
    """The few NBD requests the check needs (fixed newstyle, NBD_OPT_EXPORT_NAME)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        assert self._recv(8) == b"NBDMAGIC" and self._recv(8) == b"IHAVEOPT"
        (hflags,) = struct.unpack(">H", self._recv(2))
        no_zeroes = bool(hflags & 2)
        self.sock.sendall(struct.pack(">I", 1 | (2 if no_zeroes else 0)))
        self.sock.sendall(b"IHAVEOPT" + struct.pack(">II", 1, 0))  # EXPORT_NAME ""
        self.size, self.flags = struct.unpack(">QH", self._recv(10))
        if not no_zeroes:
            self._recv(124)
        self._handle = 0

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "nbdkit closed the connection"
            buf += chunk
        return buf

    def _request(self, kind: int, offset: int, data: bytes = b"", flags: int = 0,
                 length: int | None = None) -> None:
        self._handle += 1
        n = len(data) if length is None else length
        self.sock.sendall(struct.pack(">IHHQQI", _REQUEST, flags, kind, self._handle, offset,
                                      n) + data)
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        assert (magic, error, handle) == (_REPLY, 0, self._handle)

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._request(_WRITE, offset, data, _FUA if fua else 0)

    def flush(self) -> None:
        self._request(_FLUSH, 0, length=0)


def test_flushed_writes_reach_the_image_and_a_cut_loses_the_rest(tmp_path: Path) -> None:
    disk = StateDisk(tmp_path, size_mib=4)
    disk.create(mkfs=False)
    disk.start()
    try:
        nbd = NbdClient(disk.socket)
        assert nbd.flags & (1 << 2) and nbd.flags & (1 << 3)  # SEND_FLUSH, SEND_FUA offered
        nbd.write(256 * KIB, b"B" * (4 * KIB))
        nbd.flush()  # B is durable (a flush covers every write before it)
        nbd.write(0, b"A" * (4 * KIB))  # after the flush: never flushed
        nbd.write(512 * KIB, b"C" * (4 * KIB), fua=True)  # durable by itself, A still not
        nbd.write(768 * KIB, b"D" * (4 * KIB))  # never flushed
        # Already before the cut the image holds only what was flushed or written FUA.
        image = disk.image.read_bytes()
        assert image[:4 * KIB] == bytes(4 * KIB)
        assert image[256 * KIB:260 * KIB] == b"B" * (4 * KIB)
        assert image[512 * KIB:516 * KIB] == b"C" * (4 * KIB)
        nbd.sock.close()
    finally:
        disk.cut()
    image = disk.image.read_bytes()
    assert image[:4 * KIB] == bytes(4 * KIB)
    assert image[256 * KIB:260 * KIB] == b"B" * (4 * KIB)
    assert image[512 * KIB:516 * KIB] == b"C" * (4 * KIB)
    assert image[768 * KIB:772 * KIB] == bytes(4 * KIB)
