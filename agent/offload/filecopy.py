"""One file of an offload: pending row, copy + hash into the partial, rename, commit.

Each step is durable before the next (see `agent.offload.engine`). A problem with this
file alone (unreadable, refused, a conflicting stored file) is recorded and the offload
goes on; a problem with the recorder or the store ends the offload (`StopOffload`).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import crashpoint
from agent.domain import DockingContext
from agent.offload import pending
from agent.offload.aftercommit import AfterCommit, Run
from agent.offload.copier import Copier
from agent.offload.copyjob import CopyJob, CopyResult
from agent.offload.errors import (
    CopyStopped,
    SourceGoneError,
    SourceReadError,
    SourceRefusedError,
    StoreConflictError,
    StoreError,
    StoreFullError,
)
from agent.offload.items import Committed, Item
from agent.offload.names import disambiguated, partial_name
from agent.offload.pending import JournalEntry
from agent.offload.progress import ProgressTracker
from agent.offload.record import commit
from agent.offload.storefs import discard, ensure_dir, install
from agent.offload.summary import FileProblem
from agent.offload.workers import Plant
from agent.store.db import Database, DatabaseFull
from agent.store.evidence import get_file
from agent.store.layout import layout_relpath, recording_day
from agent.store.ledger import current_us

log = logging.getLogger(__name__)


class StopOffload(Exception):
    """End the offload with the summary's outcome already set."""


class JournalHooks:
    """Copy-thread callbacks: pending-row updates (blocking, off the loop) and progress."""

    def __init__(self, db: Database, serial: str, name: bytes, tracker: ProgressTracker,
                 spent: Callable[[int], None] = lambda n: None):
        self.db, self.serial, self.name, self.tracker = db, serial, name, tracker
        self.spent = spent  # bytes written: no longer promised, already off the free space

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        self.db.write_sync(
            lambda c: pending.restart(c, self.serial, self.name, source_size, source_mtime_ns)
        )

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        try:
            self.db.write_sync(
                lambda c: pending.advance(c, self.serial, self.name, length, digest,
                                          complete=complete)
            )
        except DatabaseFull as exc:  # the copy stops as for a full store (ENOSPC)
            raise OSError(errno.ENOSPC, str(exc)) from exc

    def progress(self, nbytes: int) -> None:
        self.tracker.add_copied(nbytes)
        self.spent(nbytes)
        if not self.db.reserve.holds():  # the disk filled up: custody records come first
            raise OSError(errno.ENOSPC, "disk full: the database's reserve is in use")

    def resumed(self, nbytes: int) -> None:
        self.tracker.add_resumed(nbytes)


@dataclass(frozen=True, slots=True)
class Source:
    """The recorder's storage as this offload found it."""

    root: bytes
    dev: int  # st_dev of the root when the offload began


