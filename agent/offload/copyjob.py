"""What a copy of one recorder file is asked to do, what it reports while it runs, and
what it returns."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.offload.errors import StoreError, StoreFullError
from agent.offload.pending import JournalEntry
from agent.offload.walk import SourceFile

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class CopyHooks(Protocol):
    """Callbacks from the copy threads (they must be thread-safe)."""

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        """The partial is about to be started from zero for a source with this identity;
        forget any durable prefix."""

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        """`length` bytes of the partial are on disk; their BLAKE3 is `digest`."""

    def progress(self, nbytes: int) -> None:
        """`nbytes` more bytes were copied."""

    def resumed(self, nbytes: int) -> None:
        """`nbytes` of the file were taken over from a verified earlier copy."""


@dataclass(frozen=True, slots=True)
class CopyJob:
    source_root: bytes
    source_dev: int  # st_dev of the storage root when the offload began
    source: SourceFile
    partial: Path
    final: Path
    resume: JournalEntry | None
    fdatasync_every: int
    read_retries: int
    depth: int  # copy buffers in flight for this file
    # A durable point also after this many seconds with unsynced data, whichever comes
    # first: a pull mid-file then resumes near where it stopped, however large `every`.
    fdatasync_interval_s: float = 2.0
    direct: bool = False  # O_DIRECT store writes where the filesystem allows (offload.direct_io)


@dataclass(frozen=True, slots=True)
class CopyResult:
    size: int
    digest: bytes
    changed: str | None  # why the source is considered changed during the copy, if it is
    resumed_from: int  # bytes taken over from a verified durable partial
    restart_reason: str | None  # why a journalled partial was discarded, if one was
    installed: bool = False  # already renamed to its final name by an interrupted run


def store_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in FULL_ERRNOS:
        return StoreFullError(f"evidence disk full while {what}")
    return StoreError(f"cannot write the evidence store while {what}: {exc}")
