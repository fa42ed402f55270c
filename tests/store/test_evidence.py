"""The evidence index: commit with ledger + outbox, never copied twice, holds, queries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.store import outbox
from agent.store.db import Database
from agent.store.errors import EvidenceError
from agent.store.evidence import (
    StoredFileRecord,
    clear_hold,
    commit_file,
    find_stored,
    mark_purged,
    mark_verified,
    mark_wiped,
    query,
    set_hold,
)
from agent.store.ledger import Ledger, entries, get_entry

from .store_helpers import T0, store_file, stored

HASH = "ab" * 32


def record(**kw: object) -> StoredFileRecord:
    base = StoredFileRecord(
        recorder_serial="SER1", session_id="s1", bay="bay-2", source_name=b"DCIM/\xffA.MP4",
        stored_relpath="U/SER1/007/2026-11-20/A.MP4", size=10, blake3_hex=HASH,
        rec_start_us=T0, rec_end_us=None, offload_start_us=T0 + 1, offload_end_us=T0 + 2,
        unit_no="U", officer_no="007", officer_name="Li", late=True, late_by_s=3600.5,
        deadline_us=T0 - 1)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_commit_writes_row_entry_and_event_together(db: Database, ledger: Ledger) -> None:
    entry = db.write_sync(lambda c: commit_file(c, ledger, record()))
    f = stored(db, entry.data["file_id"])
    assert f is not None
    assert f.source_name == b"DCIM/\xffA.MP4" and f.source_display == "DCIM/\\xffA.MP4"
    assert (f.ledger_seq, f.verify_state, f.wiped, f.late, f.late_by_s) == \
        (entry.seq, "unverified", False, True, 3600.5)
    assert f.rec_day == dt.date(2026, 11, 20)  # from the layout's date component
    assert entry.kind == "offloaded" and entry.recorder == "SER1" and entry.officer == "007"
    assert entry.data["blake3"] == HASH and entry.data["source_name_hex"] == f.source_name.hex()
    assert entry.data["size"] == 10 and entry.data["late"] is True
    events = db.read_sync(lambda c: outbox.peek(c, 10))
    assert events[-1].payload == entry.as_event() and events[-1].stream == "custody"


def test_failed_commit_leaves_nothing(db: Database, ledger: Ledger) -> None:
    def fn(c: sqlite3.Connection) -> None:
        commit_file(c, ledger, record())
        raise OSError("directory fsync failed")
    with pytest.raises(OSError):
        db.write_sync(fn)
    assert db.read_sync(lambda c: (query(c), entries(c), outbox.peek(c, 5))) == ([], [], [])


@pytest.mark.parametrize("bad", [
    {"stored_relpath": "../escape.MP4"}, {"stored_relpath": "/abs/A.MP4"},
    {"blake3_hex": "AB" * 32}, {"blake3_hex": "ab"}, {"size": -1}, {"source_name": b""},
    {"source_name": "str-name"}, {"recorder_serial": ""}, {"session_id": ""},
])
def test_bad_records_are_refused(db: Database, ledger: Ledger, bad: dict[str, Any]) -> None:
    with pytest.raises(EvidenceError):
        db.write_sync(lambda c: commit_file(c, ledger, record(**bad)))
    assert db.read_sync(query) == []


def test_same_stored_path_twice_is_refused(db: Database, ledger: Ledger) -> None:
    db.write_sync(lambda c: commit_file(c, ledger, record()))
    with pytest.raises(EvidenceError, match="already indexed"):
        db.write_sync(lambda c: commit_file(c, ledger, record(source_name=b"B.MP4")))


def test_find_stored_never_copies_twice(db: Database, ledger: Ledger) -> None:
    e = db.write_sync(lambda c: commit_file(c, ledger, record()))
    fid = e.data["file_id"]
    hit = db.read_sync(lambda c: find_stored(c, "SER1", b"DCIM/\xffA.MP4", 10))
    assert hit is not None and hit.id == fid
    assert db.read_sync(lambda c: find_stored(c, "SER1", b"DCIM/\xffA.MP4", 11)) is None
    assert db.read_sync(lambda c: find_stored(c, "SER2", b"DCIM/\xffA.MP4", 10)) is None
    assert db.read_sync(lambda c: find_stored(c, "SER1", b"DCIM/A.MP4", 10)) is None
    assert db.read_sync(lambda c: find_stored(c, "SER1", b"DCIM/\xffA.MP4", 10,
                                              rec_start_us=T0 + 5)) is None
    # after the dock wiped it, the same name and size is a new recording
    db.write_sync(lambda c: mark_wiped(c, ledger, fid))
    assert db.read_sync(lambda c: find_stored(c, "SER1", b"DCIM/\xffA.MP4", 10)) is None


def test_verify_wipe_hold_purge_are_recorded(db: Database, ledger: Ledger) -> None:
    fid = db.write_sync(lambda c: commit_file(c, ledger, record())).data["file_id"]
    v = db.write_sync(lambda c: mark_verified(c, ledger, fid, False, "hash differs"))
    f = stored(db, fid)
    assert (f.verify_state, f.verify_detail, v.kind, v.data["ok"]) == \
        ("failed", "hash differs", "verified", False)
    db.write_sync(lambda c: mark_verified(c, ledger, fid, True, "re-read ok"))
    w = db.write_sync(lambda c: mark_wiped(c, ledger, fid))
    assert w.kind == "wiped" and w.data["verify_state"] == "ok"
    with pytest.raises(EvidenceError, match="already"):
        db.write_sync(lambda c: mark_wiped(c, ledger, fid))
    hold = db.write_sync(lambda c: set_hold(c, ledger, fid, "case 2026-17", by="sup-1"))
    assert stored(db, fid).on_hold
    with pytest.raises(EvidenceError, match="under hold"):
        db.write_sync(lambda c: mark_purged(c, ledger, fid, "retention"))
    cleared = db.write_sync(lambda c: clear_hold(c, ledger, hold.id, "case closed", by="sup-1"))
    assert not cleared.active
    with pytest.raises(EvidenceError):
        db.write_sync(lambda c: clear_hold(c, ledger, hold.id, "again"))
    db.write_sync(lambda c: mark_purged(c, ledger, fid, "retention"))
    f = stored(db, fid)
    assert f.purged_us is not None and len(f.holds) == 1 and not f.on_hold
    kinds = [e.kind for e in db.read_sync(lambda c: entries(c, recorder="SER1"))]
    assert kinds == ["offloaded", "verified", "verified", "wiped", "hold_set", "hold_cleared",
                     "purged"]
    with pytest.raises(EvidenceError, match="no stored file"):
        db.write_sync(lambda c: mark_verified(c, ledger, 999, True, ""))


def test_records_are_immutable(db: Database, ledger: Ledger) -> None:
    fid = db.write_sync(lambda c: commit_file(c, ledger, record())).data["file_id"]
    for sql in ("UPDATE evidence_files SET blake3 = 'x'", "UPDATE evidence_files SET size = 1",
                "UPDATE evidence_files SET ledger_seq = 99", "DELETE FROM evidence_files"):
        with pytest.raises(sqlite3.IntegrityError):
            db.write_sync(lambda c: c.execute(sql).rowcount)  # runs at once: sql is current
    assert stored(db, fid).size == 10


def test_query_filters(db: Database, ledger: Ledger, store: Path) -> None:
    a = store_file(db, ledger, store, b"a", unit="U1", serial="S1", officer="o1",
                   day=dt.date(2026, 11, 1), name=b"A.MP4")
    b = store_file(db, ledger, store, b"b", unit="U1", serial="S2", officer="o2",
                   day=dt.date(2026, 11, 5), name=b"B.MP4", session="sess-2")
    c = store_file(db, ledger, store, b"c", unit="U2", serial="S1", officer="o1",
                   day=dt.date(2026, 11, 9), name=b"C.MP4")
    def ids(**kw: Any) -> list[object]:
        return [f.id for f in db.read_sync(lambda conn: query(conn, **kw))]
    assert ids() == [a, b, c]
    assert ids(unit="U1") == [a, b]
    assert ids(device="S1") == [a, c]
    assert ids(officer="o2") == [b]
    assert ids(date_from=dt.date(2026, 11, 5)) == [b, c]
    assert ids(date_to=dt.date(2026, 11, 5)) == [a, b]
    assert ids(date_from=dt.date(2026, 11, 2), date_to=dt.date(2026, 11, 8)) == [b]
    from blake3 import blake3
    assert ids(blake3_hex=blake3(b"c").hexdigest()) == [c]
    assert ids(unit="U1", device="S1") == [a]
    assert ids(session_id="sess-2") == [b]
    assert ids(unit="nope") == []
    seq = stored(db, a).ledger_seq
    assert seq is not None
    entry = db.read_sync(lambda conn: get_entry(conn, seq))
    assert entry is not None and entry.kind == "offloaded"
