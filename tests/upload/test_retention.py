"""Retention and purge against a real store: only acknowledged, unheld, old-enough files
go; a tampered central copy refuses the purge; disk pressure purges oldest first; a purge
interrupted after its ledger entry is finished at start-up."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.hold_scope import in_scope
from agent.store import ledger as ledger_mod
from agent.store.db import Database
from agent.store.evidence import set_hold
from agent.store.faults import FaultCode, open_faults
from agent.store.ledger import Ledger
from agent.upload import queue
from agent.upload.retention import Retention, plan, set_scope
from agent.upload.s3client import S3Client, S3Config
from agent.upload.uploader import Uploader

from .upload_helpers import DAY_US, NOW_US, RETENTION, store_file, stored

GiB = 1 << 30


def make_retention(db: Database, ledger: Ledger, store: Path, conf: S3Config, *,
                   free: int = 900 * GiB, total: int = 1000 * GiB, **policy: object
                   ) -> Retention:
    return Retention(db, ledger, store, dataclasses.replace(RETENTION, **policy),  # type: ignore[arg-type]
                     lambda: S3Client(conf), in_scope, disk_usage=lambda _: (free, total))


def _purged(db: Database) -> list[int]:
    return [e.data["file_id"] for e in db.read_sync(
        lambda c: ledger_mod.entries(c, kind="purged"))]


async def test_purge_only_acknowledged_unheld_old_files(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    old = NOW_US - 40 * DAY_US
    uploaded_old = store_file(db, ledger, store, b"a" * 100, name=b"A.MP4", rec_start_us=old)
    held = store_file(db, ledger, store, b"b" * 100, name=b"B.MP4", rec_start_us=old)
    young = store_file(db, ledger, store, b"c" * 100, name=b"C.MP4",
                       rec_start_us=NOW_US - 2 * DAY_US)
    up = make_uploader()
    assert await up.drain() == 3
    never_uploaded = store_file(db, ledger, store, b"d" * 100, name=b"D.MP4", rec_start_us=old)
    db.write_sync(lambda c: set_hold(c, ledger, held, "complaint 117", by="central:h1"))
    ret = make_retention(db, ledger, store, s3conf)
    done = await ret.pass_once(now_us=NOW_US)
    assert [p.file.id for p in done] == [uploaded_old]
    assert _purged(db) == [uploaded_old]
    for fid in (held, young, never_uploaded):
        f = stored(db, fid)
        assert f.purged_us is None and (store / f.stored_relpath).exists()
    gone = stored(db, uploaded_old)
    assert not (store / gone.stored_relpath).exists()
    entry = db.read_sync(lambda c: ledger_mod.entries(c, kind="purged"))[0]
    assert entry.data["reason"] == "retention" and entry.data["etag"]


async def test_tampered_central_copy_refuses_purge_and_raises_fault(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    fid = store_file(db, ledger, store, b"evidence" * 1000, name=b"T.MP4")
    assert await make_uploader().drain() == 1
    job = db.read_sync(queue.jobs)[0]
    # someone replaces the object on the server (same size and metadata, other bytes)
    fake = b"EVIDENCE" * 1000
    info = s3.head(job.object_key)
    assert info is not None
    s3.request("PUT", job.object_key, body=fake,
               headers={"x-amz-meta-blake3": info.metadata["blake3"],
                        "content-md5": __import__("base64").b64encode(
                            hashlib.md5(fake).digest()).decode()})
    ret = make_retention(db, ledger, store, s3conf)
    assert await ret.pass_once(now_us=NOW_US) == []
    f = stored(db, fid)
    assert f.purged_us is None and (store / f.stored_relpath).exists()
    faults = db.read_sync(open_faults)
    assert [x.code for x in faults] == [FaultCode.CENTRAL_COPY_MISMATCH]
    assert "etag" in " ".join(faults[0].detail["problems"])


async def test_missing_central_copy_is_uploaded_again_not_purged(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    fid = store_file(db, ledger, store, b"x" * 5000, name=b"M.MP4")
    up = make_uploader()
    assert await up.drain() == 1
    s3.delete(db.read_sync(queue.jobs)[0].object_key)
    ret = make_retention(db, ledger, store, s3conf)
    assert await ret.pass_once(now_us=NOW_US) == []
    assert db.read_sync(queue.jobs)[0].state == "pending"
    assert await up.drain() == 1
    assert [p.file.id for p in await ret.pass_once(now_us=NOW_US)] == [fid]


async def test_hold_scope_covers_files_offloaded_later(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    day = NOW_US - 40 * DAY_US
    db.write_sync(lambda c: set_scope(c, "case-7", "case 7", {
        "serial": "SER00009", "from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        NOW_US))
    later = store_file(db, ledger, store, b"q" * 300, serial="SER00009", name=b"L.MP4",
                       rec_start_us=day)
    other = store_file(db, ledger, store, b"r" * 300, serial="SER00001", name=b"O.MP4",
                       rec_start_us=day)
    assert await make_uploader().drain() == 2
    ret = make_retention(db, ledger, store, s3conf)
    assert [p.file.id for p in await ret.pass_once(now_us=NOW_US)] == [other]
    f = stored(db, later)
    assert f.on_hold and f.purged_us is None  # and the hold is now recorded on the file
    assert [h.set_by for h in f.holds] == ["central:case-7"]


async def test_disk_pressure_purges_acknowledged_files_oldest_first(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    ids = {}
    for days in (10, 20, 15, 12, 3):  # all younger than purge_after_days (30)
        ids[days] = store_file(db, ledger, store, os.urandom(1000), name=f"{days}.MP4".encode(),
                               rec_start_us=NOW_US - days * DAY_US)
    assert await make_uploader().drain() == 5
    # 10 % free, target 25 %: 15 % of 10 kB total = 1500 bytes to free -> two files
    ret = make_retention(db, ledger, store, s3conf, free=1000, total=10_000)
    done = await ret.pass_once(now_us=NOW_US)
    assert [p.file.id for p in done] == [ids[20], ids[15]]
    assert {p.reason for p in done} == {"disk_pressure"}
    # the 3-day-old file is never purged (min_days_on_dock 7), however full the disk
    ret = make_retention(db, ledger, store, s3conf, free=0, total=10_000)
    done = await ret.pass_once(now_us=NOW_US)
    assert [p.file.id for p in done] == [ids[12], ids[10]]


async def test_purge_interrupted_after_its_ledger_entry_is_finished_at_startup(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader], monkeypatch: pytest.MonkeyPatch) -> None:
    fid = store_file(db, ledger, store, b"z" * 100, name=b"Z.MP4")
    assert await make_uploader().drain() == 1
    ret = make_retention(db, ledger, store, s3conf)

    def crash(self: Path, missing_ok: bool = False) -> None:
        raise SystemExit("power cut")  # dies between the ledger commit and the unlink

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(SystemExit):
        await ret.pass_once(now_us=NOW_US)
    monkeypatch.undo()
    f = stored(db, fid)
    assert f.purged_us is not None and (store / f.stored_relpath).exists()
    assert await make_retention(db, ledger, store, s3conf).settle() == [fid]
    assert not (store / f.stored_relpath).exists()
    assert _purged(db) == [fid]  # one record, not two


def test_plan_is_pure_and_refuses_everything_not_eligible() -> None:
    assert plan([], [], in_scope, RETENTION, now_us=NOW_US, free_bytes=0, total_bytes=1) == []


async def test_central_acknowledgement_is_required_when_configured(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    fid = store_file(db, ledger, store, b"k" * 700, name=b"ACK.MP4")
    assert await make_uploader().drain() == 1
    ret = make_retention(db, ledger, store, s3conf, require_central_ack=True)
    assert await ret.pass_once(now_us=NOW_US) == []
    f = stored(db, fid)
    acked, unknown = db.write_sync(lambda c: queue.record_central_ack(
        c, ledger, [f.blake3_hex, "0" * 64]))
    assert (acked, unknown) == (1, ["0" * 64])
    assert [e.data["file_id"] for e in db.read_sync(
        lambda c: ledger_mod.entries(c, kind="upload_acknowledged"))] == [fid]
    assert [p.file.id for p in await ret.pass_once(now_us=NOW_US)] == [fid]


async def test_cleared_hold_scope_releases_its_files(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    from agent.store.evidence import clear_hold
    from agent.upload.retention import clear_scope

    db.write_sync(lambda c: set_scope(c, "h9", "r", {"officer_no": "007"}, NOW_US))
    fid = store_file(db, ledger, store, b"w" * 300, name=b"W.MP4")
    assert await make_uploader().drain() == 1
    ret = make_retention(db, ledger, store, s3conf)
    assert await ret.pass_once(now_us=NOW_US) == []
    db.write_sync(lambda c: clear_scope(c, "h9", NOW_US))
    for h in stored(db, fid).holds:
        db.write_sync(lambda c: clear_hold(c, ledger, h.id, "case closed"))  # runs at once
    assert [p.file.id for p in await ret.pass_once(now_us=NOW_US)] == [fid]
