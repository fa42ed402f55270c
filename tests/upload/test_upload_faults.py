"""The store down for a long time, hanging, answering errors; kill -9 mid-multipart;
write-once keys. Everything against a real Ceph RGW (through a fault proxy where needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.store import ledger as ledger_mod
from agent.store.db import Database
from agent.store.faults import FaultCode, open_faults
from agent.store.ledger import Ledger
from agent.upload import queue
from agent.upload.objects import object_key
from agent.upload.s3client import S3Client, S3Config
from agent.upload.uploader import Uploader

from .upload_helpers import UPLOAD, FaultProxy, store_file, stored, wait_for, write_config


def _uploaded(db: Database) -> list[ledger_mod.LedgerEntry]:
    return db.read_sync(lambda c: ledger_mod.entries(c, kind="uploaded"))


def _codes(db: Database) -> set[str]:
    return {f.code for f in db.read_sync(open_faults)}


async def test_long_outage_then_upload(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    proxy = FaultProxy(int(s3conf.endpoint.rsplit(":", 1)[1]))
    proxy.mode = "down"
    try:
        fids = [store_file(db, ledger, store, os.urandom(2000 + i), name=f"F{i}.MP4".encode())
                for i in range(3)]
        up = make_uploader(dataclasses.replace(s3conf, endpoint=proxy.endpoint, timeout_s=2))
        task = asyncio.create_task(up.run())
        # many failed attempts while "down": backoff grows, nothing is lost, a fault is open
        await asyncio.to_thread(wait_for, lambda: sum(j.attempts for j in db.read_sync(
            queue.jobs)) >= 4, "repeated failed attempts")
        assert FaultCode.UPLOAD_FAILED in _codes(db)
        assert not _uploaded(db)
        proxy.mode = "pass"
        await asyncio.to_thread(wait_for, lambda: len(_uploaded(db)) == 3, "uploads", 120)
        task.cancel()
        assert sorted(e.data["file_id"] for e in _uploaded(db)) == fids
        assert FaultCode.UPLOAD_FAILED not in _codes(db)  # cleared by the first success
        for j in db.read_sync(queue.jobs):
            assert s3.head(j.object_key) is not None
    finally:
        proxy.close()


async def test_hanging_and_failing_store_times_out_backs_off_and_recovers(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    proxy = FaultProxy(int(s3conf.endpoint.rsplit(":", 1)[1]))
    try:
        store_file(db, ledger, store, os.urandom(3000), name=b"H.MP4")
        up = make_uploader(dataclasses.replace(s3conf, endpoint=proxy.endpoint, timeout_s=1))
        for mode in ("hang", "error"):
            proxy.mode = mode
            db.write_sync(lambda c: c.execute("UPDATE upload_queue SET next_try_us = 0"))
            await asyncio.to_thread(wait_for, lambda: ledger_mod.current_us()
                                    >= up.store_retry_us, "the store backoff")
            before = sum(j.attempts for j in db.read_sync(queue.jobs))
            # one pass returns (no wedge): the request timed out or failed, retry is planned
            assert await asyncio.wait_for(up.drain(), 60) == 0
            job = db.read_sync(queue.jobs)[0]
            assert job.attempts == before + 1 and job.state == "pending"
            assert job.last_error and job.next_try_us > 0
            assert ("timed out" in job.last_error) if mode == "hang" else ("503" in job.last_error)
        proxy.mode = "pass"
        await asyncio.to_thread(wait_for, lambda: db.read_sync(
            lambda c: queue.next_due(c, ledger_mod.current_us())) is not None
            and ledger_mod.current_us() >= up.store_retry_us, "retry time")
        assert await up.drain() == 1
    finally:
        proxy.close()


async def test_existing_key_with_other_content_is_never_overwritten(
        db: Database, ledger: Ledger, store: Path, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    fid = store_file(db, ledger, store, b"real footage" * 100, name=b"C.MP4")
    f = stored(db, fid)
    key = object_key(UPLOAD.prefix, f)
    other = b"someone else's bytes"
    s3.put(key, other, hashlib.md5(other).hexdigest(), {})
    up = make_uploader()
    assert await up.drain() == 0
    job = db.read_sync(queue.jobs)[0]
    assert job.state == "conflict"
    assert FaultCode.UPLOAD_CONFLICT in _codes(db)
    info = s3.head(key)
    assert info is not None and info.etag == hashlib.md5(other).hexdigest()
    assert not _uploaded(db)


def test_kill9_during_multipart_never_acknowledges_partial_or_duplicate(
        tmp_path: Path, db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        s3: S3Client) -> None:
    content = os.urandom(26 * 1024 * 1024 + 123)  # 6 parts of 5 MiB
    fid = store_file(db, ledger, store, content, name=b"K.MP4")
    cfg = write_config(tmp_path, s3conf.endpoint, s3conf.bucket, s3conf.access_key,
                       s3conf.secret_key, s3conf.region, part_mib=5, bandwidth_mib_s=20)
    rng = random.Random(os.getpid())
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "agent.upload", "--config", str(cfg),
                                 "--once"], stderr=subprocess.PIPE)
        target = rng.randint(0, 3)  # parts already in the store when the kill comes

        def parts_done() -> int:
            job = db.read_sync(lambda c: queue.get_job(c, fid))
            if job is None or job.upload_id is None:
                return -1
            try:
                return len(s3.list_parts(job.object_key, job.upload_id))
            except Exception:
                return -1

        try:
            wait_for(lambda: proc.poll() is not None or parts_done() >= target, "parts", 120)
        except AssertionError:
            pass
        if proc.poll() is None:
            time.sleep(rng.uniform(0, 0.1))  # a random moment inside or between parts
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        # whatever the kill point: an acknowledged upload is always the whole file
        for e in _uploaded(db):
            info = s3.head(e.data["key"])
            assert info is not None and info.size == len(content)
            assert info.etag == e.data["etag"]
        if _uploaded(db):
            break
    out = subprocess.run([sys.executable, "-m", "agent.upload", "--config", str(cfg),
                          "--once"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert kills >= 1
    entries = _uploaded(db)
    assert len(entries) == 1  # no duplicate acknowledgement
    got = hashlib.sha256()
    s3.stream(entries[0].data["key"], got.update)
    assert got.hexdigest() == hashlib.sha256(content).hexdigest()
    assert s3.list_multipart_uploads("") == []  # orphans of the kills were aborted


async def test_uploads_pause_while_recorders_offload(
        db: Database, ledger: Ledger, store: Path, make_uploader: Callable[..., Uploader]) -> None:
    offloading = [True]
    store_file(db, ledger, store, os.urandom(300_000), name=b"P.MP4")
    up = make_uploader(settings=dataclasses.replace(UPLOAD, while_offloading_mib_s=0.0),
                       busy=lambda: offloading[0])
    task = asyncio.create_task(up.run())
    try:
        await asyncio.to_thread(wait_for, lambda: up.throttle.paused_s >= 1.0, "a pause")
        assert not _uploaded(db)  # offloads come first
        offloading[0] = False
        await asyncio.to_thread(wait_for, lambda: len(_uploaded(db)) == 1, "the upload")
    finally:
        task.cancel()


async def test_close_ends_a_paused_or_hanging_upload_promptly(
        db: Database, ledger: Ledger, store: Path, s3conf: S3Config,
        make_uploader: Callable[..., Uploader]) -> None:
    import threading

    store_file(db, ledger, store, os.urandom(300_000), name=b"Q.MP4")
    up = make_uploader(settings=dataclasses.replace(UPLOAD, while_offloading_mib_s=0.0),
                       busy=lambda: True)
    drain = asyncio.create_task(up.drain())
    await asyncio.to_thread(wait_for, lambda: up.throttle.paused_s > 0, "a pause")
    up.close()
    assert await asyncio.wait_for(drain, 30) == 0
    await asyncio.to_thread(wait_for, lambda: not any(
        t.name.startswith("upload") for t in threading.enumerate()), "the upload thread")
    job = db.read_sync(queue.jobs)[0]  # a stop is no failure: the row is as it was
    assert (job.state, job.attempts, job.last_error) == ("pending", 0, None), job
    assert not db.read_sync(lambda c: open_faults(c))
    # a store that hangs: closing wakes the blocked request
    proxy = FaultProxy(int(s3conf.endpoint.rsplit(":", 1)[1]))
    try:
        proxy.mode = "hang"
        db.write_sync(lambda c: c.execute("UPDATE upload_queue SET next_try_us = 0"))
        up2 = make_uploader(dataclasses.replace(s3conf, endpoint=proxy.endpoint,
                                                timeout_s=600))
        drain = asyncio.create_task(up2.drain())
        await asyncio.to_thread(wait_for, lambda: proxy.requests >= 1, "a request")
        await asyncio.sleep(0.3)
        up2.close()
        assert await asyncio.wait_for(drain, 30) == 0
    finally:
        proxy.close()


async def test_crash_after_the_store_completed_but_before_the_ledger_commit(
        db: Database, ledger: Ledger, store: Path, s3: S3Client,
        make_uploader: Callable[..., Uploader], monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.upload.uploader import Uploader

    content = os.urandom(11 * 1024 * 1024)
    store_file(db, ledger, store, content, name=b"X.MP4")
    real = Uploader._record

    def die(self: Uploader, *a: object, **kw: object) -> None:
        raise SystemExit("power cut between CompleteMultipartUpload and the commit")

    monkeypatch.setattr(Uploader, "_record", die)
    with pytest.raises(SystemExit):
        await make_uploader().drain()
    monkeypatch.setattr(Uploader, "_record", real)
    job = db.read_sync(queue.jobs)[0]
    assert job.state == "pending" and job.upload_id is not None
    assert s3.head(job.object_key) is not None  # stored, not yet acknowledged
    assert await make_uploader().drain() == 1
    entries = _uploaded(db)
    assert len(entries) == 1 and entries[0].data["found_existing"] is True
    assert entries[0].data["etag"].endswith("-3")
    assert s3.list_multipart_uploads("") == []
