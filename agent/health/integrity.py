"""The custody ledger checked by the agent itself: a LEDGER_INTEGRITY fault when it fails.

At every start the whole chain and every checkpoint signature are verified against the
dock's own public key, on a read-only connection in a worker thread (the agent is serving
meanwhile). The same happens whenever a verify command runs (`agent.actions`). Findings
become one open fault naming them; a later clean check clears it. STORE_INTEGRITY is the
same for the evidence store (raised by the verify command, which walks the store).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.longjobs import JobStopped, LongJobs, StopSignal
from agent.store import faults
from agent.store.db import Database, open_readonly
from agent.store.faults import FaultCode
from agent.store.ledger import Ledger
from agent.store.verify import Problem, verify_ledger

log = logging.getLogger(__name__)


async def sync_integrity_fault(db: Database, ledger: Ledger, code: FaultCode, what: str,
                               problems: Sequence[Problem]) -> None:
    """Raise `code` naming the problems, or clear it when there are none."""
    def tx(conn: sqlite3.Connection) -> None:
        if problems:
            kinds = sorted({p.kind for p in problems})
            faults.raise_fault(
                conn, ledger, code,
                f"{what} check failed: {len(problems)} problem(s) ({', '.join(kinds)})",
                severity="error",
                detail={"problems": [{"kind": p.kind, "where": p.where, "detail": p.detail}
                                     for p in problems[:50]], "count": len(problems)})
        else:
            faults.clear_faults(conn, ledger, recorder=None, codes=[code],
                                reason=f"{what} verified")

    await db.write(tx)


async def audit_ledger(db: Database, ledger: Ledger, db_path: Path,
                       public_key: Ed25519PublicKey, jobs: LongJobs) -> list[Problem]:
    """The check at start, on the agent's long-job threads: a stop ends it unfinished and
    then it judges nothing (the next start checks again)."""
    def run(stop: StopSignal) -> list[Problem]:
        conn = open_readonly(db_path)
        try:
            return verify_ledger(conn, public_key, dock_id=ledger.dock_id, stop=stop).problems
        finally:
            conn.close()

    try:
        problems = await jobs.run(run)
    except JobStopped:
        return []
    except Exception:  # the check must never take the agent down
        log.exception("custody ledger check could not run")
        return []
    for p in problems[:20]:
        log.error("custody ledger: %s", p)
    await sync_integrity_fault(db, ledger, FaultCode.LEDGER_INTEGRITY, "custody ledger",
                               problems)
    return problems
