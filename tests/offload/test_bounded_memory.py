"""Memory that does not grow with the listing or the bays. A recorder's listing is walked
in small per-file records: however many entries a directory holds, the walk keeps one
record per regular file and never more than one stat result alive at a time (no transient
heap proportional to the listing); many bays share small copy buffers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from agent.offload import walk
from agent.offload.items import Item, TimeClaims
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


def test_huge_directory_walked_with_one_stat_result_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "DCIM").mkdir()
    monkeypatch.setattr(os, "scandir", lambda _fd: _Listing())
    _Stat.live = _Stat.most = 0
    listing = walk.scan(os.fsencode(tmp_path), ["DCIM"])
    assert _Stat.most == 1
    assert _Stat.live == 0
    fifos = ENTRIES // 1000
    assert len(listing.files) == ENTRIES - fifos
    assert [r.reason for r in listing.refused] == ["fifo"] * fifos
    assert listing.files[0] == SourceFile(b"DCIM/F0000001.MP4", 1, MTIME_NS + 1, 1)
    assert all(a.relpath < b.relpath for a, b in zip(listing.files, listing.files[1:],
                                                     strict=False))


def test_items_share_their_claims_and_work_out_times_when_asked() -> None:
    claims = TimeClaims({b"DCIM/A.MP4": (1_700_000_000_000, 1_700_000_060_000)},
                        1_800_000_000_000_000)
    a = Item(SourceFile(b"DCIM/A.MP4", 10, 1_750_000_000_000_000_000), claims)
    b = Item(SourceFile(b"DCIM/B.MP4", 10, 1_750_000_000_000_000_000), claims)
    assert a.claims is b.claims
    assert a.versions == () and a.versions is b.versions
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
