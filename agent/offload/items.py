"""The offloader's per-file records while one recorder is offloaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.offload.copyjob import CopyResult
from agent.offload.listing import ListedTimes
from agent.offload.pending import JournalEntry
from agent.offload.times import RecordingTimes, decide
from agent.offload.walk import SourceFile
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
