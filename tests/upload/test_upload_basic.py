"""Upload to a real Ceph RGW: single PUT, multipart, metadata, proof in the ledger."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from agent.store import ledger as ledger_mod
from agent.store.db import Database
from agent.store.faults import open_faults
from agent.store.ledger import Ledger
from agent.upload import queue
from agent.upload.objects import decode_meta
from agent.upload.s3client import S3Client
from agent.upload.uploader import Uploader
from hw_sim import rgw as rgw_mod

from .upload_helpers import store_file, stored


async def test_small_and_multipart_files_upload_with_metadata_and_proof(
        db: Database, ledger: Ledger, store: Path, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    small = os.urandom(1000)
    big = os.urandom(11 * 1024 * 1024 + 7)  # 3 parts of 5 MiB
    a = store_file(db, ledger, store, small, name=b"A.MP4")
    b = store_file(db, ledger, store, big, name=b"B.MP4")
    up = make_uploader()
    assert await up.drain() == 2
    jobs = {j.file_id: j for j in db.read_sync(queue.jobs)}
    assert {j.state for j in jobs.values()} == {"uploaded"}
    info = s3.head(jobs[a].object_key)
    assert info is not None and info.size == 1000
    assert info.etag == hashlib.md5(small).hexdigest()
    assert decode_meta(info.metadata["officer"]) == "007"
    info_b = s3.head(jobs[b].object_key)
    assert info_b is not None and info_b.etag.endswith("-3") and info_b.size == len(big)
    got = hashlib.sha256()
    s3.stream(jobs[b].object_key, got.update)
    assert got.hexdigest() == hashlib.sha256(big).hexdigest()
    entries = db.read_sync(lambda c: ledger_mod.entries(c, kind="uploaded"))
    assert [e.data["file_id"] for e in entries] == [a, b]
    assert entries[1].data["etag"] == info_b.etag and entries[1].data["parts"] == 3
    assert not db.read_sync(open_faults)
    # nothing left half-done on the server
    assert s3.list_multipart_uploads("") == []


async def test_tls_with_a_custom_ca(
        db: Database, ledger: Ledger, store: Path, rgw: rgw_mod.Rgw, bucket: str,
        make_uploader: Callable[..., Uploader]) -> None:
    import dataclasses

    import pytest

    from agent.upload.errors import S3Unavailable
    from agent.upload.s3client import S3Config

    conf = S3Config(rgw.tls_endpoint, bucket, rgw.access_key, rgw.secret_key, rgw.region,
                    ca_file=rgw.ca_file, timeout_s=10)
    with pytest.raises(S3Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        S3Client(dataclasses.replace(conf, ca_file=None)).head("x")
    store_file(db, ledger, store, os.urandom(7000), name=b"TLS.MP4")
    assert await make_uploader(conf).drain() == 1
    entry = db.read_sync(lambda c: ledger_mod.entries(c, kind="uploaded"))[0]
    assert entry.data["endpoint"].startswith("https://")
    assert S3Client(conf).head(entry.data["key"]) is not None


async def test_a_stored_file_that_no_longer_matches_its_ledger_hash_is_never_uploaded(
        db: Database, ledger: Ledger, store: Path, s3: S3Client,
        make_uploader: Callable[..., Uploader]) -> None:
    from agent.store.faults import FaultCode

    small = store_file(db, ledger, store, b"s" * 4000, name=b"S.MP4")
    big = store_file(db, ledger, store, os.urandom(11 * 1024 * 1024), name=b"BIG.MP4")
    for fid, at in ((small, 10), (big, 11 * 1024 * 1024 - 5)):  # the big one: in its last part
        path = store / stored(db, fid).stored_relpath
        path.chmod(0o640)
        data = bytearray(path.read_bytes())
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
    assert await make_uploader().drain() == 0
    jobs = db.read_sync(queue.jobs)
    assert {j.state for j in jobs} == {"pending"}
    assert all("no longer matches" in (j.last_error or "") for j in jobs)
    for j in jobs:
        assert s3.head(j.object_key) is None
    assert s3.list_multipart_uploads("") == []  # the big one's sent parts were aborted
    faults = db.read_sync(open_faults)
    assert {f.code for f in faults} == {FaultCode.STORE_INTEGRITY}
    assert not db.read_sync(lambda c: ledger_mod.entries(c, kind="uploaded"))
