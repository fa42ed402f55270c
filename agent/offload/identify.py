"""What a listed file is to the dock: new, already stored, a new version of a stored file,
or a file recorded as wiped that the recorder still holds. Content decides, never the
name and size alone."""

from __future__ import annotations

import os
import sqlite3
import threading

from agent.offload import pending
from agent.offload.errors import OffloadError
from agent.offload.items import Item, Items
from agent.offload.rehash import hash_fd
from agent.offload.summary import FileProblem, OffloadSummary
from agent.offload.walk import open_source
from agent.offload.workers import Plant
from agent.store.evidence import stored_versions


def plan(conn: sqlite3.Connection, serial: str, items: Items) -> None:
    """Keep the item of each file with stored versions or a pending copy, with them."""
    rows = pending.for_recorder(conn, serial)
    files = items.files
    for i in range(len(files)):
        relpath = files.relpath(i)
        versions = tuple(stored_versions(conn, serial, relpath))
        journal = rows.get(relpath)
        if versions or journal is not None:
            items.keep(i, versions, journal)


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


async def identify(plant: Plant, root: bytes, item: Item, stop: threading.Event,
                   summary: OffloadSummary) -> None:
    """A file of a name stored before: what it holds now decides, never name and size.

    Same content as a stored copy: already stored. Same content as a copy recorded as
    wiped: the recorder's delete did not take (named; not copied again). Other content
    than the newest stored copy: a new version, copied and flagged.
    """
    same_size = [v for v in item.versions if v.size == item.file.size]
    # unreadable now (None): the copy reports the real problem
    got = (await hash_source(plant, root, item.file.relpath, item.file.size, stop)
           if same_size else None)
    match = next((v for v in same_size if v.blake3_hex == got), None)
    if match is not None and not match.wiped:
        item.stored = match
        item.never_wipe = match.source_changed is not None
        return
    if match is not None:
        item.reappeared = match
        summary.wipe_failed.append(FileProblem(
            item.file.relpath,
            "recorded as wiped at an earlier docking, but the recorder still holds it:"
            " its delete did not take",
            detail={"file_id": match.id, "firmware_claim": "deleted",
                    "wiped_us": match.wiped_us}))
        return
    prev = next((v for v in item.versions if not v.wiped), None)
    if (prev is not None and prev.source_changed is not None
            and item.file.size > prev.size
            and await hash_source(plant, root, item.file.relpath, prev.size, stop,
                                  prefix=True) == prev.blake3_hex):
        # The earlier copy was cut at its admitted size while the recording grew; this
        # is the same recording, complete now: stored as a record of its own, and not a
        # content change (the flagged prefix stays as it was).
        prev = None
    item.previous = prev
