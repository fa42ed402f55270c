"""A docking's first ledger entry is committed while the session already talks to the
recorder (its fsync is off the plug-to-identified path), yet the ledger's order is kept:
nothing of the session is recorded before `docked`, and a docking that could not be
recorded goes no further than reading who the recorder is (storage never unlocked).
The `identified` state is published once identity and officer are read, while their
ledger entry still commits; nothing further happens to the recorder before it has."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from agent.session.state_machine import State
from agent.store.db import open_readonly
from agent.store.ledger import Ledger, LedgerEntry

from .session_bench import Bench, Env, spec, wait_state


class GatedLedger(Ledger):
    """The real ledger, whose entries of one kind (`docked` unless told) wait for `gate`
    (or fail with `error`)."""

    def __init__(self, error: Exception | None = None, *, kind: str = "docked") -> None:
        super().__init__("dock-test")
        self.gate = threading.Event()
        self.error = error
        self.kind = kind

    def append(self, conn: sqlite3.Connection, kind: str, **kw: Any) -> LedgerEntry:
        if kind == self.kind:
            self.gate.wait(120)  # the database thread: no other write passes meanwhile
            if self.error is not None:
                raise self.error
        return super().append(conn, kind, **kw)


def committed_kinds(env: Env, session_id: str) -> list[str]:
    """The session's committed entries, read beside the (possibly busy) database thread."""
    conn = open_readonly(env.db.path)
    try:
        rows = conn.execute("SELECT kind FROM ledger WHERE session_id = ? ORDER BY seq",
                            (session_id,)).fetchall()
    finally:
        conn.close()
    return [str(r[0]) for r in rows]


async def wait_committed(env: Env, session_id: str, kinds: list[str]) -> None:
    while committed_kinds(env, session_id) != kinds:
        await asyncio.sleep(0.01)


async def test_link_comes_up_while_the_docking_commits(env: Env, make_bench: Any) -> None:
    ledger = GatedLedger()
    bench: Bench = await make_bench(ledger=ledger)
    try:
        rec = await bench.plug("B1", spec("SN000071"))
        s = bench.session("SN000071")
        await asyncio.wait_for(wait_state(s, State.IDENTIFIED, State.FAILED), 60)
        # hello, authentication, identity and officer did not wait for the commit; the
        # identify step did (its entry comes after `docked`), so nothing further happened
        assert s.state is State.IDENTIFIED
        assert s.identity is not None and s.identity.serial == "SN000071"
        assert committed_kinds(env, s.session_id) == []
        assert rec.firmware.state.mass_storage is False
    finally:
        ledger.gate.set()
    await wait_state(s, State.RELEASED, State.FAILED)
    assert bench.session("SN000071").state is State.RELEASED, s.faults
    kinds = env.kinds(s.session_id)
    assert kinds[:3] == ["docked", "identified", "clock_checked"]
    await bench.unplug("B1")
    assert env.kinds(s.session_id)[-1] == "undocked"


async def test_docking_not_recorded_goes_no_further(env: Env, make_bench: Any) -> None:
    ledger = GatedLedger(sqlite3.OperationalError("disk I/O error"))
    ledger.gate.set()
    bench: Bench = await make_bench(ledger=ledger)
    rec = await bench.plug("B1", spec("SN000072"))
    s = bench.session("SN000072")
    await asyncio.wait_for(s.wait_finished(), 120)
    assert env.kinds(s.session_id) == []  # nothing recorded without its docking
    assert rec.firmware.state.mass_storage is False  # never unlocked
    assert env.mounter.mounted == set()
    assert s.state not in (State.STORAGE_UNLOCKED, State.MOUNTED, State.OFFLOADING,
                           State.RELEASED)


async def test_identified_state_is_published_while_its_entry_commits(
        env: Env, make_bench: Any) -> None:
    ledger = GatedLedger(kind="identified")
    bench: Bench = await make_bench(ledger=ledger)
    try:
        rec = await bench.plug("B1", spec("SN000073"))
        s = bench.session("SN000073")
        await asyncio.wait_for(wait_state(s, State.IDENTIFIED, State.FAILED), 60)
        assert s.state is State.IDENTIFIED
        snap = s.snapshot()  # what the retained state topic is made of
        assert snap.state == State.IDENTIFIED.value and snap.identity is not None
        # the docking commits (it may still have been on its way at IDENTIFIED); the
        # identified entry does not while it is held, and the session waits for it
        await asyncio.wait_for(wait_committed(env, s.session_id, ["docked"]), 60)
        assert s.state is State.IDENTIFIED
        assert rec.firmware.state.mass_storage is False  # nothing unlocked meanwhile
        assert env.mounter.mounted == set()
    finally:
        ledger.gate.set()
    await asyncio.wait_for(wait_state(s, State.RELEASED, State.FAILED), 120)
    assert bench.session("SN000073").state is State.RELEASED, s.faults
    kinds = env.kinds(s.session_id)
    assert kinds[:3] == ["docked", "identified", "clock_checked"]
    await bench.unplug("B1")
    assert env.kinds(s.session_id)[-1] == "undocked"


async def test_an_identified_entry_that_cannot_be_recorded_fails_the_docking(
        env: Env, make_bench: Any) -> None:
    ledger = GatedLedger(sqlite3.OperationalError("disk I/O error"), kind="identified")
    ledger.gate.set()
    bench: Bench = await make_bench(ledger=ledger)
    rec = await bench.plug("B1", spec("SN000074"))
    s = bench.session("SN000074")
    await asyncio.wait_for(wait_state(s, State.FAILED), 120)
    assert "identified" not in env.kinds(s.session_id)
    assert rec.firmware.state.mass_storage is False  # never unlocked
    assert env.mounter.mounted == set()
    await bench.unplug("B1")
