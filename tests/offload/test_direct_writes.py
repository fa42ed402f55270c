"""Direct-I/O store writes: aligned spans go O_DIRECT, tails and unaligned offsets go
buffered, a filesystem that refuses O_DIRECT gets buffered writes, and the durable points
still come after the data is flushed."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest

from agent.offload import Offloader
from agent.offload.buffers import BufferPool
from agent.offload.copier import Copier
from agent.offload.copyjob import CopyJob
from agent.offload.directio import ALIGN, PartialWriter
from agent.offload.walk import SourceFile

from .offload_helpers import check_store_invariants, content, ctx, make_file

MiB = 1 << 20


@pytest.fixture
def out_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "partial", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    yield fd
    os.close(fd)


def _aligned(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, max(len(data), 1))  # page-aligned, as the copy's buffers are
    buf.write(data)
    return buf


def _write(writer: PartialWriter, data: bytes, offset: int) -> None:
    buf = _aligned(data)
    with memoryview(buf) as mv, mv[:len(data)] as view:
        writer.write(view, offset)
    buf.close()


def _direct_possible(fd: int) -> bool:
    writer = PartialWriter(fd)
    writer.close()
    return writer.refused is None


@pytest.mark.parametrize("size", [1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 123, MiB])
def test_aligned_spans_direct_and_the_tail_buffered(tmp_path: Path, out_fd: int,
                                                    size: int) -> None:
    writer = PartialWriter(out_fd)
    if not writer.direct:
        pytest.skip("this filesystem refuses O_DIRECT (covered by the fallback tests)")
    data = content(b"tail", size)
    _write(writer, data, 0)
    # the direct writes use a descriptor of their own: the caller's is never toggled
    assert not fcntl.fcntl(out_fd, fcntl.F_GETFL) & os.O_DIRECT
    assert writer.refused is None and writer.direct
    writer.close()
    os.fsync(out_fd)
    assert (tmp_path / "partial").read_bytes() == data


def test_an_unaligned_offset_is_written_buffered(tmp_path: Path, out_fd: int) -> None:
    writer = PartialWriter(out_fd)
    first, second = content(b"a", 1000), content(b"b", 2 * ALIGN)
    _write(writer, first, 0)
    _write(writer, second, len(first))  # a short read moved the offset off alignment
    os.fsync(out_fd)
    assert (tmp_path / "partial").read_bytes() == first + second


def test_a_filesystem_refusing_o_direct_gets_buffered_writes(
    tmp_path: Path, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.open

    def refuse(path: str, flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse)
    writer = PartialWriter(out_fd)
    assert not writer.direct and writer.refused
    data = content(b"refused", 2 * ALIGN + 7)
    _write(writer, data, 0)
    os.fsync(out_fd)
    assert (tmp_path / "partial").read_bytes() == data


def test_a_direct_write_refused_at_write_time_is_redone_buffered(
    tmp_path: Path, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_possible(out_fd):
        pytest.skip("this filesystem refuses O_DIRECT already when it is set")
    real = os.pwrite

    def refuse(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse)
    writer = PartialWriter(out_fd)
    data = content(b"late refusal", 4 * ALIGN + 5)
    _write(writer, data, 0)
    _write(writer, data, len(data))
    assert not writer.direct and writer.refused is not None
    writer.close()
    os.fsync(out_fd)
    assert (tmp_path / "partial").read_bytes() == data + data


class _Recorder:
    """Copy hooks that note the order of flushes and durable points."""

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        pass

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        self.events.append(("durable-complete" if complete else "durable", length))

    def progress(self, nbytes: int) -> None:
        pass

    def resumed(self, nbytes: int) -> None:
        pass


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_durable_points_follow_the_flush_of_every_byte_they_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:

    events: list[tuple[str, int]] = []
    partial = tmp_path / "store" / ".partial-x"
    partial.parent.mkdir()
    written = [0]
    real_write = PartialWriter.write

    def write(self: PartialWriter, view: memoryview, offset: int) -> None:
        real_write(self, view, offset)
        written[0] = max(written[0], offset + len(view))

    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        events.append(("fdatasync", written[0]))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        events.append(("fsync", written[0]))
        real_fsync(fd)

    monkeypatch.setattr(PartialWriter, "write", write)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    size = 5 * MiB + 333
    data = make_file(tmp_path / "src", "DCIM/A.MP4", size)
    st = os.stat(tmp_path / "src" / "DCIM/A.MP4")
    job = CopyJob(os.fsencode(tmp_path / "src"), st.st_dev,
                  SourceFile(b"DCIM/A.MP4", size, st.st_mtime_ns), partial,
                  tmp_path / "store" / "A.MP4", None, fdatasync_every=MiB, read_retries=0,
                  depth=3, direct=direct)
    pool = BufferPool(MiB, 3)
    result = Copier(job, _Recorder(events), pool, threading.Event()).run()
    pool.close()
    assert result.digest == blake3.blake3(data).digest() and result.size == size
    assert partial.read_bytes() == data
    flushed = 0
    for what, n in events:
        if what in ("fdatasync", "fsync"):
            flushed = n
        else:
            assert n <= flushed, f"{what} at {n} before the data was flushed ({events})"
    assert events[-1] == ("durable-complete", size)
    assert ("fsync", size) in events


SIZES = [0, 1, ALIGN - 1, ALIGN + 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 4097]


async def test_stored_files_equal_their_source_at_every_tail_size(
    source: Path, store: Path, db_path: Path, make_offloader: Callable[..., Offloader]
) -> None:
    """Sizes around the alignment and buffer boundaries: hash and bytes equal the source."""
    want = {f"DCIM/100BWC/F{i:02d}.MP4".encode(): make_file(source, f"DCIM/100BWC/F{i:02d}.MP4",
                                                           n)
            for i, n in enumerate(SIZES)}
    s = await make_offloader().offload(ctx(), source)
    assert s.outcome == "complete", s.detail
    assert len(s.stored) == len(SIZES)
    for f in s.stored:
        data = want[f.name]
        assert f.blake3_hex == blake3.blake3(data).hexdigest()
        assert (store / f.stored_relpath).read_bytes() == data
    check_store_invariants(db_path, store)


def test_the_pool_budget_does_not_grow_with_the_number_of_bays() -> None:
    from agent.offload.buffers import pool_shape

    assert pool_shape(4, 4, 4) == (4 * MiB, 5)  # the defaults: unchanged
    size, capacity = pool_shape(4, 4, 25)
    assert capacity == 26 and size * capacity <= 20 * MiB
    assert size % ALIGN == 0 and size >= 256 << 10
    assert pool_shape(4, 8, 2) == (4 * MiB, 8)  # a deep single pipeline keeps its size
    assert pool_shape(1, 3, 4) == (MiB, 5)  # a few bays keep full-size buffers
