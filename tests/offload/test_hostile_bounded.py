"""A hostile or huge recorder does not grow the agent's memory, and nothing is lost.

Every refused or unreadable entry is recorded in "entry_list" ledger entries as the walk
(and later the admission and the copies) find it; an offload keeps only counts, a few
names and fewer than two chunks. A re-docking of files stored already holds no item per
file. Memory is measured with tracemalloc over the whole walk or look."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import math
import os
import stat
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, cast

import blake3
import pytest

from agent.offload import Offloader
from agent.offload import engine as engine_mod
from agent.offload.aftercommit import Run
from agent.offload.identify import Known
from agent.offload.items import Claims, Item, Items, TimeClaims
from agent.offload.problems import ProblemLog
from agent.offload.summary import KEPT_MAX, LIST_CHUNK, NAMED_MAX, OffloadSummary
from agent.offload.walk import FileList, Scan, SourceFile, scan
from agent.store.db import Database
from agent.store.evidence import StoredFile as IndexedFile
from agent.store.evidence import stored_versions
from agent.store.ledger import Ledger

from .offload_helpers import ctx, make_footage, rows

ENTRIES = 200_000
MiB = 1 << 20
MTIME_NS = 1_790_000_000_000_000_000


# --- a pure walk of 200,000 hostile entries -------------------------------------------------

class _Stat:
    def __init__(self, mode: int) -> None:
        self.st_mode, self.st_size, self.st_mtime_ns, self.st_blocks = mode, 7, MTIME_NS, 1


_KINDS: tuple[tuple[str, int, str], ...] = (  # (name pattern, mode, why refused)
    ("F{:07d}.MP4", stat.S_IFIFO, "fifo"),
    ("L{:07d}.MP4", stat.S_IFLNK, "symlink"),
    ("C{:07d}.MP4", stat.S_IFCHR, "device node"),
    ("S{:07d}.MP4", stat.S_IFSOCK, "socket"),
    ("N{:07d}\0.MP4", stat.S_IFREG, "name contains a path separator or NUL"),
    ("D{:07d}.MP4", stat.S_IFIFO, "fifo"),  # listed twice (a hostile directory can)
)
_UNREADABLE = 9  # every 9th entry cannot be looked at (EIO): the "failed" list


class _Entry:
    def __init__(self, i: int) -> None:
        pattern, self._mode, _ = _KINDS[i % len(_KINDS)]
        self.name = pattern.format(i // 12 if pattern[0] == "D" else i)
        self._i = i

    def stat(self, *, follow_symlinks: bool = True) -> _Stat:
        assert not follow_symlinks
        if self._i % _UNREADABLE == 0:
            raise OSError(5, "Input/output error")
        return _Stat(self._mode)


class _Listing:
    """`os.scandir` of one directory of hostile entries, made as they are read, and
    three regular files."""

    def __enter__(self) -> Iterator[_Entry | SimpleNamespace]:
        def entries() -> Iterator[_Entry | SimpleNamespace]:
            for i in range(ENTRIES):
                yield _Entry(i)
            for n in range(3):
                yield SimpleNamespace(name=f"OK{n}.MP4", stat=lambda **_: _Stat(stat.S_IFREG))
        return entries()

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        return None


class _Chunks:
    """A ledger that checks each "entry_list" entry and keeps only running totals."""

    def __init__(self) -> None:
        self.seq = 0
        self.parts: dict[str, int] = {}
        self.entries: dict[str, int] = {}
        self.names = {"refused": blake3.blake3(), "failed": blake3.blake3()}
        self.last: dict[str, dict[str, object]] = {}

    def append(self, _conn: object, kind: str, **kw: Any) -> SimpleNamespace:
        assert kind == "entry_list"
        data = kw["data"]
        key = data["list"]
        assert data["part"] == self.parts.get(key, 0) + 1  # in order, none skipped
        assert "count" not in self.last.get(key, {})  # nothing after the last part
        self.parts[key] = data["part"]
        self.entries[key] = self.entries.get(key, 0) + len(data["entries"])
        assert 0 < len(data["entries"]) <= LIST_CHUNK
        for e in data["entries"]:
            self.names[key].update(bytes.fromhex(e["name_hex"]) + b"\n")
        self.last[key] = {k: v for k, v in data.items() if k != "entries"}
        self.seq += 1
        return SimpleNamespace(seq=self.seq)


class _Db:
    """Runs each transaction at once (no SQLite: this test is about memory)."""

    def write_sync(self, fn: Callable[[object], object]) -> object:
        return fn(None)

    async def write(self, fn: Callable[[object], object]) -> object:
        return fn(None)


def _expected() -> dict[str, tuple[int, bytes]]:
    """(count, hash of the names in walk order) of each list, worked out independently."""
    out = {"refused": (0, blake3.blake3()), "failed": (0, blake3.blake3())}
    for i in range(ENTRIES):
        e = _Entry(i)
        key = "failed" if i % _UNREADABLE == 0 else "refused"
        n, h = out[key]
        h.update(b"DCIM/" + os.fsencode(e.name) + b"\n")
        out[key] = (n + 1, h)
    return {k: (n, h.digest()) for k, (n, h) in out.items()}


async def test_a_walk_of_200000_hostile_entries_records_each_and_holds_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "DCIM").mkdir()
    expected = _expected()
    chunks = _Chunks()
    summary = OffloadSummary("complete")
    log = ProblemLog(cast(Database, _Db()), cast(Ledger, chunks), ctx(), summary)
    watched = b"DCIM/" + os.fsencode(_Entry(1).name)  # a wipe intent's name, refused
    monkeypatch.setattr(os, "scandir", lambda _fd: _Listing())
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        listing = scan(os.fsencode(tmp_path), ["DCIM"], log.walked, [watched])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # some 2 KiB per entry when every refusal was kept; now a few chunks at most
    assert peak < 2 * MiB, peak
    assert len(listing.files) == 3
    assert [r.relpath for r in listing.refused] == [watched] and listing.unreadable == []
    for key, lst in (("refused", summary.refused), ("failed", summary.failed)):
        count = expected[key][0]
        assert lst.total == count and len(lst) == NAMED_MAX
        assert len(lst.unrecorded) <= 2 * LIST_CHUNK
    # the rest is written when the offload ends (`close`): then each list is whole
    await log.close()
    for key, lst in (("refused", summary.refused), ("failed", summary.failed)):
        count, names = expected[key]
        parts = math.ceil(count / LIST_CHUNK)
        assert chunks.entries[key] == count and chunks.names[key].digest() == names
        assert chunks.last[key]["count"] == count and chunks.last[key]["parts"] == parts
        assert len(lst.seqs) == lst.parts == parts and lst.unrecorded == []
    assert sorted(summary.refused.seqs.tolist() + summary.failed.seqs.tolist()) == list(
        range(1, chunks.seq + 1))


async def test_a_short_list_is_named_whole_by_its_fault_and_not_chunked() -> None:
    from agent.offload.summary import FileProblem

    chunks = _Chunks()
    summary = OffloadSummary("complete")
    log = ProblemLog(cast(Database, _Db()), cast(Ledger, chunks), ctx(), summary)
    for i in range(NAMED_MAX):
        await log.add("wipe_failed", FileProblem(b"DCIM/W%d" % i, "still listed"))
    await log.close()
    assert chunks.seq == 0 and summary.wipe_failed.total == len(summary.wipe_failed)
    assert list(summary.wipe_failed.seqs) == []


# --- a re-docking of 200,000 files stored already ------------------------------------------

def _row(template: IndexedFile, i: int, relpath: bytes) -> IndexedFile:
    return dataclasses.replace(template, id=i + 1, source_name=relpath,
                               stored_relpath=f"U-3/RC000001/O-17/2026-09-21/F{i:07d}.MP4",
                               blake3_hex=blake3.blake3(relpath).hexdigest())


class _Wiper:
    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        raise AssertionError("nothing is wiped in this test")

    async def listed(self) -> set[bytes]:
        return set()


async def test_a_redocking_of_200000_stored_files_holds_no_item_per_file(
    make_offloader: Callable[..., Offloader], source: Path, db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every file matches a stored copy (the index and the hashing are stood in for:
    the index rows of one batch are made as the real lookup makes them). The already
    stored count is exact; no item is held; what waits for the wipes after the copies
    (a recorder wiped after offload) is a few bytes per file."""
    make_footage(source, [64])  # one real file: a stored row to copy the fields from
    offloader = make_offloader(wipe_after_offload=True)
    first = await offloader.offload(ctx(), source)
    (template,) = db.read_sync(lambda c: stored_versions(
        c, "RC000001", b"DCIM/100BWC/FILE0000.MP4"))
    template = dataclasses.replace(template, verify_state="ok")
    assert first.stored.total == 1

    def plan(_conn: object, serial: str, files: FileList, lo: int, hi: int,
             ) -> list[tuple[int, tuple[IndexedFile, ...]]]:
        return [(i, (_row(template, i, files.relpath(i)),))
                for i in range(lo, min(hi, len(files)))]

    async def identify(_plant: object, _root: bytes, f: SourceFile,
                       versions: tuple[IndexedFile, ...], _stop: threading.Event) -> Known:
        return Known(stored=versions[0])

    monkeypatch.setattr(engine_mod, "plan", plan)
    monkeypatch.setattr(engine_mod, "identify", identify)
    files = FileList()
    for i in range(ENTRIES):
        files.append(SourceFile(b"DCIM/100BWC/F%07d.MP4" % i, 64, MTIME_NS + i, 1))
    summary = OffloadSummary("complete")
    p = offloader._plant
    run = Run(ctx(first=False, session="s2"), summary, _Wiper(),
              threading.Event(), Claims(), ProblemLog(p.db, p.ledger, ctx(), summary))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        items = await offloader._look(run, os.fsencode(source), Scan(files, [], []), [],
                                      None)
        admitted = await offloader._promises.admit(items, 0, summary, run.problems)
        offloader._promises.release(admitted.token)
        peak = tracemalloc.get_traced_memory()[1] - base
        live_items = sum(1 for o in gc.get_objects() if type(o) is Item)
    finally:
        tracemalloc.stop()
    # an item and its index row per file was some 1.5 KiB each (300 MB here)
    assert peak < 2 * MiB + 12 * ENTRIES, peak  # a file index and a stored file id each
    assert live_items == 0 and items.kept() == [] and len(admitted.items) == 0
    assert summary.already_stored.total == ENTRIES and len(summary.already_stored) == KEPT_MAX
    assert summary.already_stored[0] == b"DCIM/100BWC/F0000000.MP4"
    to_wipe = list(items.to_wipe())
    assert len(to_wipe) == ENTRIES
    assert to_wipe[-1] == (b"DCIM/100BWC/F%07d.MP4" % (ENTRIES - 1), ENTRIES)


