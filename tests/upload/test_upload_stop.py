"""A stop inside one file's upload ends it at the next chunk and records nothing.

Before sending a file whose key the store already holds (a resend after a crash), the
uploader hashes the whole stored file; that hash, like the paced send, must see the stop
between chunks. The stored file here is a hole of a TiB: minutes of hashing even at memory
speed, so only a stop seen inside the file ends the drain before the generous deadline."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from agent.store.db import Database
from agent.store.evidence import StoredFileRecord, commit_file, layout_relpath
from agent.store.faults import open_faults
from agent.store.ledger import Ledger
from agent.upload import queue
from agent.upload.objects import object_key
from agent.upload.s3client import S3Client
from agent.upload.uploader import Uploader
from tests.openfiles import holds_open

from .upload_helpers import DAY_US, NOW_US, UPLOAD

HUGE = 1 << 40
DEADLINE_S = 60.0


def store_huge(db: Database, ledger: Ledger, store: Path) -> Path:
    start = NOW_US - 40 * DAY_US
    rel = layout_relpath("U01", "SER00001", "007", dt.date(2026, 10, 1),
                         b"BIG.MP4")
    path = store / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh:
        fh.truncate(HUGE)
    os.chmod(path, 0o440)
    rec = StoredFileRecord(
        recorder_serial="SER00001", session_id="sess-1", bay="bay-1", source_name=b"BIG.MP4",
        stored_relpath=rel, size=HUGE, blake3_hex="ab" * 32, rec_start_us=start,
        rec_end_us=start + 60_000_000, offload_start_us=start + 100, offload_end_us=start + 200,
        unit_no="U01", officer_no="007", officer_name="Li Wei", late=False, late_by_s=0.0,
        deadline_us=None)
    db.write_sync(lambda c: commit_file(c, ledger, rec))
    return path



async def test_a_stop_while_hashing_a_file_before_its_resend_records_nothing(
        db: Database, ledger: Ledger, store: Path, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    path = store_huge(db, ledger, store)
    db.write_sync(lambda c: queue.enqueue_new(c, lambda f: object_key(UPLOAD.prefix, f), NOW_US))
    (job,) = db.read_sync(queue.jobs)
    # the key already holds an object (as after a crash): the stored file is hashed first
    s3.put(job.object_key, b"x", hashlib.md5(b"x").hexdigest(), {})
    up = make_uploader()
    drain = asyncio.create_task(up.drain())
    async with asyncio.timeout(DEADLINE_S):
        while not holds_open(path):
            assert not drain.done(), drain.result()
            await asyncio.sleep(0.01)
    up.close()
    done, _ = await asyncio.wait([drain], timeout=DEADLINE_S)
    assert done, "the upload did not see the stop inside the file"
    assert drain.result() == 0
    (after,) = db.read_sync(queue.jobs)  # nothing recorded: no failure, no fault
    assert (after.state, after.attempts, after.last_error) == ("pending", 0, None), after
    assert not db.read_sync(lambda c: open_faults(c))
