"""The fault register: recorded with the ledger, de-duplicated while open, history kept."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import pytest

from agent.store import outbox
from agent.store.db import Database
from agent.store.faults import (
    Fault,
    FaultCode,
    clear_fault,
    clear_faults,
    list_faults,
    open_faults,
    raise_fault,
)
from agent.store.ledger import Ledger, entries

from .store_helpers import T0


def test_codes_are_stable_snake_case() -> None:
    assert FaultCode.DOCK_CLOCK_UNSYNCHRONISED.value == "dock_clock_unsynchronised"
    assert all(c.value == c.name.lower() for c in FaultCode)


def test_raise_records_row_ledger_entry_and_fault_event(db: Database, ledger: Ledger) -> None:
    f = db.write_sync(lambda c: raise_fault(
        c, ledger, FaultCode.BATTERY_FAILED, "battery does not charge", recorder="SER1",
        officer="007", bay="bay-3", session_id="s1", detail={"voltage_v": 3.1}, now_us=T0))
    assert (f.code, f.severity, f.recorder, f.officer, f.bay, f.open) == \
        ("battery_failed", "error", "SER1", "007", "bay-3", True)
    assert f.detail == {"voltage_v": 3.1} and f.opened_us == T0
    e = db.read_sync(lambda c: entries(c, kind="fault"))[0]
    assert e.seq == f.ledger_seq
    assert e.data == {"fault_id": f.id, "code": "battery_failed", "severity": "error",
                      "reason": "battery does not charge", "detail": {"voltage_v": 3.1},
                      "repeated": False}
    ev = [x for x in db.read_sync(lambda c: outbox.peek(c, 20)) if x.stream == "fault"]
    assert len(ev) == 1 and ev[0].payload == e.as_event() and ev[0].subject == "SER1"


def test_failure_after_raise_rolls_everything_back(db: Database, ledger: Ledger) -> None:
    def fn(c: sqlite3.Connection) -> None:
        raise_fault(c, ledger, FaultCode.TIMEOUT, "no reply", recorder="SER1")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        db.write_sync(fn)
    assert db.read_sync(lambda c: (list_faults(c), entries(c), outbox.peek(c, 5))) == \
        ([], [], [])


def test_open_fault_is_not_duplicated(db: Database, ledger: Ledger) -> None:
    def raise_(sess: str, t: int) -> Fault:
        return db.write_sync(lambda c: raise_fault(
            c, ledger, "clock_not_set", "clock refused", recorder="SER1", session_id=sess,
            now_us=t))
    first = raise_("s1", T0)
    again = raise_("s1", T0 + 5)  # same docking: counter only
    assert again.id == first.id and again.repeat_count == 1 and again.last_seen_us == T0 + 5
    assert len(db.read_sync(lambda c: entries(c, kind="fault"))) == 1
    later = raise_("s2", T0 + 9)  # a new docking: a new ledger occurrence, same register row
    assert later.id == first.id and later.repeat_count == 2
    fault_entries = db.read_sync(lambda c: entries(c, kind="fault"))
    assert [e.data["repeated"] for e in fault_entries] == [False, True]
    assert fault_entries[1].data["fault_id"] == first.id
    assert len(db.read_sync(list_faults)) == 1
    # another recorder, or another code, is a separate fault
    other = db.write_sync(lambda c: raise_fault(c, ledger, "clock_not_set", "x", recorder="SER2"))
    code = db.write_sync(lambda c: raise_fault(c, ledger, "timeout", "x", recorder="SER1"))
    assert len({first.id, other.id, code.id}) == 3


def test_clear_keeps_history_and_a_new_fault_reopens(db: Database, ledger: Ledger) -> None:
    f = db.write_sync(lambda c: raise_fault(c, ledger, "mount_failed", "bad fs", recorder="R"))
    done = db.write_sync(lambda c: clear_fault(c, ledger, f.id, "remounted", now_us=T0))
    assert done is not None and not done.open
    assert (done.cleared_us, done.cleared_reason) == (T0, "remounted")
    assert db.write_sync(lambda c: clear_fault(c, ledger, f.id, "again")) is None
    assert db.write_sync(lambda c: clear_fault(c, ledger, 12345, "none")) is None
    cleared_entry = db.read_sync(lambda c: entries(c, kind="fault_cleared"))[0]
    assert cleared_entry.data == {"fault_id": f.id, "code": "mount_failed",
                                  "reason": "remounted"}
    assert db.read_sync(lambda c: outbox.peek(c, 20))[-1].stream == "fault"
    g = db.write_sync(lambda c: raise_fault(c, ledger, "mount_failed", "bad fs", recorder="R"))
    assert g.id != f.id
    assert [x.id for x in db.read_sync(list_faults)] == [f.id, g.id]
    assert [x.id for x in db.read_sync(lambda c: list_faults(c, include_cleared=False))] == [g.id]


def test_clear_faults_by_recorder_and_code(db: Database, ledger: Ledger) -> None:
    def fn(c: sqlite3.Connection) -> None:
        for code in ("timeout", "protocol_error", "battery_low"):
            raise_fault(c, ledger, code, "r", recorder="R1", severity="warning")
        raise_fault(c, ledger, "timeout", "r", recorder="R2")
        raise_fault(c, ledger, "dock_storage_full", "disk full")  # the dock's own
    db.write_sync(fn)
    done = db.write_sync(lambda c: clear_faults(
        c, ledger, recorder="R1", codes=[FaultCode.TIMEOUT, "protocol_error"],
        reason="talking again"))
    assert sorted(f.code for f in done) == ["protocol_error", "timeout"]
    assert [f.code for f in db.read_sync(lambda c: open_faults(c, recorder="R1"))] == \
        ["battery_low"]
    dock = db.write_sync(lambda c: clear_faults(c, ledger, recorder=None, codes=None,
                                                reason="space freed"))
    assert [f.code for f in dock] == ["dock_storage_full"]
    assert [f.recorder for f in db.read_sync(open_faults)] == ["R1", "R2"]


def test_list_filters(db: Database, ledger: Ledger) -> None:
    def fn(c: sqlite3.Connection) -> None:
        raise_fault(c, ledger, "timeout", "a", recorder="R1", officer="o1", bay="b1", now_us=T0)
        raise_fault(c, ledger, "read_error", "b", recorder="R2", officer="o2", bay="b2",
                    now_us=T0 + 10)
        raise_fault(c, ledger, "timeout", "c", recorder="R3", officer="o1", bay="b1",
                    now_us=T0 + 20)
    db.write_sync(fn)
    def q(**kw: Any) -> list[object]:
        return [f.reason for f in db.read_sync(lambda c: list_faults(c, **kw))]
    assert q() == ["a", "b", "c"]
    assert q(recorder="R2") == ["b"]
    assert q(officer="o1") == ["a", "c"]
    assert q(bay="b2") == ["b"]
    assert q(code=FaultCode.TIMEOUT) == ["a", "c"]
    assert q(since_us=T0 + 10) == ["b", "c"]
    assert q(until_us=T0 + 10) == ["a"]


def test_bad_input(db: Database, ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        db.write_sync(lambda c: raise_fault(c, ledger, "no_such_code", "x"))
    with pytest.raises(ValueError):
        db.write_sync(lambda c: raise_fault(c, ledger, "timeout", ""))
    with pytest.raises(ValueError):
        db.write_sync(lambda c: raise_fault(c, ledger, "timeout", "x", severity="fatal"))  # type: ignore[arg-type]
    # an unencodable detail never loses the fault itself
    f = db.write_sync(lambda c: raise_fault(c, ledger, "health", "sensor",
                                            detail={"temp": math.nan}))
    assert "unencodable_detail" in f.detail and f.open
