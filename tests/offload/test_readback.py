"""Verification reads a stored file back with O_DIRECT and several reads in flight: every
size around the chunk boundaries hashes right, a read error or a stop ends it with every
buffer back in the pool, and a filesystem refusing O_DIRECT is read buffered."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import blake3
import pytest

from agent.offload.buffers import BufferPool
from agent.offload.errors import CopyStopped
from agent.offload.readback import ReadBack
from agent.offload.rehash import verify_stored

from .offload_helpers import content

KiB = 1 << 10
CHUNK = 256 * KiB


def _stored(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = content(b"stored", size)
    path = tmp_path / "A.MP4"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, CHUNK - 1, CHUNK, CHUNK + 1,
                                  7 * CHUNK, 7 * CHUNK + 4097])
def test_every_size_verifies_and_every_buffer_goes_back(tmp_path: Path, size: int) -> None:
    path, data = _stored(tmp_path, size)
    pool = BufferPool(CHUNK, 3)
    ok, detail = verify_stored(path, size, blake3.blake3(data).digest(), pool,
                               threading.Event())
    assert ok, detail
    assert pool.outstanding == 0
    bad, why = verify_stored(path, size, bytes(32), pool, threading.Event())
    assert not bad and "BLAKE3" in why
    pool.close()


def test_a_read_error_mid_file_fails_the_verify_and_returns_every_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = _stored(tmp_path, 9 * CHUNK)
    real = os.preadv

    def failing(fd: int, bufs: list[memoryview], offset: int) -> int:
        if offset == 4 * CHUNK:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, bufs, offset)

    monkeypatch.setattr(os, "preadv", failing)
    pool = BufferPool(CHUNK, 3)
    ok, detail = verify_stored(path, len(data), blake3.blake3(data).digest(), pool,
                               threading.Event())
    assert not ok and "Input/output error" in detail
    assert pool.outstanding == 0
    pool.close()


def test_a_stop_mid_verify_returns_every_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _stored(tmp_path, 12 * CHUNK)
    stop = threading.Event()
    real = os.preadv

    def stopping(fd: int, bufs: list[memoryview], offset: int) -> int:
        if offset == 3 * CHUNK:
            stop.set()  # the dock is closing while reads are in flight
        return real(fd, bufs, offset)

    monkeypatch.setattr(os, "preadv", stopping)
    pool = BufferPool(CHUNK, 3)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CopyStopped):
            ReadBack(fd, pool, stop).run()
    finally:
        os.close(fd)
    assert pool.outstanding == 0
    pool.close()


def test_the_pool_shared_with_a_copy_never_deadlocks_the_read_back(tmp_path: Path) -> None:
    """Only one buffer free for the verify (a copy holds the rest): it still finishes."""
    path, data = _stored(tmp_path, 6 * CHUNK + 5)
    pool = BufferPool(CHUNK, 3)
    held = [pool.acquire(threading.Event()), pool.acquire(threading.Event())]
    ok, detail = verify_stored(path, len(data), blake3.blake3(data).digest(), pool,
                               threading.Event())
    assert ok, detail
    for buf in held:
        assert buf is not None
        pool.release(buf)
    assert pool.outstanding == 0
    pool.close()


def test_a_filesystem_refusing_o_direct_is_read_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = _stored(tmp_path, 3 * CHUNK + 7)
    real = os.open

    def refuse(p: str, flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(p, flags, mode)

    monkeypatch.setattr(os, "open", refuse)
    pool = BufferPool(CHUNK, 3)
    ok, detail = verify_stored(path, len(data), blake3.blake3(data).digest(), pool,
                               threading.Event())
    assert ok, detail
    assert pool.outstanding == 0
    pool.close()
