"""What a listed file is to the dock: new, already stored, a new version of a stored file,
or a file recorded as wiped that the recorder still holds. Content decides, never the
name and size alone."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass

from agent.offload.errors import OffloadError
from agent.offload.rehash import hash_fd
from agent.offload.summary import FileProblem
from agent.offload.walk import FileList, SourceFile, open_source
from agent.offload.workers import Plant
from agent.store.evidence import StoredFile as IndexedFile
from agent.store.evidence import stored_versions

PLAN_BATCH = 256  # files looked up in the index per read


def plan(conn: sqlite3.Connection, serial: str, files: FileList, lo: int, hi: int
         ) -> list[tuple[int, tuple[IndexedFile, ...]]]:
    """The stored versions (newest first) of each of files `lo`..`hi` that has any."""
    out = []
    for i in range(lo, min(hi, len(files))):
        versions = tuple(stored_versions(conn, serial, files.relpath(i)))
        if versions:
            out.append((i, versions))
    return out


async def hash_source(plant: Plant, root: bytes, relpath: bytes, size: int,
                      stop: threading.Event, *, prefix: bool = False) -> str | None:
    """BLAKE3 (hex) of a recorder file as it reads now, if it still has the listed size
    (reading is bounded by it: a file that keeps growing cannot hold this up); None if
    it cannot be read or its size changed. With `prefix`, of its first `size` bytes."""
    def digest() -> bytes | None:
        fd = open_source(root, relpath)
        try:
            hasher, n = hash_fd(fd, plant.pool, stop, size)
            if n != size or (not prefix and os.fstat(fd).st_size != size):
                return None
            return hasher.digest()
        finally:
            os.close(fd)

    try:
        got = await plant.workers.call(digest, stop=stop)
    except (OSError, OffloadError):
        return None
    return None if got is None else got.hex()


@dataclass(frozen=True, slots=True)
class Known:
    """What a listed file of a name stored before is to the dock (`identify`)."""

    stored: IndexedFile | None = None  # the index row holding this content
    reappeared: IndexedFile | None = None  # recorded as wiped, yet the recorder has it
    previous: IndexedFile | None = None  # stored earlier with other content: a new version


async def identify(plant: Plant, root: bytes, f: SourceFile,
                   versions: tuple[IndexedFile, ...], stop: threading.Event) -> Known:
    """A file of a name stored before: what it holds now decides, never name and size.

    Same content as a stored copy: already stored. Same content as a copy recorded as
    wiped: the recorder's delete did not take (not copied again). Other content than
    the newest stored copy: a new version, copied and flagged.
    """
    same_size = [v for v in versions if v.size == f.size]
    # unreadable now (None): the copy reports the real problem
    got = (await hash_source(plant, root, f.relpath, f.size, stop)
           if same_size else None)
    match = next((v for v in same_size if v.blake3_hex == got), None)
    if match is not None:
        return Known(reappeared=match) if match.wiped else Known(stored=match)
    prev = next((v for v in versions if not v.wiped), None)
    if (prev is not None and prev.source_changed is not None
            and f.size > prev.size
            and await hash_source(plant, root, f.relpath, prev.size, stop,
                                  prefix=True) == prev.blake3_hex):
        # The earlier copy was cut at its admitted size while the recording grew; this
        # is the same recording, complete now: stored as a record of its own, and not a
        # content change (the flagged prefix stays as it was).
        prev = None
    return Known(previous=prev)


def reappeared(f: SourceFile, match: IndexedFile) -> FileProblem:
    """The wipe_failed entry of a file recorded as wiped that the recorder still holds."""
    return FileProblem(
        f.relpath, "recorded as wiped at an earlier docking, but the recorder still holds"
        " it: its delete did not take",
        detail={"file_id": match.id, "firmware_claim": "deleted", "wiped_us": match.wiped_us})
