"""Pure parts of the upload package: SigV4, keys and metadata, ETags, throttle,
credentials file checks, config checks, the retention plan."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest

from agent.config import ConfigInvalid, parse_settings
from agent.hold_scope import in_scope
from agent.store.evidence import StoredFile
from agent.upload import objects, queue, sigv4
from agent.upload.credentials import load_credentials
from agent.upload.errors import CredentialsError
from agent.upload.retention import DAY_US, Scope, plan
from agent.upload.throttle import Throttle

from .upload_helpers import RETENTION


def test_sigv4_matches_the_published_aws_example() -> None:
    # "GET Object" example of the AWS S3 SigV4 documentation (header-based auth).
    out = sigv4.sign(
        method="GET", host="examplebucket.s3.amazonaws.com", path="/test.txt", query={},
        headers={"range": "bytes=0-9"}, access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region="us-east-1",
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC), payload_hash=sigv4.EMPTY_SHA256)
    assert out["authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def _file(**kw: object) -> StoredFile:
    base = dict(id=7, recorder_serial="SER1", session_id="s", bay=None, source_name=b"a",
                source_display="A.MP4", stored_relpath="U1/SER1/007/2026-11-20/A.MP4",
                size=10, blake3_hex="ab" * 32, rec_start_us=0, rec_end_us=None,
                rec_day=dt.date(2026, 11, 20), offload_start_us=0, offload_end_us=0,
                unit_no="U1", officer_no="007", officer_name="Li Wéi\r\n", late=False,
                late_by_s=0.0, deadline_us=None, ledger_seq=1, verify_state="ok",
                verified_us=None, verify_detail=None, wiped=False, wiped_us=None,
                purged_us=None)
    base.update(kw)
    return StoredFile(**base)  # type: ignore[arg-type]


def test_key_is_layout_plus_content_hash_and_metadata_is_header_safe() -> None:
    f = _file(source_display="ü\r\nx.MP4")
    assert objects.object_key("/unit-1/", f) == f"unit-1/U1/SER1/007/2026-11-20/{'ab' * 32}/A.MP4"
    meta = objects.metadata(f, "dock-1", "c" * 64)
    assert all(v.isascii() and "\r" not in v and "\n" not in v for v in meta.values())
    assert objects.decode_meta(meta["x-amz-meta-source-name"]) == "ü\r\nx.MP4"


def test_multipart_etag_is_md5_of_part_md5s() -> None:
    parts = [b"a" * 10, b"b" * 3]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    joined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert objects.expected_etag(md5s, True) == f"{joined}-2"
    assert objects.expected_etag(md5s[:1], False) == md5s[0]


def test_lock_retention_runs_from_the_recording_date_and_is_never_in_the_past() -> None:
    f = _file(rec_start_us=1_700_000_000_000_000)
    h = objects.lock_headers(f, "COMPLIANCE", 365, now_us=1_700_000_000_000_000)
    assert h == {"x-amz-object-lock-mode": "COMPLIANCE",
                 "x-amz-object-lock-retain-until-date": "2024-11-13T22:13:20Z"}
    late = objects.lock_headers(f, "GOVERNANCE", 1, now_us=1_800_000_000_000_000)
    assert late["x-amz-object-lock-retain-until-date"].startswith("2027-01-1")


def test_throttle_paces_bytes_and_pauses_at_zero() -> None:
    now = [0.0]
    slept: list[float] = []
    rate: list[float | None] = [1000.0]

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s
        if len(slept) > 3:
            rate[0] = None  # offloads finished: unlimited

    t = Throttle(lambda: rate[0], clock=lambda: now[0], sleep=sleep)
    t(500)
    t(500)
    assert slept == [0.5]
    rate[0] = 0.0
    t(1)
    assert t.paused_s > 0 and rate[0] is None


def test_credentials_file_must_be_private_and_complete(tmp_path: Path) -> None:
    p = tmp_path / "creds"
    p.write_text("access_key = AK\nsecret_key = SK\n")
    p.chmod(0o644)
    with pytest.raises(CredentialsError, match="group or others"):
        load_credentials(p)
    p.chmod(0o600)
    c = load_credentials(p)
    assert (c.access_key, c.secret_key) == ("AK", "SK") and "SK" not in repr(c)
    p.write_text("access_key = AK\n")
    with pytest.raises(CredentialsError, match="needs access_key and secret_key"):
        load_credentials(p)
    link = tmp_path / "link"
    link.symlink_to(p)
    with pytest.raises(CredentialsError):
        load_credentials(link)
    with pytest.raises(CredentialsError, match="No such file"):
        load_credentials(tmp_path / "absent")


def test_config_checks_upload_settings(tmp_path: Path) -> None:
    creds = tmp_path / "c"
    creds.write_text("access_key = a\nsecret_key = b\n")
    creds.chmod(0o640)
    text = f"""[dock]
