"""The offloader's per-file records while one recorder is offloaded."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.offload.copyjob import CopyResult
from agent.offload.listing import ListedTimes
from agent.offload.pending import JournalEntry
from agent.offload.times import RecordingTimes, decide
from agent.offload.walk import FileList, SourceFile
from agent.store.evidence import StoredFile as IndexedFile


@dataclass(frozen=True, slots=True)
class TimeClaims:
    """What decides the recording times of every file of one offload (one object shared by
    all its items): the recorder's listing, path relative to the storage root (or base
    name) -> (start_ms, end_ms), and the dock's clock when the offload started."""

    recordings: ListedTimes | None
    now_us: int

    def times(self, f: SourceFile) -> RecordingTimes:
        """The file's recording times from the listing (by path, then base name)."""
        hit = None
        if self.recordings:
            hit = self.recordings.get(f.relpath) or self.recordings.get(f.basename)
        return decide(hit, f.mtime_ns, self.now_us)


@dataclass(slots=True)
class Item:
    """One file of the recorder's listing that the offload acts on (copies it), and what
    the dock knows about it. Its recording times are worked out when asked (a pure rule
    over the shared claims)."""

    file: SourceFile
    claims: TimeClaims
    journal: JournalEntry | None = None
    # stored earlier with other content (this is a new version): the index row's id, and
    # the row itself once the copy starts (`FileCopy` reads it)
    previous_id: int | None = None
    previous: IndexedFile | None = None

    @property
    def times(self) -> RecordingTimes:
        return self.claims.times(self.file)

    def still_needed(self) -> int:
        """Bytes still to be written for this file (a resumable partial counts its rest)."""
        j = self.journal
        if j is not None and (j.source_size, j.source_mtime_ns) == (self.file.size,
                                                                    self.file.mtime_ns):
            return max(0, self.file.size - j.durable_len)
        return self.file.size

    def replaced(self, result: CopyResult) -> IndexedFile | None:
        """The stored copy this one is a new version of (None when the content is the same)."""
        prev = self.previous
        return prev if prev is not None and prev.blake3_hex != result.digest.hex() else None


NEW, STORED = 0, 1  # what a listed file is to this offload (`Items.settle`)


class Items:
    """Every listed file of one offload as an `Item`, made when asked for. Only the items
    of files with a pending copy are held (`keep`: bounded by the journal); a new version
    of a stored file is its index and the earlier copy's file id; a file stored already is
    one byte of state and, when it may be wiped after the copies, its index and stored
    file id (`settle`); every other file is just its packed entry in the walk's
    `FileList`. So an offload of many new files, a re-docking of many stored ones, or a
    recorder whose every file changed, holds no record per file."""

    def __init__(self, files: FileList, claims: TimeClaims) -> None:
        self.files = files
        self._claims = claims
        self._kept: dict[int, Item] = {}
        self._state = bytearray(len(files))  # NEW or STORED, per file
        self._wipe_at = array("I")  # files stored already that may be wiped ...
        self._wipe_ids = array("q")  # ... and the stored file each matched
        self._versions_at = array("I")  # new versions (no pending copy), ascending ...
        self._previous_ids = array("q")  # ... and the earlier copy of each

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Item:
        kept = self._kept.get(i)
        if kept is not None:
            return kept
        at = bisect.bisect_left(self._versions_at, i)
        previous_id = (self._previous_ids[at] if at < len(self._versions_at)
                       and self._versions_at[at] == i else None)
        return Item(self.files[i], self._claims, previous_id=previous_id)

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))

    def keep(self, i: int, journal: JournalEntry | None,
             previous_id: int | None = None) -> None:
        """What the journal (a pending copy) and the index (the stored copy it is a new
        version of) know of file `i`. Files are given in listing order, except that
        pending copies may come first."""
        if journal is not None or (self._versions_at and self._versions_at[-1] >= i):
            self._kept[i] = Item(self.files[i], self._claims, journal, previous_id)
        elif previous_id is not None:
            self._versions_at.append(i)
            self._previous_ids.append(previous_id)

    def settle(self, i: int, wipe_id: int | None = None) -> None:
        """File `i` needs no copy (stored already, or recorded as wiped); `wipe_id`: the
        stored file whose copy on the recorder may be wiped after the copies."""
        self._state[i] = STORED
        self._kept.pop(i, None)  # (a file settled is never also a new version)
        if wipe_id is not None:
            self._wipe_at.append(i)
            self._wipe_ids.append(wipe_id)

    def to_copy(self) -> Iterator[int]:
        """The files that are not settled, in listing order."""
        state = self._state
        return (i for i in range(len(state)) if state[i] == NEW)

    def to_wipe(self) -> Iterator[tuple[bytes, int]]:
        """(recorder path, stored file id) of every settled file that may be wiped."""
        return ((self.files.relpath(i), file_id)
                for i, file_id in zip(self._wipe_at, self._wipe_ids, strict=True))

    def kept(self) -> list[Item]:
        """The items held (see `keep`), in listing order."""
        return [self._kept[i] for i in sorted(self._kept)]


@dataclass(frozen=True, slots=True)
class Claim:
    """A delete the recorder answered "deleted"; recorded once its absence is confirmed."""

    file_id: int
    name: bytes


class Claims:
    """The deletes of one offload the recorder answered "deleted", packed (a stored file
    id and the name, some 16 bytes plus the name each) until a fresh listing confirms
    them at the end: a recorder wiped of many files holds no record per file."""

    def __init__(self) -> None:
        self._ids = array("q")
        self._names = bytearray()
        self._ends = array("Q")

    def append(self, c: Claim) -> None:
        self._ids.append(c.file_id)
        self._names += c.name
        self._ends.append(len(self._names))

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Claim]:
        for i, file_id in enumerate(self._ids):
            start = self._ends[i - 1] if i else 0
            yield Claim(file_id, bytes(self._names[start:self._ends[i]]))


@dataclass(frozen=True, slots=True)
class Committed:
    """A file whose custody record is committed; verify and wipe may follow."""

    item: Item
    journal: JournalEntry
    result: CopyResult
    file_id: int
    late: bool
    final: Path  # the stored file
