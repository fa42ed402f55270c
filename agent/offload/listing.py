"""The recorder's own listing (name -> claimed recording times), kept compact.

A recorder may list up to a million recordings. Kept as one Python record per entry (the
protocol's record, a name, three integers, a dict slot and a tuple) that costs some
500 bytes each, for the whole offload. Here the entries are packed as they arrive, page by
page: the names one after the other in one byte string, their offsets and the claimed
times in typed arrays (about 24 bytes plus the name per entry, and no object per entry).
Lookups bisect an index sorted by name; a listing that arrives sorted (the usual case)
needs no index of its own.

The times are claims: they are kept exactly as received and judged later, file by file
(`agent.offload.times`). A name listed twice keeps its last claim, as a mapping would.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class ListingEntry(Protocol):
    """One entry of a recorder's listing (the protocol's `RecordingInfo`)."""

    @property
    def name(self) -> bytes: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...


class ListedTimes(Protocol):
    """What the offloader asks of a listing: the times claimed for a name, if listed."""

    def get(self, name: bytes, /) -> tuple[int, int] | None: ...

    def __len__(self) -> int: ...


def _fits(ms: int) -> int:
    # the protocol bounds times to 0..2**63-1; a value out of a signed 64-bit range can
    # only come from elsewhere and is clamped (it is out of any plausible range either way)
    return min(max(int(ms), _I64_MIN), _I64_MAX)


class RecorderListing:
    """The recorder's listing packed: names in one byte string, times in arrays."""

    def __init__(self, entries: Iterable[ListingEntry] = ()) -> None:
        self._names = bytearray()
        self._ends_at = array("Q")  # offset in `_names` just after each name
        self._start = array("q")
        self._end = array("q")
        self._order: array[int] | None = None  # indices by name (None: arrival order is)
        self._sorted = True  # every name so far >= the one before it
        self.add(entries)

    def add(self, entries: Iterable[ListingEntry]) -> None:
        """Take one page (any iterable) of entries; keeps nothing of the objects given."""
        for e in entries:
            name = bytes(e.name)
            if self._sorted and self._ends_at and name < self._name(len(self._ends_at) - 1):
                self._sorted = False
            self._names += name
            self._ends_at.append(len(self._names))
            self._start.append(_fits(e.start_ms))
            self._end.append(_fits(e.end_ms))
        self._order = None

    def __len__(self) -> int:
        return len(self._ends_at)

    def _name(self, i: int) -> bytes:
        return bytes(self._names[self._ends_at[i - 1] if i else 0:self._ends_at[i]])

    def _index(self) -> Sequence[int]:
        if self._sorted:
            return range(len(self))
        if self._order is None or len(self._order) != len(self):
            # stable: among equal names the last listed stays last (and wins, see `_find`)
            self._order = array("Q", sorted(range(len(self)), key=self._name))
        return self._order

    def _find(self, name: bytes) -> int | None:
        order = self._index()
        at = bisect.bisect_right(order, name, key=self._name) - 1
        if at >= 0 and self._name(order[at]) == name:
            return order[at]
        return None

    def get(self, name: bytes, /) -> tuple[int, int] | None:
        """(start_ms, end_ms) claimed for `name`, or None when it is not listed."""
        i = self._find(name)
        return None if i is None else (self._start[i], self._end[i])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and self._find(name) is not None

    def __iter__(self) -> Iterator[bytes]:
        """The listed names, in the order they arrived."""
        return (self._name(i) for i in range(len(self)))
