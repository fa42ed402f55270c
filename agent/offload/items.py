"""The offloader's per-file records while one recorder is offloaded."""

from __future__ import annotations

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
    """One file of the recorder's listing and what the dock knows about it.

    One is kept for every listed file while the recorder is offloaded, so it holds only
    references: its recording times are worked out when asked (a pure rule over the
    shared claims), and a file with no stored versions shares the empty tuple."""

    file: SourceFile
    claims: TimeClaims
    journal: JournalEntry | None = None
    stored: IndexedFile | None = None  # the index row holding this content (hash-matched)
    versions: tuple[IndexedFile, ...] = ()  # rows of this name, newest first
    previous: IndexedFile | None = None  # stored earlier with other content: a new version
    reappeared: IndexedFile | None = None  # recorded as wiped, yet the recorder still has it
    never_wipe: bool = False  # stored while it changed: the recorder keeps its copy

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


class Items:
    """Every listed file of one offload as an `Item`, made when asked for. Only the items
    the dock knows something about (stored versions, a pending copy: `keep`) are held;
    every other file is just its packed entry in the walk's `FileList`, so an offload of
    many new files holds no record per file."""

    def __init__(self, files: FileList, claims: TimeClaims) -> None:
        self.files = files
        self._claims = claims
        self._kept: dict[int, Item] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Item:
        kept = self._kept.get(i)
        return kept if kept is not None else Item(self.files[i], self._claims)

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))

    def keep(self, i: int, versions: tuple[IndexedFile, ...],
             journal: JournalEntry | None) -> Item:
        """Hold file `i`'s item with what the index and the journal know of it."""
        item = self._kept[i] = Item(self.files[i], self._claims, journal, versions=versions)
        return item

    def kept(self) -> list[Item]:
        """The items held (see `keep`), in listing order."""
        return [self._kept[i] for i in sorted(self._kept)]


@dataclass(frozen=True, slots=True)
class Claim:
    """A delete the recorder answered "deleted"; recorded once its absence is confirmed."""

    file_id: int
    name: bytes


@dataclass(frozen=True, slots=True)
class Committed:
    """A file whose custody record is committed; verify and wipe may follow."""

    item: Item
    journal: JournalEntry
    result: CopyResult
    file_id: int
    late: bool
    final: Path  # the stored file
