"""Periodic dock health: sample, publish, and keep health faults in step with reality.

Each period: read the system (in a worker thread), compute the projected days until the
evidence disk is full from the recent offload rate, evaluate the health rules, raise a
fault for each new issue and clear the ones that went away (and `dock_storage_full` once
the disk has room again), check for overdue recorders
(not docked within the storage deadline), and hand the sample to the reporter as the
dock's retained health state.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from agent import __version__
from agent.compliance.deadlines import DeadlinePolicy
from agent.compliance.overdue import Whereabouts, overdue_recorders
from agent.docking_state import SessionSnapshot
from agent.health import system
from agent.health.rules import OffloadRate, health_issues, projected_days_until_full
from agent.settings import Settings
from agent.store import faults as fault_register
from agent.store.db import DB_RESERVE_BYTES, Database
from agent.store.ledger import Ledger
from agent.watchdog import LoopLag

log = logging.getLogger(__name__)


def stored_bytes_total(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(SUM(size), 0) FROM evidence_files").fetchone()
    return int(row[0])


def whereabouts(conn: sqlite3.Connection, docked: set[str]) -> list[Whereabouts]:
    """Last undock per recorder that has been identified at this dock."""
    rows = conn.execute(
        "SELECT recorder, officer, MAX(time_us) FROM ledger"
        " WHERE kind = 'undocked' AND recorder IS NOT NULL GROUP BY recorder"
    ).fetchall()
    out = []
    for recorder, officer, t_us in rows:
        left = datetime.fromtimestamp(t_us / 1e6, UTC)
        out.append(Whereabouts(recorder, officer, left, recorder in docked))
    return out


def _upload_health(conn: sqlite3.Connection) -> dict[str, object]:
    from agent.upload.queue import backlog

    b = backlog(conn)
    oldest = None if b.oldest_enqueued_us is None else round(
        max(0.0, time.time() - b.oldest_enqueued_us / 1e6), 1)
    return {"backlog_files": b.files, "backlog_bytes": b.bytes, "oldest_backlog_age_s": oldest,
            "uploaded_files": b.uploaded_files, "conflicts": b.conflicts,
            "last_error": b.last_error}


class PublisherStats(Protocol):
    @property
    def outbox_depth(self) -> int: ...
    @property
    def outbox_oldest_age_s(self) -> float | None: ...


class HealthPublisher(Protocol):
    """Where health goes (the MQTT reporter), and what health reports of it."""

    @property
    def connected(self) -> bool: ...
    @property
    def stats(self) -> PublisherStats: ...
    def set_dock_health(self, health: Mapping[str, object]) -> None: ...


@dataclass(frozen=True)
class HealthSources:
    """What the monitor reads and calls besides the system: all given at construction."""

    docked: Callable[[], Sequence[SessionSnapshot]]  # the live sessions, one per bay
    # The same probe the sessions use: a configured override (simulations) must not
    # make health report an unsynchronised clock while sessions set recorder clocks.
    clock_synchronised: Callable[[], bool]
    sign_checkpoint: Callable[[], Awaitable[object]]
    publisher: HealthPublisher | None = None


class HealthMonitor:
    def __init__(self, settings: Settings, db: Database, ledger: Ledger,
                 deadline: DeadlinePolicy, lag: LoopLag, sources: HealthSources) -> None:
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.deadline = deadline
        self.lag = lag
        self.sources = sources
        self.rate = OffloadRate()
        self.last: dict[str, object] = {}

    async def run(self) -> None:
        self.rate.observe_start(time.time())
        previous_total = await self.db.read(stored_bytes_total)
        while True:
            try:
                total = await self.db.read(stored_bytes_total)
                if total > previous_total:
                    self.rate.add(time.time(), total - previous_total)
                previous_total = total
                await self.sample()
                # Sign what was recorded since the last checkpoint and publish it, so the
                # central side sees the ledger grow (and would see it rolled back).
                await self.sources.sign_checkpoint()
            except Exception:  # health must never take the agent down
                log.exception("health sample failed")
            await asyncio.sleep(self.settings.health.interval_s)

    async def sample(self) -> dict[str, object]:
        readings = await asyncio.to_thread(system.read, self.settings.dock.store_dir)
        synced = await asyncio.to_thread(self.sources.clock_synchronised)
        reporter = self.sources.publisher
        stats = reporter.stats if reporter is not None else None
        connected = reporter.connected if reporter is not None else None
        oldest = stats.outbox_oldest_age_s if stats is not None else None
        issues = health_issues(
            readings, self.settings.health, clock_synchronised=synced,
            broker_connected=connected, outbox_oldest_age_s=oldest,
        )
        now = time.time()
        per_day = self.rate.bytes_per_day(now)
        docked = self.sources.docked()
        health: dict[str, object] = {
            "time": now,
            "agent_version": __version__,
            "store_total_bytes": readings.store_total_bytes,
            "store_free_bytes": readings.store_free_bytes,
            "store_free_percent": round(readings.store_free_percent, 2),
            "offload_bytes_per_day": per_day,
            "projected_days_until_full": projected_days_until_full(
                readings.store_free_bytes, per_day),
            "cpu_temp_c": readings.cpu_temp_c,
            "load": list(readings.load),
            "mem_total_bytes": readings.mem_total_bytes,
            "mem_available_bytes": readings.mem_available_bytes,
            "uptime_s": readings.uptime_s,
            "clock_synchronised": synced,
            "broker_connected": connected,
            "outbox_depth": stats.outbox_depth if stats is not None else None,
            "outbox_oldest_age_s": oldest,
            "loop_lag_ms": round(self.lag.worst_recent_s * 1000, 1),
            "throttling_now": readings.throttling_now,
            "throttling_since_boot": readings.throttling_since_boot,
            "bays": [{"bay": s.bay, "serial": s.serial, "state": s.state} for s in docked],
            "issues": [{"code": i.code, "reason": i.reason} for i in issues],
        }
        if self.settings.upload.enabled:
            health["upload"] = await self.db.read(_upload_health)
        await self._sync_faults({i.code: i.reason for i in issues})
        await self._clear_storage_full(readings.store_free_bytes)
        await self._check_overdue({s.serial for s in docked if s.serial}, now)
        if reporter is not None:
            reporter.set_dock_health(health)
        self.last = health
        return health

    async def _sync_faults(self, issues: dict[str, str]) -> None:
        """One open HEALTH fault per issue code; cleared when the issue goes away."""
        ledger = self.ledger

        def tx(conn: sqlite3.Connection) -> None:
            open_now = {
                (f.detail or {}).get("issue"): f
                for f in fault_register.open_faults(conn)
                if f.code == fault_register.FaultCode.HEALTH
            }
            for code, reason in issues.items():
                if code not in open_now:
                    fault_register.raise_fault(
                        conn, ledger, fault_register.FaultCode.HEALTH, reason,
                        severity="warning", detail={"issue": code},
                    )
            for issue, fault in open_now.items():
                if issue not in issues:
                    fault_register.clear_fault(conn, ledger, fault.id, "condition cleared")

        await self.db.write(tx)

    async def _clear_storage_full(self, free: int) -> None:
        """A `dock_storage_full` fault clears once the disk has room again: what the refused
        offload needed (recorded with the fault) on top of the offload reserve and the
        database's own reserve."""
        ledger = self.ledger
        floor = (self.settings.offload.reserve_mib << 20) + DB_RESERVE_BYTES

        def due(conn: sqlite3.Connection) -> list[int]:
            out = []
            for f in fault_register.open_faults(conn):
                if f.code != fault_register.FaultCode.DOCK_STORAGE_FULL:
                    continue
                need = (f.detail or {}).get("bytes_needed", 0)
                if free > floor + (need if isinstance(need, int) else 0):
                    out.append(f.id)
            return out

        ids = await self.db.read(due)
        if not ids:
            return

        def tx(conn: sqlite3.Connection) -> None:
            for fault_id in ids:
                fault_register.clear_fault(conn, ledger, fault_id,
                                           f"space returned: {free} bytes free")

        await self.db.write(tx)

    async def _check_overdue(self, docked: set[str], now: float) -> None:
        ledger = self.ledger
        policy = self.deadline
        moment = datetime.fromtimestamp(now, UTC)

        def tx(conn: sqlite3.Connection) -> None:
            known = whereabouts(conn, docked)
            late = {o.serial: o for o in overdue_recorders(known, policy, moment)}
            open_overdue = {
                f.recorder: f for f in fault_register.open_faults(conn)
                if f.code == fault_register.FaultCode.OVERDUE
            }
            for serial, o in late.items():
                if serial not in open_overdue:
                    fault_register.raise_fault(
                        conn, ledger, fault_register.FaultCode.OVERDUE,
                        f"not docked since {o.left_at.isoformat()} (deadline {o.due.isoformat()})",
                        recorder=serial, officer=o.officer_no, severity="warning",
                        detail={"left_at": o.left_at.isoformat(), "due": o.due.isoformat()},
                    )
            for recorder, fault in open_overdue.items():
                if recorder not in late:
                    fault_register.clear_fault(conn, ledger, fault.id, "recorder docked")

        await self.db.write(tx)
