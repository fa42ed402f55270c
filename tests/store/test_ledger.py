"""The custody ledger: canonical hash chain, outbox in the same transaction, checkpoints."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from agent.store import outbox
from agent.store.chain import GENESIS_HASH
from agent.store.db import Database, open_readonly
from agent.store.errors import LedgerError
from agent.store.ledger import (
    EntryKind,
    Ledger,
    LedgerEntry,
    checkpoints,
    entries,
    entry_hash,
    get_entry,
    iso_utc,
    last_entry,
)
from agent.store.signing import CheckpointSigner

from .store_helpers import DOCK, T0

GOLDEN_BYTES = (
    '{"bay":"bay-1","data":{"a":"é","b":1.5},"dock_id":"dock-01","kind":"docked",'
    '"officer":"007","prev_hash":"' + "0" * 64 + '","recorder":"SER00001","seq":1,'
    '"session_id":"s1","time_us":1790000000000000,"type":"dock-agent/ledger-entry","v":1}'
).encode("utf-8")
GOLDEN_HASH = "74679dcdc564954c6f117f22d46bf8c6a1773e3ea59ab8c68b3654b1a133b4c3"


def test_entry_hash_golden_vector() -> None:
    h = entry_hash(seq=1, time_us=1_790_000_000_000_000, dock_id="dock-01", kind="docked",
                   recorder="SER00001", officer="007", bay="bay-1", session_id="s1",
                   data={"b": 1.5, "a": "é"}, prev_hash=GENESIS_HASH)
    assert blake3(GOLDEN_BYTES).hexdigest() == GOLDEN_HASH
    assert h == GOLDEN_HASH


def test_entries_chain_from_genesis_and_round_trip(db: Database) -> None:
    led = Ledger(DOCK)  # unsigned: no key entries in the way
    def fn(c: sqlite3.Connection) -> list[LedgerEntry]:
        return [led.append(c, k, recorder="SER1", officer="", data={"n": i, "x": 0.25},
                           now_us=T0 + i)
                for i, k in enumerate(["docked", "identified", "undocked"])]
    made = db.write_sync(fn)
    assert [e.seq for e in made] == [1, 2, 3]
    assert made[0].prev_hash == GENESIS_HASH
    assert made[1].prev_hash == made[0].hash and made[2].prev_hash == made[1].hash
    assert made[0].officer is None  # "" (unassigned) is stored as null
    stored = db.read_sync(lambda c: entries(c))
    assert stored == made
    assert all(e.computed_hash() == e.hash for e in stored)


def test_append_enqueues_the_entry_in_the_same_transaction(db: Database) -> None:
    led = Ledger(DOCK)
    def fn(c: sqlite3.Connection) -> list[LedgerEntry]:
        return [led.append(c, "docked", recorder="SER1", bay="b1", now_us=T0),
                led.append(c, "fault", recorder="SER1", data={"code": "timeout"}, now_us=T0)]
    docked, fault = db.write_sync(fn)
    events = db.read_sync(lambda c: outbox.peek(c, 10))
    assert [(e.stream, e.subject, e.event_id) for e in events] == [
        ("custody", "SER1", docked.hash), ("fault", "SER1", fault.hash)]
    assert events[0].payload == docked.as_event()
    assert events[0].payload["time"] == iso_utc(T0) == "2026-09-21T14:13:20.000000Z"
    assert events[1].payload["kind"] == "fault" and events[1].payload["seq"] == 2


def test_a_failure_after_append_rolls_back_entry_and_event(db: Database) -> None:
    led = Ledger(DOCK)
    def fn(c: sqlite3.Connection) -> None:
        led.append(c, "docked", recorder="SER1")
        raise RuntimeError("crash after append")
    with pytest.raises(RuntimeError):
        db.write_sync(fn)
    assert db.read_sync(lambda c: entries(c)) == []
    assert db.read_sync(lambda c: outbox.peek(c, 10)) == []
    # the next entry is still seq 1 off the genesis hash
    e = db.write_sync(lambda c: led.append(c, "docked"))
    assert (e.seq, e.prev_hash) == (1, GENESIS_HASH)


async def test_append_through_the_async_writer(db: Database) -> None:
    led = Ledger(DOCK)
    e = await db.write(lambda c: led.append(c, "docked", recorder="SER9"))
    assert (await db.read(lambda c: get_entry(c, e.seq))) == e


@pytest.mark.parametrize(("kind", "data"), [
    ("Docked", None), ("bad kind", None), ("", None), ("docked", {"x": math.nan}),
    ("docked", {"x": b"bytes"}), ("docked", {"x": 2**60}),
])
def test_bad_entries_are_refused_and_nothing_is_written(db: Database, kind: str,
                                                        data: dict[str, Any] | None) -> None:
    led = Ledger(DOCK)
    with pytest.raises(LedgerError):
        db.write_sync(lambda c: led.append(c, kind, data=data))
    assert db.read_sync(lambda c: (entries(c), outbox.peek(c, 5))) == ([], [])


def test_non_unicode_fields_are_refused(db: Database) -> None:
    with pytest.raises(LedgerError, match="recorder"):
        db.write_sync(lambda c: Ledger(DOCK).append(c, "docked", recorder="\udcff"))
    with pytest.raises(LedgerError):
        Ledger("")


def test_ledger_rows_cannot_be_updated_or_deleted(db: Database) -> None:
    db.write_sync(lambda c: Ledger(DOCK).append(c, "docked"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.write_sync(lambda c: c.execute("UPDATE ledger SET kind = 'undocked'"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.write_sync(lambda c: c.execute("DELETE FROM ledger"))


def test_signing_key_is_recorded_then_checkpoints_every_n(
        db: Database, ledger: Ledger, signer: CheckpointSigner,
        append_n: Callable[[int], None]) -> None:
    append_n(9)  # seq 1 is the signing_key entry, then 9 entries: seq 2..10
    all_entries = db.read_sync(lambda c: entries(c))
    assert all_entries[0].kind == EntryKind.SIGNING_KEY
    assert all_entries[0].data == {"key_id": signer.key_id, "checkpoint_every": 4}
    assert len(all_entries) == 10
    cps = db.read_sync(checkpoints)
    assert [cp.seq for cp in cps] == [4, 8]
    for cp in cps:
        assert cp.hash == all_entries[cp.seq - 1].hash
        assert CheckpointSigner.verify(signer.public_key, DOCK, cp.seq, cp.hash, cp.time_us,
                                       cp.signature)
        assert not CheckpointSigner.verify(signer.public_key, DOCK, cp.seq + 1, cp.hash,
                                           cp.time_us, cp.signature)
    # clean shutdown signs the tail once
    assert db.write_sync(lambda c: ledger.checkpoint(c)) is not None
    assert db.write_sync(lambda c: ledger.checkpoint(c)) is None
    assert [cp.seq for cp in db.read_sync(checkpoints)] == [4, 8, 10]
    keys = db.read_sync(lambda c: c.execute("SELECT key_id FROM ledger_keys").fetchall())
    assert [k[0] for k in keys] == [signer.key_id]


def test_policy_change_is_recorded_in_the_chain(db: Database, signer: CheckpointSigner) -> None:
    db.write_sync(lambda c: Ledger(DOCK, signer, checkpoint_every=4).append(c, "docked"))
    db.write_sync(lambda c: Ledger(DOCK, signer, checkpoint_every=2).append(c, "undocked"))
    kinds = [e.kind for e in db.read_sync(lambda c: entries(c))]
    assert kinds == ["signing_key", "docked", "checkpoint_policy", "undocked"]
    assert [cp.seq for cp in db.read_sync(checkpoints)] == [4]


def test_entries_filters(db: Database) -> None:
    led = Ledger(DOCK)
    def fn(c: sqlite3.Connection) -> None:
        led.append(c, "docked", recorder="A", officer="1", session_id="s1", now_us=T0)
        led.append(c, "docked", recorder="B", officer="2", session_id="s2", now_us=T0 + 10)
        led.append(c, "undocked", recorder="A", officer="1", session_id="s1", now_us=T0 + 20)
    db.write_sync(fn)
    def q(**kw: Any) -> list[object]:
        return [e.seq for e in db.read_sync(lambda c: entries(c, **kw))]
    assert q(recorder="A") == [1, 3]
    assert q(officer="2") == [2]
    assert q(kind="docked") == [1, 2]
    assert q(session_id="s1", kind="undocked") == [3]
    assert q(since_us=T0 + 10) == [2, 3]
    assert q(until_us=T0 + 10) == [1]
    assert q(limit=2, newest_first=True) == [3, 2]
    assert q(after_seq=2) == [3]
    last = db.read_sync(last_entry)
    assert last is not None and last.seq == 3


def test_entries_read_on_a_readonly_connection(db: Database, db_path: Path) -> None:
    db.write_sync(lambda c: Ledger(DOCK).append(c, "docked", data={"k": [1, "two"]}))
    conn = open_readonly(db_path)
    try:
        (e,) = entries(conn)
        assert e.data == {"k": [1, "two"]}
        with pytest.raises(sqlite3.OperationalError):
            Ledger(DOCK).append(conn, "docked")
    finally:
        conn.close()


def test_reopening_the_database_continues_the_chain(db_path: Path,
                                                    signer: CheckpointSigner) -> None:
    from agent.schemas import ALL_SCHEMAS
    from agent.store.verify import verify_ledger
    led = Ledger(DOCK, signer, checkpoint_every=3)
    first = Database(db_path, ALL_SCHEMAS)
    a = first.write_sync(lambda c: led.append(c, "docked"))
    first.write_sync(led.checkpoint)  # clean shutdown
    first.close()
    second = Database(db_path, ALL_SCHEMAS)  # schemas are idempotent
    try:
        b = second.write_sync(lambda c: led.append(c, "undocked"))
        assert (b.seq, b.prev_hash) == (a.seq + 1, a.hash)
        assert second.read_sync(lambda c: verify_ledger(c, signer.public_key)).ok
    finally:
        second.close()
