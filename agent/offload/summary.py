"""What an offload reports: progress while it runs, a summary when it ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(slots=True)
class OffloadSummary:
    outcome: Outcome
    detail: str = ""
    stored: list[StoredFile] = field(default_factory=list)
    already_stored: list[bytes] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)  # faults: not stored, not wiped
    refused: list[FileProblem] = field(default_factory=list)  # hostile entries
    wiped: list[bytes] = field(default_factory=list)
    wipe_failed: list[FileProblem] = field(default_factory=list)
    restarted: list[FileProblem] = field(default_factory=list)  # partials found unusable
    bytes_copied: int = 0  # copied in this session
    bytes_needed: int = 0  # what admission asked for (without the reserve)
    bytes_free: int = 0  # free space on the store at admission
    # Complete lists recorded in the ledger ("entry_list" entries) when a list is longer
    # than a fault can name: list name ("refused", "failed", "wipe_failed") -> ledger seqs
    listed: dict[str, list[int]] = field(default_factory=dict)

    @property
    def changed(self) -> list[StoredFile]:
        return [f for f in self.stored if f.changed is not None]

    @property
    def verify_failed(self) -> list[StoredFile]:
        return [f for f in self.stored if f.verified is False]
