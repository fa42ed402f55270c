"""Custody ledger entries and fault records of one docking session.

All of a session's database writes pass through here, each in its own committed
transaction off the event loop (`Database.write`), so the session code states *what*
happened and this module knows *how* the custody store records it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping

from agent.store import faults
from agent.store.canonical import MAX_SAFE_INT
from agent.store.db import Database
from agent.store.faults import FaultCode, Severity
from agent.store.ledger import Ledger, current_us


def _recordable(value: object) -> object:
    """Facts derived from a recorder (an absurd clock's drift, a size it claims) may be
    integers beyond what the ledger's JSON carries exactly: they are kept as decimal text
    rather than refused, so a hostile value never stops the custody record."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {k: _recordable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_recordable(v) for v in value]
    return value


def _recordable_data(data: Mapping[str, object]) -> dict[str, object]:
    return {k: _recordable(v) for k, v in data.items()}


class SessionRecords:
    """Writes one session's ledger entries and faults."""

    def __init__(self, db: Database, ledger: Ledger, *, bay: str,
                 session_id: str | None) -> None:
        self._db = db
        self._ledger = ledger
        self.bay = bay
        self.session_id = session_id
        self._opening: asyncio.Future[None] | None = None  # the session's first entry

    def open(self, kind: str, *, recorder: str | None, officer: str | None,
             data: dict[str, object]) -> asyncio.Future[None]:
        """Queue the session's first entry (its docking) now and return its commit, so
        the session can talk to the recorder meanwhile. Every later record of this
        session waits for it and fails with it: nothing is recorded after a docking that
        was not, and the database commits in the order writes are queued."""
        assert self._opening is None, "a session opens once"

        def tx(conn: sqlite3.Connection) -> None:
            self._ledger.append(conn, kind, recorder=recorder, officer=officer, bay=self.bay,
                                session_id=self.session_id, data=_recordable_data(data))

        self._opening = self._db.queue_write(tx)
        return self._opening

    async def _opened(self) -> None:
        if self._opening is not None:
            await asyncio.shield(self._opening)

    async def entry(
        self, kind: str, *, recorder: str | None, officer: str | None, data: dict[str, object]
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            self._ledger.append(conn, kind, recorder=recorder, officer=officer, bay=self.bay,
                                session_id=self.session_id, data=_recordable_data(data))

        await self._opened()
        # shielded: an unplug cancelling the session must not cancel its custody record
        await asyncio.shield(self._db.write(tx))

    async def fault(
        self,
        code: FaultCode,
        reason: str,
        *,
        recorder: str | None,
        officer: str | None,
        severity: Severity,
        detail: dict[str, object],
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            faults.raise_fault(conn, self._ledger, code, reason, recorder=recorder,
                               officer=officer, bay=self.bay, session_id=self.session_id,
                               severity=severity, detail=_recordable_data(detail))

        await self._opened()
        await asyncio.shield(self._db.write(tx))

    async def past_fault(self, code: FaultCode, reason: str, *, recorder: str | None,
                         officer: str | None, severity: Severity,
                         detail: dict[str, object]) -> None:
        """A fault that is already over when it is recorded (a missed deadline)."""
        def tx(conn: sqlite3.Connection) -> None:
            faults.record_past_fault(conn, self._ledger, code, reason,
                                     occurred_us=current_us(), cleared_reason="recorded after"
                                     " the fact", recorder=recorder, officer=officer,
                                     bay=self.bay, session_id=self.session_id,
                                     severity=severity, detail=detail)

        await self._opened()
        await asyncio.shield(self._db.write(tx))

    async def clear(self, code: FaultCode, reason: str, *, recorder: str | None) -> None:
        """Clear this recorder's open faults of `code` (the condition is gone)."""
        def tx(conn: sqlite3.Connection) -> None:
            faults.clear_faults(conn, self._ledger, recorder=recorder, codes=[code],
                                reason=reason)

        await self._opened()
        await asyncio.shield(self._db.write(tx))
