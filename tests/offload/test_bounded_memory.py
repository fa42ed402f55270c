"""Memory that does not grow with the listing or the bays. A recorder's storage is walked
into a packed file list: however many entries a directory holds, the walk keeps no record
per regular file and never more than one stat result alive at a time; an offload holds an
item only for a file the dock knows something about. The recorder's own listing is packed
page by page, and an offload's summary counts its files exactly while keeping a bounded
list of names. Many bays share small copy buffers."""

from __future__ import annotations

import gc
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from agent.offload import walk
from agent.offload.items import Item, TimeClaims
from agent.offload.summary import StoredFile
from agent.offload.walk import SourceFile

ENTRIES = 200_000
MTIME_NS = 1_790_000_000_000_000_000


class _Stat:
    """A stat result that counts how many of its kind are alive."""

    live = 0
    most = 0

    def __init__(self, mode: int, size: int) -> None:
        _Stat.live += 1
        _Stat.most = max(_Stat.most, _Stat.live)
        self.st_mode, self.st_size = mode, size
        self.st_mtime_ns, self.st_blocks = MTIME_NS + size, (size + 511) // 512

    def __del__(self) -> None:
        _Stat.live -= 1


class _Entry:
    def __init__(self, name: str, mode: int, size: int) -> None:
        self.name, self._mode, self._size = name, mode, size

    def stat(self, *, follow_symlinks: bool = True) -> _Stat:
        assert not follow_symlinks
        return _Stat(self._mode, self._size)


