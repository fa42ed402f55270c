"""Tampering with the ledger: every case is detected and named."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.schemas import ALL_SCHEMAS
from agent.store.canonical import canonical_text
from agent.store.db import Database, _split_statements, open_readonly
from agent.store.ledger import Ledger, entry_hash
from agent.store.signing import CheckpointSigner
from agent.store.verify import VerifyReport, verify_ledger

from .store_helpers import DOCK, T0, tamper


@pytest.fixture
def ro(db_path: Path) -> Iterator[Callable[[], sqlite3.Connection]]:
    opened: list[sqlite3.Connection] = []
    def open_() -> sqlite3.Connection:
        conn = open_readonly(db_path)
        opened.append(conn)
        return conn
    yield open_
    for c in opened:
        c.close()


@pytest.fixture
def chain(db: Database, append_n: Callable[[int], None]) -> Database:
    append_n(19)  # seq 1 signing_key + 19 entries = seq 1..20; checkpoints 4, 8, 12, 16, 20
    return db


def kinds(report: VerifyReport) -> set[tuple[str, str]]:
    return {(p.kind, p.where) for p in report.problems}


def check(ro: Callable[[], sqlite3.Connection], signer: CheckpointSigner) -> VerifyReport:
    return verify_ledger(ro(), signer.public_key, dock_id=DOCK)


def test_clean_ledger_passes(
        chain: Database, ro: Callable[[], sqlite3.Connection], signer: CheckpointSigner) -> None:
    report = check(ro, signer)
    assert report.ok, report.problems
    assert report.entries_checked == 20
    assert report.exit_code == 0
    assert verify_ledger(ro(), None).ok  # trusting the keys the chain names


def test_empty_ledger_passes(
        db: Database, ro: Callable[[], sqlite3.Connection], signer: CheckpointSigner) -> None:
    assert check(ro, signer).ok


def test_edited_field_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "UPDATE ledger SET officer = '999' WHERE seq = 6")
    report = check(ro, signer)
    assert kinds(report) == {("entry_altered", "seq 6")}
    assert report.exit_code == 1


def test_edited_data_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, ("UPDATE ledger SET data = ? WHERE seq = 3", ('{"i":99}',)))
    assert kinds(check(ro, signer)) == {("entry_altered", "seq 3")}


def test_edit_with_recomputed_hashes_is_caught_by_checkpoints(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    rewrite_from(db_path, 6, lambda seq, officer: "999" if seq == 6 else officer)
    found = kinds(check(ro, signer))
    assert found == {("checkpoint_mismatch", f"seq {s}") for s in (8, 12, 16, 20)}


def test_deleted_middle_entry_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "DELETE FROM ledger WHERE seq = 10")
    assert kinds(check(ro, signer)) == {("entry_missing", "seq 10")}


def test_deleted_checkpointed_entry_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "DELETE FROM ledger WHERE seq BETWEEN 7 AND 8")
    assert kinds(check(ro, signer)) == {("entry_missing", "seq 7-8"),
                                        ("checkpoint_entry_missing", "seq 8")}


def test_inserted_entry_without_rehash_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    # make room at seq 11 by shifting the tail, then insert a plausible entry
    tamper(db_path, "UPDATE ledger SET seq = seq + 1000 WHERE seq > 10",
           "UPDATE ledger SET seq = seq - 999 WHERE seq > 1000",
           ("INSERT INTO ledger VALUES (11, ?, ?, 'docked', 'X', NULL, NULL, NULL, '{}', ?, ?)",
            (T0, DOCK, "0" * 64, "f" * 64)))
    found = kinds(check(ro, signer))
    assert ("entry_altered", "seq 11") in found  # the forged entry's hash is wrong
    assert ("chain_broken", "seq 11") in found  # it does not follow seq 10
    assert ("entry_altered", "seq 12") in found  # the shifted entries no longer hash
    assert ("checkpoint_mismatch", "seq 12") in found


def test_inserted_entry_with_rehashed_tail_is_caught_by_checkpoints(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    insert_rehashed(db_path, at=11)
    found = kinds(check(ro, signer))
    assert found == {("checkpoint_mismatch", f"seq {s}") for s in (12, 16, 20)}


def test_deleted_tail_beyond_a_checkpoint_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "DELETE FROM ledger WHERE seq >= 14")
    found = kinds(check(ro, signer))
    assert ("entries_truncated", "seq 14-16") in found
    assert ("entries_truncated", "seq 14-20") in found


def test_deleted_checkpoint_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "DELETE FROM ledger_checkpoints WHERE seq = 12")
    assert kinds(check(ro, signer)) == {("checkpoint_missing", "seq 12")}


def test_forged_checkpoint_signature_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, ("UPDATE ledger_checkpoints SET signature = ? WHERE seq = 8",
                     ("00" * 64,)))
    assert kinds(check(ro, signer)) == {("checkpoint_bad_signature", "seq 8")}


def test_checkpoint_moved_to_another_entry_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner) -> None:
    tamper(db_path, "UPDATE ledger_checkpoints SET seq = 9 WHERE seq = 8")
    found = kinds(check(ro, signer))
    assert ("checkpoint_bad_signature", "seq 9") in found
    assert ("checkpoint_mismatch", "seq 9") in found
    assert ("checkpoint_missing", "seq 8") in found


def test_swapped_public_key_is_named(
        chain: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner, tmp_path: Path) -> None:
    """An attacker replaces the key and re-signs every checkpoint with their own."""
    mallory = CheckpointSigner.from_file(tmp_path / "mallory.key")
    conn = sqlite3.connect(db_path)
    cps = conn.execute("SELECT seq, hash, time_us FROM ledger_checkpoints").fetchall()
    conn.close()
    statements: list[tuple[str, tuple[Any, ...]] | str] = [
        ("UPDATE ledger_keys SET key_id = ?", (mallory.key_id,))]
    for seq, h, t in cps:
        statements.append(("UPDATE ledger_checkpoints SET key_id = ?, signature = ?"
                           " WHERE seq = ?", (mallory.key_id, mallory.sign(DOCK, seq, h, t), seq)))
    tamper(db_path, *statements)
    found = kinds(check(ro, signer))
    assert {("checkpoint_untrusted_key", f"seq {s}") for s in (4, 8, 12, 16, 20)} <= found
    assert ("key_not_in_chain", f"key {mallory.key_id[:16]}") in found
    assert ("key_not_registered", f"key {signer.key_id[:16]}") in found
    # verifying against the attacker's key still shows the chain names another key
    assert not verify_ledger(ro(), mallory.public_key).ok


def test_whole_chain_rewritten_with_another_key_needs_the_trusted_key(
        db: Database, db_path: Path, ro: Callable[[], sqlite3.Connection],
        signer: CheckpointSigner, tmp_path: Path) -> None:
    mallory = CheckpointSigner.from_file(tmp_path / "mallory.key")
    led = Ledger(DOCK, mallory, checkpoint_every=4)
    db.write_sync(lambda c: [led.append(c, "docked", now_us=T0) for _ in range(5)])
    assert verify_ledger(ro(), None).ok  # self-consistent forgery
    report = verify_ledger(ro(), signer.public_key)
    assert ("key_not_in_chain", f"key {signer.key_id[:16]}") in kinds(report)
    assert ("checkpoint_untrusted_key", "seq 4") in kinds(report)


def test_foreign_dock_id_is_named(
        db: Database, ro: Callable[[], sqlite3.Connection], signer: CheckpointSigner) -> None:
    db.write_sync(lambda c: Ledger("other-dock").append(c, "docked"))
    assert kinds(verify_ledger(ro(), signer.public_key, dock_id=DOCK)) == {
        ("dock_id_mismatch", "seq 1")}


# --- helpers: a capable attacker who recomputes hashes (but has no private key) --------

Row = tuple[Any, ...]


def _rows(db_path: Path) -> list[Row]:
    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
    conn.close()
    return rows


def _rehash(rows: list[Row]) -> list[Row]:
    out: list[Row] = []
    prev = "0" * 64
    for i, r in enumerate(rows, start=1):
        h = entry_hash(seq=i, time_us=r[1], dock_id=r[2], kind=r[3], recorder=r[4],
                       officer=r[5], bay=r[6], session_id=r[7], data=json.loads(r[8]),
                       prev_hash=prev)
        out.append((i, *r[1:9], prev, h))
        prev = h
    return out


def _replace_all(db_path: Path, rows: list[Row]) -> None:
    tamper(db_path, "DELETE FROM ledger",
           *[("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", r) for r in rows])


def rewrite_from(db_path: Path, start: int, officer_of: Callable[[int, str | None], str | None]
                 ) -> None:
    rows = [(r[0], r[1], r[2], r[3], r[4], officer_of(r[0], r[5]), *r[6:]) for r in
            _rows(db_path)]
    assert start >= 1
    _replace_all(db_path, _rehash(rows))


def insert_rehashed(db_path: Path, at: int) -> None:
    rows = _rows(db_path)
    forged = (0, T0, DOCK, "undocked", "SER00001", "007", "bay-1", "s", canonical_text({}),
              "", "")
    _replace_all(db_path, _rehash([*rows[:at - 1], forged, *rows[at - 1:]]))


# --- property: any single edit of any stored column of any entry is detected -----------

_EDITABLE = ["time_us", "dock_id", "kind", "recorder", "officer", "bay", "session_id", "data",
             "prev_hash", "hash"]


def _memory_chain(signer: CheckpointSigner, n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for ddl in ALL_SCHEMAS:
        for statement in _split_statements(ddl):
            conn.execute(statement)
    led = Ledger(DOCK, signer, checkpoint_every=5)
    for i in range(n):
        led.append(conn, "docked", recorder=f"R{i}", officer="o", bay="b", session_id="s",
                   data={"i": i, "f": i / 3}, now_us=T0 + i)
    conn.execute("DROP TRIGGER ledger_no_update")
    return conn


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 12), column=st.sampled_from(_EDITABLE), junk=st.sampled_from(
    ["x", "", "0" * 64, '{"i":1}', "docked", DOCK]))
def test_any_single_edit_is_detected(signer: CheckpointSigner, seq: int, column: str,
                                     junk: str) -> None:
    conn = _memory_chain(signer, 11)  # 12 entries with the signing_key entry
    before = conn.execute(f"SELECT {column} FROM ledger WHERE seq = ?", (seq,)).fetchone()[0]
    value: object = T0 - 1 if column == "time_us" else junk
    if value == before:
        value = f"{junk}!"
    conn.execute(f"UPDATE ledger SET {column} = ? WHERE seq = ?", (value, seq))
    report = verify_ledger(conn, signer.public_key, dock_id=DOCK)
    assert not report.ok
    assert any(p.where == f"seq {seq}" or p.where == f"seq {seq + 1}" for p in report.problems)
    conn.close()


def test_verify_beside_a_writing_agent_sees_one_consistent_state(
        db: Database, signer: CheckpointSigner, ro: Callable[[], sqlite3.Connection]) -> None:
    import threading
    led = Ledger(DOCK, signer, checkpoint_every=2)
    done = threading.Event()

    def agent() -> None:
        for i in range(100):
            db.write_sync(lambda c: led.append(c, "docked", data={"i": i}).seq)  # runs at once
        done.set()

    t = threading.Thread(target=agent)
    t.start()
    conn = ro()
    reports = []
    while not done.is_set():
        reports.append(verify_ledger(conn, signer.public_key))
    t.join()
    reports.append(verify_ledger(conn, signer.public_key))
    assert reports[-1].entries_checked == 101
    assert all(r.ok for r in reports), next(r.problems for r in reports if not r.ok)
