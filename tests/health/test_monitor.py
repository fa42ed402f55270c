"""Dock health and overdue recorders over a real database and custody ledger: faults are
raised once per condition, and cleared (with history kept) when the condition goes."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.checkpointing import LedgerCheckpoints
from agent.compliance.deadlines import HoursDeadline
from agent.dockclock import dock_clock_probe
from agent.health.monitor import HealthMonitor, HealthSources
from agent.schemas import ALL_SCHEMAS
from agent.settings import ClockSettings, DockSettings, HealthSettings, Settings
from agent.store import faults
from agent.store.db import Database
from agent.store.ledger import Ledger, entries
from agent.watchdog import LoopLag

HOUR_US = 3600 * 1_000_000


def make(tmp: Path, **health: float) -> tuple[Database, Ledger, HealthMonitor]:
    settings = Settings(
        dock=DockSettings(id="dock-h", store_dir=tmp, state_dir=tmp),
        clock=ClockSettings(assume_synchronised=True),
        health=replace(HealthSettings(), **health),
    )
    db = Database(tmp / "dock.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("dock-h")
    checkpoints = LedgerCheckpoints(db, ledger)
    sources = HealthSources(docked=list, clock_synchronised=dock_clock_probe(settings.clock),
                            sign_checkpoint=checkpoints.sign_now)
    return db, ledger, HealthMonitor(settings, db, ledger, HoursDeadline(24), LoopLag(),
                                     sources)


def open_codes(db: Database) -> list[tuple[str, str | None]]:
    return sorted((f.code, f.recorder) for f in db.read_sync(faults.open_faults))


async def test_overdue_recorder_fault_raised_once_and_cleared(tmp_path: Path) -> None:
    db, ledger, monitor = make(tmp_path, store_free_warn_percent=0)
    now_us = int(time.time() * 1e6)
    db.write_sync(lambda c: ledger.append(c, "undocked", recorder="BWC00001", officer="0042",
                                          now_us=now_us - 30 * HOUR_US))
    db.write_sync(lambda c: ledger.append(c, "undocked", recorder="BWC00002",
                                          now_us=now_us - 2 * HOUR_US))
    await monitor.sample()
    await monitor.sample()  # the same condition twice: still one fault
    assert open_codes(db) == [("overdue", "BWC00001")]
    (fault,) = db.read_sync(faults.open_faults)
    assert fault.officer == "0042" and "not docked since" in fault.reason

    # It came back, was offloaded and left again a moment ago: no longer overdue.
    db.write_sync(lambda c: ledger.append(c, "undocked", recorder="BWC00001", now_us=now_us))
    await monitor.sample()
    assert open_codes(db) == []
    history = db.read_sync(lambda c: faults.list_faults(c, recorder="BWC00001"))
    assert len(history) == 1 and history[0].cleared_us is not None
    kinds = [e.kind for e in db.read_sync(lambda c: entries(c, recorder="BWC00001"))]
    assert kinds.count("fault") == 1 and kinds.count("fault_cleared") == 1
    db.close()


async def test_health_issue_fault_follows_the_condition(tmp_path: Path) -> None:
    db, _, monitor = make(tmp_path, store_free_warn_percent=100)  # any disk is "too full"
    sample: dict[str, Any] = await monitor.sample()
    assert [i["code"] for i in sample["issues"]] == ["store_space_low"]
    assert sample["store_total_bytes"] > 0 and sample["clock_synchronised"] is True
    assert open_codes(db) == [("health", None)]
    db.close()

    db, _, monitor = make(tmp_path, store_free_warn_percent=0)  # the operator fixed it
    sample = await monitor.sample()
    assert sample["issues"] == [] and open_codes(db) == []
    (cleared,) = db.read_sync(lambda c: faults.list_faults(c, code="health"))
    assert cleared.reason.startswith("evidence disk") and cleared.cleared_us is not None
    db.close()
