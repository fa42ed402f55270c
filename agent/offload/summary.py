"""What an offload reports: progress while it runs, a summary when it ends."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

T = TypeVar("T")
Outcome = Literal["complete", "interrupted", "storage_full", "store_error"]


@dataclass(frozen=True, slots=True)
class OffloadProgress:
    recorder_serial: str
    session_id: str
    bay: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rate_bps: float  # bytes per second copied in this session (resumed prefixes excluded)
    eta_s: float | None  # None until a rate is known
    current_file: bytes | None


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A recorder entry that was not stored (failed), refused, or not wiped, and why."""

    name: bytes
    reason: str
    detail: Mapping[str, object] | None = None  # structured facts (e.g. the firmware's claim)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file this offload committed to the store."""

    name: bytes  # recorder path relative to the storage root
    stored_relpath: str
    size: int
    blake3_hex: str
    resumed_from: int  # bytes taken over from an interrupted copy
    late: bool
    changed: str | None  # set when the source changed during the copy (never wiped)
    # where the recording times came from ("dock": the recorder's were out of range)
    time_source: Literal["recorder", "mtime", "dock"]
    verified: bool | None  # None: not re-read (verify mode)


KEPT_MAX = 100  # stored / already stored / wiped files a summary keeps by name
NAMED_MAX = 50  # files named per kind that a person reads (late, changed, failed checks)


class HeadList(list[T]):
    """The first `limit` entries appended (in order) and the count of all (`total`).

    A summary must not grow with the number of files a recorder holds: what the session
    and a person need of twenty thousand stored files is their count and a few names
    (every file has its own ledger entry and index row)."""

    def __init__(self, limit: int = KEPT_MAX) -> None:
        super().__init__()
        self.limit = limit
        self.total = 0

    def append(self, value: T, /) -> None:
        self.total += 1
        if len(self) < self.limit:
            super().append(value)

    def extend(self, values: Iterable[T], /) -> None:
        for value in values:
            self.append(value)

    @property
    def complete(self) -> bool:
        """Whether every entry appended is kept."""
        return self.total == len(self)


LIST_CHUNK = 100  # entries per "entry_list" ledger entry


class ProblemList(HeadList[FileProblem]):
    """A problem list (refused, failed, not wiped) that does not grow with the recorder:
    its exact count, the first `NAMED_MAX` entries (what a fault names), and the entries
    not yet in the ledger (fewer than two chunks). Every entry of a list longer than a
    fault names is recorded in "entry_list" ledger entries of `LIST_CHUNK` each, written
    as the list grows (`agent.offload.problems`); `seqs` are those entries."""

    def __init__(self) -> None:
        super().__init__(NAMED_MAX)
        self.unrecorded: list[FileProblem] = []
        self.seqs = array("q")
        self.parts = 0  # "entry_list" entries written

    def append(self, value: FileProblem, /) -> None:
        super().append(value)
        self.unrecorded.append(value)

    @property
    def chunk_ready(self) -> bool:
        """A full chunk waits and the list is known to need the ledger (one more entry
        came after it: the last chunk of a list is written with the list's count)."""
        return len(self.unrecorded) > LIST_CHUNK

    @property
    def long(self) -> bool:
        """Longer than a fault names: every entry goes to the ledger."""
        return self.total > NAMED_MAX


@dataclass(slots=True)
class OffloadSummary:
    """What one offload did. Files stored, already stored and wiped are counted exactly
    and kept by name only up to `KEPT_MAX` (`HeadList`); what a session turns into faults
    is kept as it needs it: the problem lists by count, their first `NAMED_MAX` entries
    and the ledger entries holding all of them (`ProblemList`), and the first `NAMED_MAX`
    of the late, changed, unverified and otherwise-filed stored files."""

    outcome: Outcome
    detail: str = ""
    stored: HeadList[StoredFile] = field(default_factory=HeadList)
    already_stored: HeadList[bytes] = field(default_factory=HeadList)
    failed: ProblemList = field(default_factory=ProblemList)  # faults: not stored, not wiped
    refused: ProblemList = field(default_factory=ProblemList)  # hostile entries
    wiped: HeadList[bytes] = field(default_factory=HeadList)
    wipe_failed: ProblemList = field(default_factory=ProblemList)
    restarted: HeadList[FileProblem] = field(  # partials found unusable
        default_factory=lambda: HeadList(NAMED_MAX))
    bytes_copied: int = 0  # copied in this session
    bytes_needed: int = 0  # what admission asked for (without the reserve)
    bytes_free: int = 0  # free space on the store at admission
    resumed_bytes: int = 0  # of the stored files, taken over from interrupted copies
    late: HeadList[StoredFile] = field(
        default_factory=lambda: HeadList(NAMED_MAX))
    changed: HeadList[StoredFile] = field(
        default_factory=lambda: HeadList(NAMED_MAX))
    verify_failed: HeadList[StoredFile] = field(
        default_factory=lambda: HeadList(NAMED_MAX))
    # stored under the officer its name carries, not the docking's officer record
    other_officer: HeadList[tuple[StoredFile, str]] = field(
        default_factory=lambda: HeadList(NAMED_MAX))

    def add_stored(self, f: StoredFile, other_officer: str | None = None) -> None:
        """Count one committed file into every tally it belongs to."""
        self.stored.append(f)
        self.resumed_bytes += f.resumed_from
        if f.late:
            self.late.append(f)
        if f.changed is not None:
            self.changed.append(f)
        if f.verified is False:
            self.verify_failed.append(f)
        if other_officer is not None:
            self.other_officer.append((f, other_officer))
