"""Reading recorder files for a copy: O_DIRECT where the storage allows, buffered where it
refuses or the offset is not aligned, always exactly the bytes asked for."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from agent.offload.sourceread import ALIGN, SourceReader


def _file(path: Path, size: int) -> bytes:
    data = bytes((i * 7 + i // 4096) % 251 for i in range(size))
    path.write_bytes(data)
    return data


def _direct_supported(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("size", [1, ALIGN - 1, ALIGN, 3 * ALIGN + 17, 1 << 20])
def test_every_byte_is_read_and_nothing_past_the_wanted_end(tmp_path: Path, size: int) -> None:
    data = _file(tmp_path / "clip.MP4", size)
    fd = os.open(tmp_path / "clip.MP4", os.O_RDONLY)
    reader = SourceReader(fd, direct=True)
    buf = mmap.mmap(-1, 256 << 10)
    try:
        assert reader.direct == _direct_supported(tmp_path / "clip.MP4")
        got, offset = bytearray(), 0
        while True:
            want = min(len(buf), size - offset)
            n = reader.pread(buf, offset, want) if want else 0
            assert n <= want
            if n == 0:
                break
            got += buf[:n]
            offset += n
        assert bytes(got) == data
        # a read that wants fewer bytes than the aligned span gets exactly those
        buf[:] = b"\0" * len(buf)
        assert reader.pread(buf, 0, min(size, 5)) == min(size, 5)
        assert buf[:min(size, 5)] == data[:5]
    finally:
        reader.close()
        os.close(fd)
        buf.close()


def test_an_unaligned_offset_is_read_buffered(tmp_path: Path) -> None:
    data = _file(tmp_path / "clip.MP4", 5 * ALIGN)
    fd = os.open(tmp_path / "clip.MP4", os.O_RDONLY)
    reader = SourceReader(fd, direct=True)
    buf = mmap.mmap(-1, 8 * ALIGN)
    try:
        assert reader.pread(buf, 100, 2 * ALIGN) == 2 * ALIGN
        assert buf[:2 * ALIGN] == data[100:100 + 2 * ALIGN]
        assert reader.pread(buf, 4 * ALIGN + 1, 8 * ALIGN) == ALIGN - 1  # the end of file
        assert buf[:ALIGN - 1] == data[4 * ALIGN + 1:]
    finally:
        reader.close()
        os.close(fd)
        buf.close()


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EACCES, errno.EMFILE])
def test_a_storage_that_refuses_direct_reads_is_read_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    data = _file(tmp_path / "clip.MP4", 3 * ALIGN + 5)
    fd = os.open(tmp_path / "clip.MP4", os.O_RDONLY)
    real_open = os.open

    def refusing(path: object, flags: int, *args: object, **kw: object) -> int:
        if flags & os.O_DIRECT:  # as a filesystem without direct I/O answers, or any
            raise OSError(refusal, os.strerror(refusal))  # other trouble with a 2nd fd
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing)
    reader = SourceReader(fd, direct=True)
    monkeypatch.undo()
    buf = mmap.mmap(-1, 4 * ALIGN)
    try:
        assert not reader.direct
        assert reader.pread(buf, 0, len(data)) == len(data)
        assert buf[:len(data)] == data
    finally:
        reader.close()
        os.close(fd)
        buf.close()


def test_a_direct_read_the_storage_refuses_falls_back_to_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _file(tmp_path / "clip.MP4", 2 * ALIGN)
    fd = os.open(tmp_path / "clip.MP4", os.O_RDONLY)
    reader = SourceReader(fd, direct=True)
    if not reader.direct:
        reader.close()
        os.close(fd)
        pytest.skip("this filesystem refuses O_DIRECT")
    real_preadv = os.preadv

    def refusing(rfd: int, buffers: list[memoryview], offset: int) -> int:
        if rfd != fd:  # the direct descriptor: an alignment this storage refuses
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(rfd, buffers, offset)

    monkeypatch.setattr(os, "preadv", refusing)
    buf = mmap.mmap(-1, 4 * ALIGN)
    try:
        assert reader.pread(buf, 0, len(data)) == len(data)
        assert buf[:len(data)] == data
        assert not reader.direct  # buffered from now on
    finally:
        reader.close()
        os.close(fd)
        buf.close()


@pytest.mark.parametrize("case", ["switched_off", "fifo"])
def test_no_direct_descriptor_when_switched_off_or_not_a_regular_file(
    tmp_path: Path, case: str
) -> None:
    """`offload.direct_io = false` reads buffered; a FIFO is never reopened (that would
    block)."""
    path = tmp_path / "clip.MP4"
    if case == "fifo":
        os.mkfifo(path)
    else:
        _file(path, ALIGN)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        reader = SourceReader(fd, direct=case != "switched_off")
        assert not reader.direct
        reader.close()
    finally:
        os.close(fd)
