"""The fixity audit: the store on disk against the index, the index against the ledger."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store.db import Database, open_readonly
from agent.store.evidence import mark_purged
from agent.store.hashing import hash_file
from agent.store.layout import PARTIAL_PREFIX
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner
from agent.store.verify import VerifyReport, verify_all, verify_store

from .store_helpers import store_file, stored, tamper

CONTENT = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes


@pytest.fixture
def filled(db: Database, ledger: Ledger, store: Path) -> dict[str, str]:
    """Three stored files; returns name -> stored relpath."""
    out: dict[str, str] = {}
    for i, name in enumerate([b"A.MP4", b"B.MP4", b"\xffodd.MP4"]):
        fid = store_file(db, ledger, store, CONTENT + bytes([i]), name=name)
        out[name.decode("utf-8", "replace")] = stored(db, fid).stored_relpath
    return out


@pytest.fixture
def ro(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_readonly(db_path)
    yield conn
    conn.close()


def named(report: VerifyReport) -> set[tuple[str, str]]:
    return {(p.kind, p.where) for p in report.problems}


def test_clean_store_passes_deep(filled: dict[str, str], store: Path, ro: sqlite3.Connection,
                                 signer: CheckpointSigner) -> None:
    report = verify_store(ro, store, deep=True)
    assert report.ok, report.problems
    assert report.files_checked == 3
    assert verify_all(ro, store, public_key=signer.public_key, deep=True).ok


def test_changed_byte_is_found_only_by_deep(filled: dict[str, str], store: Path,
                                            ro: sqlite3.Connection) -> None:
    rel = filled["B.MP4"]
    path = store / rel
    path.chmod(0o640)
    data = bytearray(path.read_bytes())
    data[500_000] ^= 0x01
    path.write_bytes(bytes(data))
    path.chmod(0o440)
    assert verify_store(ro, store, deep=False).ok  # same size: only a re-hash can tell
    assert named(verify_store(ro, store, deep=True)) == {("hash_mismatch", rel)}


def test_truncated_file_is_named(filled: dict[str, str], store: Path,
                                 ro: sqlite3.Connection) -> None:
    rel = filled["A.MP4"]
    os.truncate(store / rel, 1000)
    assert named(verify_store(ro, store, deep=True)) == {("size_mismatch", rel)}


def test_missing_file_is_named(filled: dict[str, str], store: Path,
                               ro: sqlite3.Connection) -> None:
    rel = filled["\ufffdodd.MP4"]
    (store / rel).unlink()
    report = verify_store(ro, store, deep=False)
    assert named(report) == {("missing_file", rel)}
    assert report.exit_code == 1


def test_extra_file_is_named_but_partials_are_ignored(filled: dict[str, str], store: Path,
                                                      ro: sqlite3.Connection) -> None:
    day_dir = (store / filled["A.MP4"]).parent
    (day_dir / "planted.MP4").write_bytes(b"x")
    (day_dir / f"{PARTIAL_PREFIX}abc-C.MP4").write_bytes(b"in progress")
    (store / "U01" / "new-dir").mkdir()
    (store / "U01" / "new-dir" / "deep.bin").write_bytes(b"y")
    found = named(verify_store(ro, store, deep=True))
    assert found == {("extra_file", str((day_dir / "planted.MP4").relative_to(store))),
                     ("extra_file", "U01/new-dir/deep.bin")}


def test_symlink_and_writable_file_are_named(filled: dict[str, str], store: Path,
                                             ro: sqlite3.Connection) -> None:
    rel = filled["A.MP4"]
    (store / rel).chmod(0o640)
    (store / "link").symlink_to("/etc/passwd")
    assert named(verify_store(ro, store, deep=False)) == {("file_writable", rel),
                                                          ("unexpected_entry", "link")}


def test_missing_store_is_named(db: Database, tmp_path: Path, ro: sqlite3.Connection) -> None:
    assert named(verify_store(ro, tmp_path / "nope", deep=False)) == {
        ("store_missing", str(tmp_path / "nope"))}


def test_edited_index_row_is_named(filled: dict[str, str], store: Path, db_path: Path,
                                   ro: sqlite3.Connection) -> None:
    rel = filled["A.MP4"]
    # make a changed file look consistent by editing its index row to match
    (store / rel).chmod(0o640)
    (store / rel).write_bytes(b"forged")
    (store / rel).chmod(0o440)
    from blake3 import blake3
    tamper(db_path, ("UPDATE evidence_files SET size = 6, blake3 = ? WHERE stored_relpath = ?",
                     (blake3(b"forged").hexdigest(), rel)))
    assert named(verify_store(ro, store, deep=True)) == {("index_mismatch", rel)}


def test_deleted_index_row_is_named(filled: dict[str, str], store: Path, db_path: Path,
                                    ro: sqlite3.Connection) -> None:
    rel = filled["B.MP4"]
    tamper(db_path, ("DELETE FROM evidence_files WHERE stored_relpath = ?", (rel,)))
    found = named(verify_store(ro, store, deep=False))
    assert ("extra_file", rel) in found
    assert any(kind == "index_missing_row" for kind, _ in found)


def test_purged_file_is_not_expected_but_must_be_gone(db: Database, ledger: Ledger,
                                                      filled: dict[str, str], store: Path,
                                                      ro: sqlite3.Connection) -> None:
    rel = filled["A.MP4"]
    fid = db.read_sync(lambda c: c.execute("SELECT id FROM evidence_files WHERE"
                                           " stored_relpath = ?", (rel,)).fetchone()[0])
    db.write_sync(lambda c: mark_purged(c, ledger, fid, "retention, acknowledged centrally"))
    assert named(verify_store(ro, store, deep=False)) == {("extra_file", rel)}
    (store / rel).unlink()
    assert verify_store(ro, store, deep=True).ok


def test_hash_file_streams_large_reads(tmp_path: Path) -> None:
    from blake3 import blake3
    p = tmp_path / "f"
    p.write_bytes(CONTENT)
    assert hash_file(p, read_size=1000) == (len(CONTENT), blake3(CONTENT).hexdigest())
    assert hash_file(p) == (len(CONTENT), blake3(CONTENT).hexdigest())


def test_undecodable_extra_name_is_reported_printably(filled: dict[str, str], store: Path,
                                                      ro: sqlite3.Connection) -> None:
    os.close(os.open(os.fsencode(store) + b"/bad\xffname", os.O_CREAT | os.O_WRONLY, 0o440))
    assert named(verify_store(ro, store, deep=False)) == {("extra_file", "bad\\xffname")}


def test_file_committed_during_the_audit_is_not_called_extra(
        db: Database, ledger: Ledger, filled: dict[str, str], store: Path,
        ro: sqlite3.Connection) -> None:
    import datetime as dt

    from blake3 import blake3

    from agent.store.evidence import StoredFileRecord, commit_file, layout_relpath

    from .store_helpers import T0
    rel = layout_relpath("U01", "SER00001", "007", dt.date(2026, 11, 21), "LATE.MP4")
    (store / rel).parent.mkdir(parents=True, exist_ok=True)
    (store / rel).write_bytes(b"late")
    (store / rel).chmod(0o440)
    rec = StoredFileRecord("SER00001", "s9", "bay-1", b"LATE.MP4", rel, 4,
                           blake3(b"late").hexdigest(), T0, None, T0, T0, "U01", "007", "Li",
                           False, 0.0, None)
    committed: list[int] = []

    def commit_now(_: str) -> None:  # the offloader commits while the audit runs
        if not committed:
            committed.append(db.write_sync(lambda c: commit_file(c, ledger, rec)).seq)

    assert named(verify_store(ro, store, deep=True)) == {("extra_file", rel)}  # control
    assert verify_store(ro, store, deep=True, progress=commit_now).ok
    assert committed


async def test_run_audit_off_the_loop(filled: dict[str, str], store: Path, db_path: Path,
                                      signer: CheckpointSigner) -> None:
    import asyncio

    from agent.store.verify import run_audit
    report = await asyncio.to_thread(run_audit, db_path, store,
                                     public_key=signer.public_key, deep=True)
    assert report.ok and report.files_checked == 3 and report.entries_checked == 4
    (store / filled["A.MP4"]).unlink()
    report = await asyncio.to_thread(run_audit, db_path, store, public_key=None, deep=False)
    assert [p.kind for p in report.problems] == ["missing_file"]
    assert report.as_dict()["ok"] is False