class FileCopy:
    """Copies the admitted files of one offload, one after the other."""

    def __init__(self, plant: Plant, ctx: DockingContext, source: Source,
                 tracker: ProgressTracker, after: AfterCommit, run: Run,
                 spend: Callable[[int], None]) -> None:
        self._p, self._ctx, self._src, self._tracker = plant, ctx, source, tracker
        self._after, self._run, self._spend = after, run, spend

    async def one(self, item: Item) -> None:
        """Copy, install and commit one file; raises StopOffload when the offload ends."""
        f = item.file
        self._tracker.current = f.relpath
        start_us = current_us()
        if item.previous_id is not None and item.previous is None:  # held while it copies
            previous_id = item.previous_id
            item.previous = await self._p.db.read(lambda c: get_file(c, previous_id))
        j = await self._pending_row(item)
        partial, final = self._p.store / j.partial_relpath, self._p.store / j.stored_relpath
        result = await self._copy(item, partial, final)
        if result is None:
            return
        summary = self._run.summary
        summary.bytes_copied += result.size - result.resumed_from
        if result.restart_reason is not None:
            summary.restarted.append(FileProblem(f.relpath, result.restart_reason))
        file_id, late = await commit(self._p, self._ctx, item, j, result, start_us)
        crashpoint.reached("committed")
        await self._after.put(Committed(item, j, result, file_id, late, final))

    async def _pending_row(self, item: Item) -> JournalEntry:
        """The file's pending row: the one left by an earlier run, or a new one (durable
        before the partial is created)."""
        f, serial, p = item.file, self._ctx.identity.serial, self._p
        if item.journal is not None:
            rel_dir = item.journal.stored_relpath.rpartition("/")[0]
            await p.workers.call(ensure_dir, p.store, rel_dir, stop=self._run.stop)
            return item.journal
        stored_rel = await p.workers.call(choose_relpath, p, self._ctx, item,
                                          stop=self._run.stop)
        partial_rel = stored_rel.rpartition("/")[0] + "/" + partial_name(serial, f.relpath)
        j = JournalEntry(serial, f.relpath, stored_rel, partial_rel, f.size, f.mtime_ns)
        await p.db.write(lambda c: pending.put(c, j))
        return j

    async def _copy(self, item: Item, partial: Path, final: Path) -> CopyResult | None:
        """Copy + install; None when this file failed on its own (recorded)."""
        f, p, stop, summary = item.file, self._p, self._run.stop, self._run.summary
        serial = self._ctx.identity.serial
        s = p.settings
        job = CopyJob(self._src.root, self._src.dev, f, partial, final, item.journal,
                      s.fdatasync_every_mib << 20, s.read_retries, s.buffers,
                      s.fdatasync_interval_s, direct=s.direct_io)
        hooks = JournalHooks(p.db, serial, f.relpath, self._tracker, self._spend)
        try:
            result = await p.workers.call(Copier(job, hooks, p.pool, stop).run, stop=stop)
            if not result.installed:
                await p.workers.call(install, partial, final, stop=stop)
            crashpoint.reached("installed")
        except (SourceReadError, StoreConflictError) as exc:
            await self._run.problems.add("failed", FileProblem(f.relpath, str(exc)))
            if isinstance(exc, SourceReadError):
                await self._forget_if_empty(f.relpath, partial)
            return None
        except SourceRefusedError as exc:
            await self._run.problems.add("refused", FileProblem(f.relpath, str(exc)))
            await self._forget(f.relpath, partial)
            return None
        except (SourceGoneError, CopyStopped) as exc:
            summary.outcome, summary.detail = "interrupted", str(exc)
            raise StopOffload from exc
        except StoreFullError as exc:
            summary.outcome, summary.detail = "storage_full", str(exc)
            await self._give_back(f.relpath, partial)
            raise StopOffload from exc
        except (StoreError, OSError) as exc:
            summary.outcome, summary.detail = "store_error", str(exc)
            raise StopOffload from exc
        return result

    async def _give_back(self, name: bytes, partial: Path) -> None:
        """The disk is full: the partial goes first (its space is what the database needs
        to record the rest); its pending row after, as far as the disk allows. A row left
        behind only makes the next docking start the file over."""
        serial = self._ctx.identity.serial
        await self._p.workers.call(discard, partial, stop=self._run.stop)
        try:
            await self._p.db.write(lambda c: pending.remove(c, serial, name))
        except DatabaseFull:
            log.exception("disk full: the pending row of a discarded partial stays")

    async def _forget_if_empty(self, name: bytes, partial: Path) -> None:
        """A file that failed before any of it was durable leaves nothing to resume: its
        pending row and partial go (a recorder of many unreadable files would otherwise
        leave a row and a partial each, all read again at its next docking)."""
        serial = self._ctx.identity.serial
        j = await self._p.db.read(lambda c: pending.get(c, serial, name))
        if j is not None and j.durable_len == 0 and not j.complete:
            await self._forget(name, partial)

    async def _forget(self, name: bytes, partial: Path) -> None:
        """Drop a partial and its pending row (row first: an orphan is cleaned later)."""
        serial = self._ctx.identity.serial
        await self._p.db.write(lambda c: pending.remove(c, serial, name))
        await self._p.workers.call(discard, partial, stop=self._run.stop)


def choose_relpath(plant: Plant, ctx: DockingContext, item: Item) -> str:
    """Final store path: layout path, disambiguated if another file already has it."""
    ident = ctx.identity_for(item.file.relpath)  # the officer who recorded it
    t = item.times
    day = recording_day(t.start_us if t.start_us is not None else t.end_us, plant.tz)
    base = layout_relpath(ident.unit_no, ident.serial, ident.officer_no, day,
                          item.file.basename)
    rel_dir, _, name = base.rpartition("/")
    ensure_dir(plant.store, rel_dir)

    def taken(rel: str) -> bool:
        # asked per name (not every journal row read per file: a recorder may leave
        # many pending copies)
        if os.path.lexists(plant.store / rel):
            return True
        return bool(plant.db.read_sync(lambda c: pending.claims_path(c, rel) or c.execute(
            "SELECT 1 FROM evidence_files WHERE stored_relpath = ?", (rel,)).fetchone()))

    candidate, n = name, 0
    while taken(f"{rel_dir}/{candidate}"):
        n += 1
        salt = item.file.relpath if n == 1 else item.file.relpath + b"\0%d" % n
        candidate = disambiguated(name, salt)
    return f"{rel_dir}/{candidate}"
