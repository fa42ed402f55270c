"""A docking's first ledger entry is committed while the session already talks to the
recorder (its fsync is off the plug-to-identified path), yet the ledger's order is kept:
nothing of the session is recorded before `docked`, and a docking that could not be
recorded goes no further than reading who the recorder is (storage never unlocked)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from agent.session.state_machine import State
from agent.store.ledger import Ledger, LedgerEntry

from .session_bench import Bench, Env, spec, wait_state


class GatedLedger(Ledger):
    """The real ledger, whose `docked` entries wait for `gate` (or fail with `error`)."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__("dock-test")
        self.gate = threading.Event()
        self.error = error

    def append(self, conn: sqlite3.Connection, kind: str, **kw: Any) -> LedgerEntry:
        if kind == "docked":
            self.gate.wait(120)  # the database thread: no other write passes meanwhile
            if self.error is not None:
                raise self.error
        return super().append(conn, kind, **kw)


async def test_link_comes_up_while_the_docking_commits(env: Env, make_bench: Any) -> None:
    ledger = GatedLedger()
    bench: Bench = await make_bench(ledger=ledger)
    try:
        await bench.plug("B1", spec("SN000071"))
        s = bench.session("SN000071")
        await asyncio.wait_for(wait_state(s, State.AUTHENTICATED, State.FAILED), 60)
        assert s.state is State.AUTHENTICATED  # hello and authentication did not wait
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
