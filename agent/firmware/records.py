"""Durable records of firmware updates: attempt rows, ledger entries and faults, each
change in one transaction (so no ledger entry without its attempt state and vice versa)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.firmware import store
from agent.firmware.policy import PackageFacts
from agent.store import faults
from agent.store.db import Database
from agent.store.faults import FaultCode, Severity
from agent.store.ledger import EntryKind, Ledger, current_us

T = TypeVar("T")


@dataclass(frozen=True)
class Who:
    """Whom the records are about: one recorder in one bay's docking session."""

    serial: str
    bay: str
    session_id: str
    officer: str | None


class UpdateRecords:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # shielded: an unplug cancelling the transfer must not cancel its record
        return await asyncio.shield(self.db.write(fn))

    def _entry(self, conn: sqlite3.Connection, who: Who, kind: EntryKind,
               data: dict[str, object]) -> None:
        self.ledger.append(conn, kind, recorder=who.serial, officer=who.officer, bay=who.bay,
                           session_id=who.session_id, data=data)

    def _fault(self, conn: sqlite3.Connection, who: Who, code: FaultCode, reason: str,
               severity: Severity, detail: dict[str, object]) -> None:
        faults.raise_fault(conn, self.ledger, code, reason, recorder=who.serial,
                           officer=who.officer, bay=who.bay, session_id=who.session_id,
                           severity=severity, detail=detail)

    async def start(self, who: Who, pkg: PackageFacts, running: str, recorder_offset: int,
                    resume: store.Attempt | None) -> store.Attempt:
        """`firmware_started`, or `firmware_resumed` when the dock's open attempt of this
        package continues (from the recorder's durable offset)."""
        def tx(conn: sqlite3.Connection) -> store.Attempt:
            store.ensure_schema(conn)
            now = current_us()
            data: dict[str, object] = {"package": pkg.blake3, "from_version": running,
                                       "to_version": pkg.version, "size": pkg.size,
                                       "offset": recorder_offset}
            if resume is not None:
                store.update_attempt(conn, resume.id, now_us=now, resumed=True,
                                     bytes_done=recorder_offset)
                self._entry(conn, who, EntryKind.FIRMWARE_RESUMED,
                            {**data, "attempt": resume.id,
                             "dock_bytes_done": resume.bytes_done})
                attempt = store.open_attempt(conn, who.serial)
                assert attempt is not None
                return attempt
            attempt = store.start_attempt(conn, who.serial, pkg, running, now)
            self._entry(conn, who, EntryKind.FIRMWARE_STARTED, {**data, "attempt": attempt.id})
            return attempt
        return await self._write(tx)

    async def progress(self, attempt_id: int, durable_offset: int) -> None:
        await self._write(lambda conn: store.update_attempt(
            conn, attempt_id, now_us=current_us(), bytes_done=durable_offset))

    async def rebooting(self, attempt_id: int, size: int) -> None:
        await self._write(lambda conn: store.update_attempt(
            conn, attempt_id, now_us=current_us(), state="rebooting", bytes_done=size,
            reason="committed; rebooting into the new slot"))

    async def completed(self, who: Who, attempt: store.Attempt, running: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            store.update_attempt(conn, attempt.id, now_us=current_us(), state="completed",
                                 reason=f"runs {running}")
            self._entry(conn, who, EntryKind.FIRMWARE_COMPLETED, {
                "attempt": attempt.id, "package": attempt.package,
                "from_version": attempt.from_version, "to_version": attempt.to_version,
                "running_version": running, "resumes": attempt.resumes})
            faults.clear_faults(conn, self.ledger, recorder=who.serial,
                                codes=[FaultCode.FIRMWARE_UPDATE_FAILED,
                                       FaultCode.FIRMWARE_ROLLED_BACK],
                                reason=f"firmware {running} installed")
        await self._write(tx)

    async def ended_badly(self, who: Who, attempt: store.Attempt, *, rolled_back: bool,
                          reason: str, detail: dict[str, object], fault: bool = True) -> None:
        """`firmware_failed` or `firmware_rolled_back`, with its fault (none for an attempt
        that policy superseded: nothing went wrong with the recorder)."""
        kind, code = ((EntryKind.FIRMWARE_ROLLED_BACK, FaultCode.FIRMWARE_ROLLED_BACK)
                      if rolled_back else
                      (EntryKind.FIRMWARE_FAILED, FaultCode.FIRMWARE_UPDATE_FAILED))

        def tx(conn: sqlite3.Connection) -> None:
            store.update_attempt(conn, attempt.id, now_us=current_us(),
                                 state="rolled_back" if rolled_back else "failed", reason=reason)
            facts: dict[str, object] = {
                "attempt": attempt.id, "package": attempt.package,
                "from_version": attempt.from_version, "to_version": attempt.to_version,
                "reason": reason, **detail}
            self._entry(conn, who, kind, facts)
            if fault:
                self._fault(conn, who, code, reason, "error", facts)
        await self._write(tx)

    async def blocked(self, who: Who, reason: str, detail: dict[str, object]) -> None:
        """An update policy wants cannot happen without a person (a warning fault, raised
        once while open)."""
        await self._write(lambda conn: self._fault(
            conn, who, FaultCode.FIRMWARE_UPDATE_FAILED, reason, "warning", detail))