id = "d1"
[devices]
allow_storage_only = true
allow = [{{vid = "1234", pid = "5678", storage_only = true}}]
[mqtt]
enabled = false
[upload]
enabled = true
endpoint = "ftp://x"
bucket = "A"
credentials_file = "{creds}"
"""
    with pytest.raises(ConfigInvalid) as exc:
        parse_settings(text)
    msg = str(exc.value)
    assert "upload.endpoint" in msg and "upload.bucket" in msg and "group or others" in msg
    os.chmod(creds, 0o600)
    ok = text.replace("ftp://x", "https://s3.example:8443").replace('"A"', '"evidence"')
    s = parse_settings(ok)
    assert s.upload.enabled and s.upload.bucket == "evidence"


def _job(fid: int, state: str = "uploaded", ack: bool = False) -> queue.Job:
    return queue.Job(fid, f"k{fid}", state, 0, 0, 0, None, None, None, "e", None, 1, 1, 1, ack)


def test_plan_never_selects_unacknowledged_held_scoped_or_young_files() -> None:
    now = 100 * DAY_US
    old = dict(offload_end_us=now - 40 * DAY_US, rec_start_us=now - 41 * DAY_US)
    files = [
        (_file(id=1, **old), _job(1)),
        (_file(id=2, **old), _job(2, "pending")),
        (_file(id=3, **old), _job(3, "conflict")),
        (_file(id=4, recorder_serial="HELD", **old), _job(4)),
        (_file(id=5, offload_end_us=now - DAY_US, rec_start_us=now - 50 * DAY_US), _job(5)),
    ]
    scopes = [Scope("h", "r", {"serial": "HELD"})]
    got = plan(files, scopes, in_scope, RETENTION, now_us=now, free_bytes=0, total_bytes=100)
    assert [p.file.id for p in got] == [1]
    strict = dataclasses.replace(RETENTION, require_central_ack=True)
    assert plan(files, scopes, in_scope, strict, now_us=now, free_bytes=0,
                total_bytes=100) == []
    files[0] = (files[0][0], _job(1, ack=True))
    assert [p.file.id for p in plan(files, scopes, in_scope, strict, now_us=now,
                                    free_bytes=0, total_bytes=100)] == [1]


def test_purge_needs_upload(tmp_path: Path) -> None:
    text = """[dock]
id = "d1"
[devices]
allow_storage_only = true
allow = [{vid = "1234", pid = "5678", storage_only = true}]
[mqtt]
enabled = false
[retention]
purge = true
"""
    with pytest.raises(ConfigInvalid, match=r"retention\.purge"):
        parse_settings(text)


def test_health_reports_the_upload_backlog(tmp_path: Path) -> None:
    from agent.health.monitor import _upload_health
    from agent.schemas import ALL_SCHEMAS
    from agent.store.db import Database
    from agent.store.ledger import Ledger

    from .upload_helpers import store_file

    db = Database(tmp_path / "s.sqlite3", ALL_SCHEMAS)
    try:
        ledger = Ledger("d1")
        (tmp_path / "ev").mkdir()
        store_file(db, ledger, tmp_path / "ev", b"x" * 10, name=b"A.MP4")
        store_file(db, ledger, tmp_path / "ev", b"y" * 20, name=b"B.MP4")
        db.write_sync(lambda c: queue.enqueue_new(c, lambda f: f.blake3_hex, 1))
        db.write_sync(lambda c: queue.mark_failed(c, 2, "HEAD: timed out", 5))
        h = db.read_sync(_upload_health)
        assert h["backlog_files"] == 2 and h["backlog_bytes"] == 30
        assert h["last_error"] == "HEAD: timed out" and h["conflicts"] == 0
    finally:
        db.close()


def test_clusters_of_killed_test_processes_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hw_sim import rgw

    orphan = tmp_path / "pytest-1" / "rgw-999999999"  # no such process
    alive = tmp_path / "pytest-2" / "popen-gw0" / f"rgw-{os.getpid()}"
    procs = {}
    for d in (orphan, alive):
        d.mkdir(parents=True)
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              str(d / "ceph.conf")])
        (d / "pids").write_text(f"mon.a {p.pid}\n")
        procs[d] = p
    try:
        assert rgw.sweep_orphans(tmp_path) == [orphan]
        assert procs[orphan].wait(30) != 0 and not orphan.exists()
        assert procs[alive].poll() is None  # its owner (this process) is alive
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