def test_a_recorder_whose_200000_files_all_changed_holds_no_item_per_file() -> None:
    """Every file is a new version of a stored one (a recorder whose names were all
    reused): each is copied, and until then it is its index and the earlier copy's id."""
    files = FileList()
    for i in range(ENTRIES):
        files.append(SourceFile(b"DCIM/100BWC/F%07d.MP4" % i, 64, MTIME_NS + i, 1))
    items = Items(files, TimeClaims(None, 1_800_000_000_000_000))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(ENTRIES):
            items.keep(i, None, previous_id=10 * i + 1)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 12 * ENTRIES * 1.2, grown  # a record each was some 1.5 KiB
    assert items.kept() == [] and sum(1 for o in gc.get_objects() if type(o) is Item) == 0
    assert items[0].previous_id == 1 and items[ENTRIES - 1].previous_id == 10 * ENTRIES - 9
    assert items[123_456].previous is None  # the row is read when the copy starts
    assert list(itertools.islice(items.to_copy(), 3)) == [0, 1, 2]


# --- end to end: every refused entry is in the ledger, chain verified ----------------------

async def test_every_refused_entry_is_in_the_ledger_as_the_walk_finds_it(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path, db: Database,
) -> None:
    """Hostile entries of every kind, found by the walk and by admission (a file larger
    than the recorder's storage): each is in exactly one "entry_list" entry, in parts in
    order, the last carrying the count; those of the walk are recorded before any file
    is stored; the chain verifies."""
    from agent.store.verify import verify_ledger

    files = make_footage(source, [4096, 8192, 100])
    d = source / "DCIM" / "100BWC"
    expected: set[bytes] = set()
    for i in range(640):
        name = d / f"P{i:04d}.MP4"
        if i % 3 == 0:
            os.symlink("/etc/hostname", name)
        elif i % 3 == 1:
            os.mkfifo(name)
        else:
            os.mkdir(name)  # a directory holding a fifo: refused below it
            os.mkfifo(name / "inner.MP4")
            name = name / "inner.MP4"
        expected.add(os.fsencode(name.relative_to(source)))
    capacity = os.statvfs(source).f_blocks * os.statvfs(source).f_frsize
    for i in range(3):  # refused at admission, after the walk
        with open(d / f"HUGE{i}.MP4", "wb") as fh:
            fh.truncate(capacity + 1)
        expected.add(b"DCIM/100BWC/HUGE%d.MP4" % i)
    s = await make_offloader().offload(ctx(), source)
    assert s.outcome == "complete" and s.stored.total == len(files)
    assert s.refused.total == len(expected) and len(s.refused) == NAMED_MAX
    chunks = rows(db_path, "SELECT seq, data FROM ledger WHERE kind = 'entry_list'"
                  " ORDER BY seq")
    datas = [json.loads(r["data"]) for r in chunks]
    assert [r["seq"] for r in chunks] == s.refused.seqs.tolist()
    assert [x["part"] for x in datas] == list(range(1, len(datas) + 1))
    assert all(x["list"] == "refused" and x["code"] == "hostile_content" for x in datas)
    assert (datas[-1]["count"], datas[-1]["parts"]) == (len(expected), len(datas))
    assert all("count" not in x for x in datas[:-1])
    listed = [bytes.fromhex(e["name_hex"]) for x in datas for e in x["entries"]]
    assert len(listed) == len(expected) and set(listed) == expected
    first_stored = min(r["seq"] for r in rows(
        db_path, "SELECT seq FROM ledger WHERE kind = 'offloaded'"))
    walked = (len(expected) - 3) // LIST_CHUNK  # chunks full before the walk ended
    assert sum(1 for r in chunks if r["seq"] < first_stored) >= walked
    report = db.read_sync(lambda c: verify_ledger(c))
    assert report.ok, report.problems


