"""Several store writes of one copy in flight: writes finishing out of order, a failing
write, a short read mid-queue, a stop mid-copy, and a crash with writes in flight. The
durable length never runs ahead of bytes that were written before an fdatasync, and every
buffer goes back to the pool."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import blake3
import pytest

from agent.offload import copier
from agent.offload.buffers import BufferPool
from agent.offload.copier import Copier, writes_in_flight
from agent.offload.copyjob import CopyJob
from agent.offload.directio import PartialWriter
from agent.offload.errors import CopyStopped, StoreError
from agent.offload.inflight import InFlightWrites
from agent.offload.walk import SourceFile

from .offload_helpers import make_file, rows

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 256 * KiB
NAME = b"DCIM/A.MP4"
ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0  # generous: the machine may be loaded


class Journal:
    """Copy hooks that check each durable point against what was flushed before it."""

    def __init__(self, source: bytes, partial: Path, *, flushes: bool = True) -> None:
        self.source, self.partial = source, partial
        self.lock = threading.Lock()
        self.returned: set[int] = set()  # starts of the writes that have returned
        # contiguous returned prefix when the last fdatasync began (not tracked: any)
        self.flushed = 0 if flushes else 1 << 62
        self.points: list[int] = []
        self.copied = 0

    def prefix(self) -> int:
        with self.lock:
            end = 0
            while end in self.returned:
                end += CHUNK
            return end

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        pass

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        assert complete or length <= self.flushed, (length, self.flushed)
        assert digest == blake3.blake3(self.source[:length]).digest()
        assert self.partial.read_bytes()[:length] == self.source[:length]
        self.points.append(length)

    def progress(self, nbytes: int) -> None:
        with self.lock:
            self.copied += nbytes

    def resumed(self, nbytes: int) -> None:
        pass


def _job(tmp_path: Path, size: int, *, direct: bool, depth: int = 5,
         every: int = CHUNK) -> tuple[CopyJob, bytes]:
    data = make_file(tmp_path / "src", NAME, size)
    st = os.stat(tmp_path / "src" / NAME.decode())
    (tmp_path / "store").mkdir(exist_ok=True)
    job = CopyJob(os.fsencode(tmp_path / "src"), st.st_dev,
                  SourceFile(NAME, size, st.st_mtime_ns), tmp_path / "store" / ".partial-a",
                  tmp_path / "store" / "A.MP4", None, fdatasync_every=every, read_retries=0,
                  depth=depth, fdatasync_interval_s=600.0, direct=direct)
    return job, data


def _instrument(monkeypatch: pytest.MonkeyPatch, journal: Journal,
                hold: dict[int, int] | None = None, fail_at: int | None = None) -> None:
    """Writes that return out of order (`hold`: the write at key waits until the write at
    value has returned), may fail (`fail_at`), and an fdatasync that notes the prefix."""
    real_write, real_fdatasync = PartialWriter.write, os.fdatasync
    done = {k: threading.Event() for k in (hold or {}).values()}

    def write(self: PartialWriter, view: memoryview, offset: int) -> None:
        if hold and offset in hold:
            assert done[hold[offset]].wait(DEADLINE_S), "the later write never ran"
        if offset == fail_at:
            raise OSError(errno.EIO, "Input/output error")
        real_write(self, view, offset)
        with journal.lock:
            journal.returned.add(offset)
        if offset in done:
            done[offset].set()

    def fdatasync(fd: int) -> None:
        flushed = journal.prefix()
        real_fdatasync(fd)
        journal.flushed = flushed

    monkeypatch.setattr(PartialWriter, "write", write)
    monkeypatch.setattr(os, "fdatasync", fdatasync)


def _all_returned(pool: BufferPool) -> bool:
    return pool.outstanding == 0


def test_the_default_depth_keeps_three_writes_in_flight() -> None:
    assert writes_in_flight(5, 100) == (3, 1)
    assert writes_in_flight(3, 100) == (1, 1)  # a shallow pipeline: one write at a time
    assert writes_in_flight(5, 1) == (1, 3)  # a one-chunk file needs one writer, no more


def test_a_source_slower_than_the_disk_keeps_a_single_writer_thread(tmp_path: Path) -> None:
    data = b"".join(bytes([k]) * CHUNK for k in range(6))
    path = tmp_path / "partial"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    writer, pool = PartialWriter(fd), BufferPool(CHUNK, 5)
    journal = Journal(data, path, flushes=False)
    writes = InFlightWrites(writer, pool, journal, start=0,
                            every=1 << 40, interval_s=600.0, threads=3, queued=1)
    for k in range(6):
        idle = threading.Event()
        # the next chunk only once the last one is written and the writer waits again
        for _ in range(int(DEADLINE_S / 2 / 0.01)):
            if journal.copied == k * CHUNK and writes.writers[1] == 1:
                idle.set()
                break
            idle.wait(0.01)
        assert idle.is_set(), "the writer never went back to waiting"
        buf = pool.acquire(threading.Event())
        assert buf is not None
        buf[:CHUNK] = data[k * CHUNK:(k + 1) * CHUNK]
        writes.submit(buf, CHUNK, (k + 1) * CHUNK, blake3.blake3(data[:(k + 1) * CHUNK]).digest())
    writes.close()
    writer.close()
    os.close(fd)
    assert writes.error is None and writes.writers[0] == 1
    assert path.read_bytes() == data and pool.outstanding == 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_writes_finishing_out_of_order_never_move_the_durable_length_past_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    size = 12 * CHUNK + 1234
    job, data = _job(tmp_path, size, direct=direct)
    journal = Journal(data, job.partial)
    # chunk 1 returns only after chunk 3, chunk 5 only after chunk 6
    _instrument(monkeypatch, journal, hold={CHUNK: 3 * CHUNK, 5 * CHUNK: 6 * CHUNK})
    pool = BufferPool(CHUNK, 5)
    result = Copier(job, journal, pool, threading.Event()).run()
    assert result.digest == blake3.blake3(data).digest() and result.size == size
    assert job.partial.read_bytes() == data
    assert journal.points[-1] == size and journal.points == sorted(journal.points)
    assert len(journal.points) > 2  # there were intermediate points to check
    assert _all_returned(pool)
    pool.close()


def test_a_failing_write_among_several_in_flight_fails_the_copy_and_returns_every_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, data = _job(tmp_path, 16 * CHUNK, direct=True)
    journal = Journal(data, job.partial)
    # the failing write returns last: writes after it were in flight and have returned
    _instrument(monkeypatch, journal, hold={4 * CHUNK: 6 * CHUNK}, fail_at=4 * CHUNK)
    pool = BufferPool(CHUNK, 5)
    with pytest.raises(StoreError, match="Input/output error"):
        Copier(job, journal, pool, threading.Event()).run()
    assert all(p <= 4 * CHUNK for p in journal.points)  # never past the failure
    assert _all_returned(pool)
    pool.close()


def test_a_short_read_mid_queue_shifts_later_writes_off_alignment_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 10 * CHUNK
    job, data = _job(tmp_path, size, direct=True)
    real = copier._pread_checked

    def short(fd: int, buf: object, offset: int, want: int) -> int:
        return real(fd, buf, offset, want - 1000 if offset == 2 * CHUNK else want)  # type: ignore[arg-type]

    monkeypatch.setattr(copier, "_pread_checked", short)
    journal = Journal(data, job.partial, flushes=False)  # covered above
    pool = BufferPool(CHUNK, 5)
    result = Copier(job, journal, pool, threading.Event()).run()
    assert result.size == size and result.digest == blake3.blake3(data).digest()
    assert job.partial.read_bytes() == data
    assert _all_returned(pool)
    pool.close()


def test_a_stop_mid_copy_with_writes_in_flight_returns_every_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, data = _job(tmp_path, 20 * CHUNK, direct=True)
    stop = threading.Event()
    real_write = PartialWriter.write

    def write(self: PartialWriter, view: memoryview, offset: int) -> None:
        if offset == 5 * CHUNK:
            stop.set()  # the dock is closing while this and other writes are in flight
        real_write(self, view, offset)

    monkeypatch.setattr(PartialWriter, "write", write)
    pool = BufferPool(CHUNK, 5)
    with pytest.raises(CopyStopped):
        Copier(job, Journal(data, job.partial, flushes=False), pool, stop).run()
    assert _all_returned(pool)
    pool.close()


@pytest.mark.timeout(600)
def test_kill_9_while_a_durable_point_is_reported_with_writes_in_flight(
    tmp_path: Path
) -> None:
    """The child holds at its third durable point while its other writers keep writing,
    then dies: the journalled prefix is exactly what the disk holds, and the rerun
    resumes from it."""
    src, store, db = tmp_path / "rec", tmp_path / "store", tmp_path / "state" / "dock.sqlite3"
    store.mkdir()
    name = b"DCIM/100BWC/F000.MP4"
    data = make_file(src, name, 24 * MiB + 5)
    markers = tmp_path / "markers"
    env = {**os.environ, "DOCK_AGENT_CRASHPOINT_LOG": str(markers),
           "DOCK_AGENT_CRASHPOINT_HOLD": "copy_synced:3"}
    cmd = [sys.executable, "-m", "tests.offload.crash_child", str(db), str(store), str(src),
           str(tmp_path / "wipe.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env=env)
    try:
        _wait_for_line(markers, "HOLD copy_synced 3", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (row,) = rows(db, "SELECT durable_len, prefix_blake3, partial_relpath FROM offload_journal")
    durable = int(row["durable_len"])
    assert 0 < durable < len(data)
    on_disk = (store / row["partial_relpath"]).read_bytes()
    assert len(on_disk) >= durable
    assert bytes(row["prefix_blake3"]) == blake3.blake3(on_disk[:durable]).digest()
    assert on_disk[:durable] == data[:durable]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCK_AGENT_CRASHPOINT")}
    out = subprocess.run(cmd, capture_output=True, cwd=ROOT, env=clean, timeout=300,
                         check=True).stdout.decode()
    assert '"outcome": "complete"' in out
    (stored,) = rows(db, "SELECT stored_relpath, blake3 FROM evidence_files")
    assert stored["blake3"] == blake3.blake3(data).hexdigest()
    assert (store / stored["stored_relpath"]).read_bytes() == data


def _wait_for_line(path: Path, line: str, proc: subprocess.Popen[bytes]) -> None:
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            if path.exists() and line in path.read_text().splitlines():
                done.set()
            elif proc.poll() is not None:
                return

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    err = proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
    assert done.is_set(), f"the child never held at {line!r}: {err}"