class _Listing:
    """`os.scandir` of one huge directory, entries generated as they are read (reverse
    name order, so the walk's sorting is exercised too); every 1000th is a FIFO."""

    def __enter__(self) -> Iterator[_Entry]:
        return (_Entry(f"F{i:07d}.MP4", stat.S_IFIFO if i % 1000 == 0 else stat.S_IFREG,
                       i) for i in range(ENTRIES - 1, -1, -1))

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        return None


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_huge_directory_walked_with_one_stat_result_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "DCIM").mkdir()
    monkeypatch.setattr(os, "scandir", lambda _fd: _Listing())
    _Stat.live = _Stat.most = 0
    found: list[walk.Problem] = []
    listing = walk.scan(os.fsencode(tmp_path), ["DCIM"], found.append)
    assert _Stat.most == 1
    assert _Stat.live == 0
    assert _live(SourceFile) <= 1  # the files are packed, not a record each
    fifos = ENTRIES // 1000
    assert len(listing.files) == ENTRIES - fifos
    assert [r.reason for r in found] == ["fifo"] * fifos
    assert listing.refused == [] and listing.unreadable == []  # reported, not kept
    assert listing.files[0] == SourceFile(b"DCIM/F0000001.MP4", 1, MTIME_NS + 1, 1)
    assert all(a.relpath < b.relpath for a, b in itertools.pairwise(listing.files))
    assert listing.find(b"DCIM/F0123457.MP4") == SourceFile(
        b"DCIM/F0123457.MP4", 123457, MTIME_NS + 123457, (123457 + 511) // 512)
    assert listing.find(b"DCIM/F0123000.MP4") is None  # a FIFO: refused, not listed


def test_items_share_their_claims_and_work_out_times_when_asked() -> None:
    claims = TimeClaims({b"DCIM/A.MP4": (1_700_000_000_000, 1_700_000_060_000)},
                        1_800_000_000_000_000)
    a = Item(SourceFile(b"DCIM/A.MP4", 10, 1_750_000_000_000_000_000), claims)
    b = Item(SourceFile(b"DCIM/B.MP4", 10, 1_750_000_000_000_000_000), claims)
    assert a.claims is b.claims
    assert (a.times.source, a.times.start_us) == ("recorder", 1_700_000_000_000_000)
    assert (b.times.source, b.times.end_us) == ("mtime", 1_750_000_000_000_000)
    assert a.times == a.times  # a pure rule: the same answer every time it is asked


def test_many_bays_share_small_buffers_within_the_budget() -> None:
    """More copies than FULL_COPIES at once (USB 2.0 bays): small buffers, one per copy
    and one spare, never more memory than the few-bays pool."""
    from agent.offload.buffers import MANY_COPIES_BUFFER, pool_shape

    budget = 4 * (4 << 20) + (4 << 20)  # the defaults' pool: 5 buffers of 4 MiB
    assert pool_shape(4, 4, 25) == (MANY_COPIES_BUFFER, 26)
    for bays in (5, 8, 25, 64):
        size, capacity = pool_shape(4, 4, bays)
        assert capacity == bays + 1
        assert size <= MANY_COPIES_BUFFER and size * capacity <= budget
    assert pool_shape(4, 4, 4) == (4 << 20, 5)  # up to FULL_COPIES: full-size buffers


class _Claim:
    """A listing entry (as the protocol's `RecordingInfo`) that counts how many are alive."""

    live = 0
    most = 0

    def __init__(self, name: bytes, start_ms: int, end_ms: int) -> None:
        _Claim.live += 1
        _Claim.most = max(_Claim.most, _Claim.live)
        self.name, self.start_ms, self.end_ms = name, start_ms, end_ms

    def __del__(self) -> None:
        _Claim.live -= 1


PAGE = 256  # entries per page, as the firmware client asks


def _pages(names: list[int]) -> Iterator[list[_Claim]]:
    """A recorder's listing, one page at a time, entries made only as each page comes."""
    for at in range(0, len(names), PAGE):
        yield [_Claim(b"DCIM/F%07d.MP4" % i, T_MS + i, T_MS + i + 60_000)
               for i in names[at:at + PAGE]]


T_MS = 1_780_000_000_000


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_a_listing_of_200000_entries_is_packed_with_one_page_of_records_alive(
        order: str) -> None:
    """The recorder's listing goes through page by page: no record per entry outlives
    its page, and every name still finds its claimed times (sorted or not as listed)."""
    import random

    from agent.offload.listing import RecorderListing

    names = list(range(ENTRIES))
    if order == "shuffled":
        random.Random(18).shuffle(names)
    _Claim.live = _Claim.most = 0
    listing = RecorderListing()
    for page in _pages(names):
        listing.add(page)
        del page
    assert _Claim.live == 0 and _Claim.most <= PAGE
    assert len(listing) == ENTRIES
    for i in (0, 1, 4_999, 123_457, ENTRIES - 1):
        assert listing.get(b"DCIM/F%07d.MP4" % i) == (T_MS + i, T_MS + i + 60_000)
        assert b"DCIM/F%07d.MP4" % i in listing
    assert listing.get(b"DCIM/F9999999.MP4") is None and b"DCIM/" not in listing
    assert listing.get(b"") is None and listing.get(b"\xff" * 40) is None


def test_a_listing_keeps_the_last_claim_of_a_name_listed_twice_and_odd_names() -> None:
    """As a mapping would: the last claim of a name wins, in any arrival order; names are
    raw bytes (a prefix of another name, non-UTF-8, base names only) matched exactly."""
    from agent.offload.listing import RecorderListing

    entries = [_Claim(b"B.MP4", 1, 2), _Claim(b"A.MP4", 3, 4), _Claim(b"B.MP4", 5, 6),
               _Claim(b"A", 7, 8), _Claim(b"\xff\xfe.MP4", 9, 10), _Claim(b"A.MP4", 11, 12)]
    listing = RecorderListing(entries)
    assert (listing.get(b"A.MP4"), listing.get(b"B.MP4"), listing.get(b"A")) == (
        (11, 12), (5, 6), (7, 8))
    assert listing.get(b"\xff\xfe.MP4") == (9, 10) and listing.get(b"A.MP") is None
    assert list(listing) == [e.name for e in entries]  # as they arrived
    listing.add([_Claim(b"0.MP4", 13, 14)])  # a later page re-sorts what it must
    assert listing.get(b"0.MP4") == (13, 14) and listing.get(b"B.MP4") == (5, 6)
    assert RecorderListing([_Claim(b"A", 1, 2), _Claim(b"A", 3, 4)]).get(b"A") == (3, 4)


def test_time_claims_take_a_packed_listing_by_path_then_base_name() -> None:
    from agent.offload.listing import RecorderListing

    listing = RecorderListing([_Claim(b"DCIM/A.MP4", T_MS, T_MS + 1000),
                               _Claim(b"B.MP4", T_MS + 5, T_MS + 6)])
    claims = TimeClaims(listing, 1_800_000_000_000_000)
    a = Item(SourceFile(b"DCIM/A.MP4", 10, 1_750_000_000_000_000_000), claims).times
    b = Item(SourceFile(b"DCIM/X/B.MP4", 10, 1_750_000_000_000_000_000), claims).times
    c = Item(SourceFile(b"DCIM/C.MP4", 10, 1_750_000_000_000_000_000), claims).times
    assert (a.source, a.start_us, a.end_us) == ("recorder", T_MS * 1000, (T_MS + 1000) * 1000)
    assert (b.source, b.start_us) == ("recorder", (T_MS + 5) * 1000)
    assert (c.source, c.end_us) == ("mtime", 1_750_000_000_000_000)


def _stored(i: int) -> StoredFile:
    return StoredFile(b"DCIM/F%07d.MP4" % i, f"u/s/o/d/F{i:07d}.MP4", 4096, "00" * 32,
                      i % 7, late=i % 3 == 0, changed="changed" if i % 11 == 0 else None,
                      time_source="recorder", verified=False if i % 13 == 0 else True)


def test_a_summary_of_100000_files_counts_exactly_and_keeps_a_bounded_list() -> None:
    """What a session and a person need of 100,000 stored files: exact counts and sums,
    and the first names of each kind, never a record per file."""
    from agent.offload.summary import KEPT_MAX, NAMED_MAX, OffloadSummary

    n = 100_000
    s = OffloadSummary("complete")
    for i in range(n):
        s.add_stored(_stored(i), other_officer="0042" if i % 17 == 0 else None)
        s.already_stored.append(b"DCIM/OLD%07d.MP4" % i)
        s.wiped.append(b"DCIM/W%07d.MP4" % i)
    assert (s.stored.total, s.already_stored.total, s.wiped.total) == (n, n, n)
    assert len(s.stored) == len(s.already_stored) == len(s.wiped) == KEPT_MAX
    assert [f.name for f in s.stored] == [_stored(i).name for i in range(KEPT_MAX)]
    assert s.resumed_bytes == sum(i % 7 for i in range(n))
    for tally, every in ((s.late, 3), (s.changed, 11), (s.verify_failed, 13),
                         (s.other_officer, 17)):
        assert tally.total == len(range(0, n, every))
        assert len(tally) == NAMED_MAX and not tally.complete
    assert [f.name for f in s.late] == [_stored(i).name for i in range(0, 3 * NAMED_MAX, 3)]
    assert s.other_officer[0] == (_stored(0), "0042")


def test_a_small_summary_keeps_every_name() -> None:
    from agent.offload.summary import OffloadSummary

    s = OffloadSummary("complete")
    s.add_stored(_stored(1))
    s.wiped.extend([b"A", b"B"])
    assert s.stored == [_stored(1)] and s.stored.complete and s.wiped == [b"A", b"B"]
    assert s.late == [] and s.verify_failed == [] and s.changed == []


def test_an_offload_of_200000_new_files_holds_an_item_only_for_files_it_knows() -> None:
    from agent.offload.items import Items
    from agent.offload.walk import FileList

    files = FileList()
    for i in range(ENTRIES):
        files.append(SourceFile(b"DCIM/F%07d.MP4" % i, i, MTIME_NS + i, 1))
    from agent.offload.pending import JournalEntry

    items = Items(files, TimeClaims(None, 1_800_000_000_000_000))
    items.keep(7, JournalEntry("RC1", files.relpath(7), "a/F", "a/.partial-x", 7, 0))
    assert _live(SourceFile) == 1 and _live(Item) == 1  # the kept one (a pending copy)
    assert items[7] is items.kept()[0] and items[8] is not items[8]  # made when asked
    assert items[ENTRIES - 1].file == SourceFile(b"DCIM/F%07d.MP4" % (ENTRIES - 1),
                                                 ENTRIES - 1, MTIME_NS + ENTRIES - 1, 1)
    assert sum(item.file.size for item in items) == sum(range(ENTRIES))
    assert _live(Item) == 1


def test_a_file_list_keeps_values_no_64_bit_array_holds_exactly() -> None:
    """A hostile filesystem's numbers are facts: kept as read, however large."""
    from agent.offload.walk import FileList

    files = FileList()
    huge = SourceFile(b"DCIM/B.MP4", 2**64 + 5, -(2**70), 2**63)
    files.append(huge)
    files.append(SourceFile(b"DCIM/A.MP4", 1, 2, -1))
    assert list(files) == [huge, SourceFile(b"DCIM/A.MP4", 1, 2, -1)]
    ordered = files.sorted()
    assert [f.relpath for f in ordered] == [b"DCIM/A.MP4", b"DCIM/B.MP4"]
    assert ordered.find(b"DCIM/B.MP4") == huge and ordered[-1] == huge
    assert ordered.find(b"DCIM/C.MP4") is None and ordered.find(b"") is None