def test_deletes_waiting_for_their_confirmation_are_packed() -> None:
    """A recorder wiped of 200,000 files: each delete answered "deleted" waits for the
    confirming listing as a stored file id and its name, not a record each."""
    from agent.offload.items import Claim

    claims = Claims()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(ENTRIES):
            claims.append(Claim(i + 1, b"DCIM/100BWC/F%07d.MP4" % i))
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    name_bytes = len(b"DCIM/100BWC/F0000000.MP4")
    assert grown < ENTRIES * (name_bytes + 2 * 8) * 1.2, grown  # ~130 bytes each as records
    assert len(claims) == ENTRIES
    got = list(itertools.islice(claims, 2))
    assert got == [Claim(1, b"DCIM/100BWC/F0000000.MP4"), Claim(2, b"DCIM/100BWC/F0000001.MP4")]
    assert sum(1 for _ in claims) == ENTRIES


async def test_entries_added_by_two_tasks_at_once_are_each_recorded_once() -> None:
    """The copies and the wipes after each commit add at once; a chunk being written
    while another entry comes is written once, and none is skipped."""
    import asyncio

    from agent.offload.summary import FileProblem

    class SlowDb(_Db):
        async def write(self, fn: Callable[[object], object]) -> object:
            await asyncio.sleep(0)  # another task runs while this one writes
            await asyncio.sleep(0)
            return fn(None)

    chunks = _Chunks()
    summary = OffloadSummary("complete")
    log = ProblemLog(cast(Database, SlowDb()), cast(Ledger, chunks), ctx(), summary)

    async def add(tag: bytes) -> None:
        for i in range(1_000):
            await log.add("failed", FileProblem(b"DCIM/%s%04d" % (tag, i), "EIO"))

    await asyncio.gather(add(b"A"), add(b"B"))
    await log.close()
    assert chunks.entries["failed"] == summary.failed.total == 2_000
    assert chunks.last["failed"]["count"] == 2_000 and summary.failed.unrecorded == []
    assert len(summary.failed.unrecorded) <= 2 * LIST_CHUNK
