"""Child process of the kill -9 test: one offload with wipe and verify, then exit.

usage (from the repository root): python -m tests.offload.crash_child DB STORE SOURCE WIPE_LOG
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.offload import Offloader
from agent.settings import OffloadSettings
from agent.store.db import Database
from agent.store.ledger import Ledger

from .offload_helpers import DOCK_ID, SCHEMAS, FixedHours, LoggingWiper, ctx


async def main(db_path: str, store: str, source: str, log: str) -> None:
    db = Database(Path(db_path), SCHEMAS)
    settings = OffloadSettings(buffer_mib=1, buffers=5, fdatasync_every_mib=2, reserve_mib=0,
                               verify="always", wipe_after_offload=True)
    o = Offloader(db, Ledger(DOCK_ID), Path(store), settings, FixedHours(1e6), ZoneInfo("UTC"))
    print("ready", flush=True)
    s = await o.offload(ctx(), Path(source), wiper=LoggingWiper(Path(source), Path(log)))
    print(json.dumps({"outcome": s.outcome, "detail": s.detail, "stored": len(s.stored),
                      "failed": [p.reason for p in s.failed]}), flush=True)
    await o.close()
    db.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
