"""The scheduled fixity audit (000 §16): stored files re-read against their hashes in
slices, yielding the disk to a running offload, each run recorded in the ledger."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.lifecycle import audit
from agent.longjobs import JobStopped, LongJobs, StopSignal
from agent.settings import AuditSettings
from agent.store.db import Database
from agent.store.ledger import Ledger, current_us

log = logging.getLogger(__name__)


class FixityAuditor:
    """Runs audit slices on a schedule or on request; one at a time."""

    def __init__(self, audit_settings: AuditSettings, db: Database, ledger: Ledger, *,
                 store_dir: Path, busy: Callable[[], bool] = lambda: False,
                 jobs: LongJobs | None = None) -> None:
        self.audit_settings = audit_settings
        self.db = db
        self.ledger = ledger
        self.store_dir = store_dir
        self.busy = busy  # True while an offload runs: the audit yields the disk to it
        self._audit_lock = asyncio.Lock()
        self.jobs = jobs if jobs is not None else LongJobs(1)  # the agent's: a stop ends it

    async def run_audits(self) -> None:
        """The schedule: one slice every `interval_s` (first one after one interval)."""
        while True:
            await asyncio.sleep(self.audit_settings.interval_s)
            try:
                await self.audit_slice()
            except JobStopped:
                return  # the agent is stopping; the slice runs again after the restart
            except (OSError, sqlite3.Error):
                log.exception("fixity audit run failed; retrying at the next interval")

    async def audit_slice(self, limit: int | None = None) -> dict[str, Any]:
        cfg = self.audit_settings
        async with self._audit_lock:
            started = current_us()
            cur, files, completes = await self.db.read(
                lambda c: audit.plan(c, cfg.interval_s, cfg.cycle_days, limit))
            if not files and cur.after_file == 0:  # an empty store: nothing to record
                return {"cycle": cur.cycle, "files_checked": 0, "bytes_checked": 0,
                        "problems": [], "cycle_complete": False, "ledger_seq": None}
            offloading = threading.Event()  # read by the worker; set from the loop only

            async def watch_offloads() -> None:
                while True:
                    (offloading.set if self.busy() else offloading.clear)()
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch_offloads())

            def check(stop: StopSignal) -> tuple[int, list[audit.Problem]]:
                return audit.check_files(self.store_dir, files,
                                         max_bytes_per_s=cfg.max_mib_per_s * (1 << 20),
                                         busy=offloading.is_set, stop=stop)

            try:
                # On the agent's long-job threads: a stop ends the slice, unrecorded.
                checked, problems = await self.jobs.run(check)
            finally:
                watcher.cancel()
            return await self.db.write(lambda c: audit.record_run(
                c, self.ledger, cur, files, checked, problems, completes, started))

    async def audit_run(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Run now: one scheduled slice, or (`all`) the rest of the current cycle."""
        if args.get("all"):
            return await self.audit_slice(limit=audit.MAX_FILES)
        return await self.audit_slice()

    async def audit_status(self, _: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.audit_settings
        out = await self.db.read(lambda c: audit.status(c, cfg.interval_s, cfg.cycle_days))
        return {**out, "enabled": cfg.enabled, "interval_s": cfg.interval_s,
                "cycle_days": cfg.cycle_days}
