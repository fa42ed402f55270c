"""Small helpers shared by the MQTT tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from agent.mqtt.reporter import Reporter
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database


async def until(pred: Callable[[], bool], timeout: float = 90.0) -> None:
    async with asyncio.timeout(timeout):  # never wait_for: it can lose a cancellation
        while not pred():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(reporter: Reporter, *, wait_connected: bool = True) -> AsyncIterator[Reporter]:
    task = asyncio.create_task(reporter.run())
    try:
        if wait_connected:
            await until(lambda: reporter.connected or task.done())
            if task.done():
                task.result()
        yield reporter
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def make_reporter(db: Database, settings: MqttSettings, actions: Any, dock_id: str = "dock-A",
                  **kw: Any) -> Reporter:
    return Reporter(db, settings, dock_id, actions, agent_version="0.1.0-test", **kw)


async def add_custody(db: Database, n: int, start: int = 0, serial: str = "REC00001") -> None:
    def fn(conn: Any) -> None:
        for i in range(start, start + n):
            outbox.enqueue(conn, stream="custody", subject=serial,
                           payload=ledger_payload(i + 1, serial=serial))

    await db.write(fn)


def outbox_depth(db: Database) -> int:
    return db.read_sync(lambda c: outbox.stats(c).depth)


# --- payloads in the documented shape (the agent's own builders produce them in the
# contract test; these stand in for the agent's state in reporter-level tests) ---------

def health_sample(**over: Any) -> dict[str, Any]:
    """A dock health sample as the health monitor makes it."""
    sample: dict[str, Any] = {
        "time": 1_795_000_000.0, "agent_version": "0.1.0-test",
        "store_total_bytes": 64 * 2**30, "store_free_bytes": 40 * 2**30,
        "store_free_percent": 62.5, "offload_bytes_per_day": None,
        "projected_days_until_full": None, "cpu_temp_c": 51.0, "load": [0.1, 0.2, 0.3],
        "mem_total_bytes": 2**31, "mem_available_bytes": 2**30, "uptime_s": 1234.5,
        "clock_synchronised": True, "broker_connected": True, "outbox_depth": 0,
        "outbox_oldest_age_s": None, "loop_lag_ms": 1.5, "throttling_now": None,
        "throttling_since_boot": None, "bays": [], "issues": [],
    }
    sample.update(over)
    return sample


def rec_state(bay: str = "1", *, verdict: str = "READY",
              reasons: Sequence[tuple[str, str]] = (), officer_no: str | None = "0042",
              percent: float = 97, **over: Any) -> dict[str, Any]:
    """A docked recorder's state as the dock view hands it to the reporter."""
    state: dict[str, Any] = {
        "bay": bay, "state": "released", "docked_at": "2026-11-23T08:00:00.000Z",
        "storage_only": False,
        "identity": {"model": "BW-200", "hardware_rev": "C", "firmware": "2.4.1"},
        "officer": None if officer_no is None else {
            "officer_no": officer_no, "officer_name": "Li Wei", "unit_no": "U7",
            "unit_name": "Inspection 7"},
        "battery": {"percent": percent, "charging": True},
        "readiness": {"verdict": verdict,
                      "reasons": [{"code": c, "message": m} for c, m in reasons],
                      "eta_s": None},
        "faults": [], "unchecked": [],
    }
    state.update(over)
    return state


def progress_values(files_done: int, files_total: int, bytes_done: int = 0,
                    bytes_total: int = 0) -> dict[str, Any]:
    return {"files_done": files_done, "files_total": files_total, "bytes_done": bytes_done,
            "bytes_total": bytes_total, "rate_bps": 1.0e6, "eta_s": None,
            "current_file": None}


def ledger_payload(seq: int, kind: str = "offloaded", serial: str | None = "REC00001",
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ledger entry as the ledger puts it in the outbox (hashes are stand-ins)."""
    return {"seq": seq, "hash": f"{seq:064x}", "prev_hash": f"{seq - 1:064x}", "kind": kind,
            "time": "2026-11-23T10:00:00.000000Z", "time_us": 1_795_000_000_000_000 + seq,
            "dock_id": "dock-A", "recorder": serial, "officer": "0042", "bay": "1",
            "session_id": "s1", "data": data if data is not None else {"n": seq}}


def fault_payload(seq: int, fault_id: int, code: str, reason: str, *, cleared: bool = False,
                  serial: str | None = "REC00001") -> dict[str, Any]:
    data: dict[str, Any] = {"fault_id": fault_id, "code": code, "reason": reason}
    if not cleared:
        data.update(severity="error", detail={}, repeated=False)
    return ledger_payload(seq, "fault_cleared" if cleared else "fault", serial, data)
