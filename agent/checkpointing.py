"""Signing the custody ledger's newest entry on demand (health period, dockctl, shutdown)."""

from __future__ import annotations

from collections.abc import Callable

from agent.store.db import Database
from agent.store.ledger import Ledger, recent_checkpoints


class LedgerCheckpoints:
    """Signs a checkpoint over the ledger's newest entry (if not yet signed) and tells the
    publisher, so the central side sees the ledger grow (and would see it rolled back)."""

    def __init__(self, db: Database, ledger: Ledger,
                 on_signed: Callable[[], None] = lambda: None) -> None:
        self._db = db
        self._ledger = ledger
        self._on_signed = on_signed

    async def sign_now(self) -> dict[str, object]:
        """The latest checkpoint's sequence number after signing (None: empty ledger)."""
        await self._db.write(self._ledger.checkpoint)
        latest = await self._db.read(lambda conn: recent_checkpoints(conn, 1))
        if latest:
            self._on_signed()
        return {"seq": latest[-1].seq if latest else None}
