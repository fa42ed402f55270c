"""The offloader: moves a docked recorder's footage into the evidence store with custody.

Before any copy: the storage is listed entry by entry (`agent.offload.walk`: what cannot
be read is named, the rest goes on); a file whose name was stored before is hashed and
compared by content with every stored copy (same content: already stored; other content:
a new version, flagged); admission is per file (an impossible size is refused on its own).

Per file, in this order (each step durable before the next):
  1. pending row (which partial belongs to which recorder file) committed;
  2. copy + BLAKE3 into `.partial-*` in worker threads, periodic fdatasync, journal
     row advanced after each (see `agent.offload.copier`); fchmod 0444 + fsync at the end;
  3. rename to the final name, directory fsync;
  4. one transaction: evidence row + "offloaded" ledger entry + outbox event, journal row
     removed (plus a "fault" entry when the source changed during the copy);
  5. optional verify (re-read from disk, cache dropped) recorded with `mark_verified`;
  6. optional wipe through the session's guarded delete, only when configured, the source
     did not change and verification did not fail; recorded with `mark_wiped` only once a
     fresh listing from the recorder no longer shows the file (its "deleted" is a claim).
A crash between any two steps leaves a state the next offload of the same recorder
resumes from; nothing is recorded that is not on disk, nothing wiped that is not recorded.

Concurrency: at most `max_concurrent` recorders copy at once (semaphore); they share
disk bandwidth fairly through the FIFO buffer pool (`agent.offload.buffers`). Admission
counts the bytes still to be written by every admitted offload, so two recorders cannot
both be admitted into the same free space.

Cancellation (the session cancels the task on unplug) sets the offload's stop event;
worker threads stop at the next chunk and the task waits for them, so no thread is left
writing and no rename is left half-done; then CancelledError propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from agent import crashpoint
from agent.domain import DockingContext
from agent.offload import pending
from agent.offload.admission import Admitted, Promises
from agent.offload.aftercommit import AfterCommit, Run
from agent.offload.buffers import BufferPool, pool_shape
from agent.offload.errors import CopyStopped, OffloadError
from agent.offload.filecopy import FileCopy, Source, StopOffload
from agent.offload.identify import PLAN_BATCH, identify, plan, reappeared
from agent.offload.items import Claims, Items, TimeClaims
from agent.offload.listing import ListedTimes
from agent.offload.policy import DeadlinePolicy, Wiper
from agent.offload.problems import ProblemLog
from agent.offload.progress import ProgressTracker
from agent.offload.storefs import discard, orphan_partials
from agent.offload.summary import OffloadProgress, OffloadSummary
from agent.offload.walk import Scan, scan
from agent.offload.wipes import Wipes
from agent.offload.workers import Plant, Workers
from agent.settings import OffloadSettings
from agent.store.db import Database
from agent.store.evidence import StoredFile as IndexedFile
from agent.store.ledger import Ledger, current_us

PROGRESS_INTERVAL_S = 0.5


def _source_capacity(root: bytes) -> int:
    """Size of the filesystem holding the recorder's files (0 when it does not say)."""
    st = os.statvfs(root)
    return st.f_blocks * st.f_frsize


async def _tick(tracker: ProgressTracker,
                on_progress: Callable[[OffloadProgress], None]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        on_progress(tracker.snapshot())


class Offloader:
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        store_root: Path,
        settings: OffloadSettings,
        deadline: DeadlinePolicy,
        tz: ZoneInfo,
    ) -> None:
        # One copy keeps at most `buffers` in flight; with several copies the pool (not the
        # sum of their depths) bounds memory: enough for each to have one buffer plus one,
        # in a budget that does not grow with the number of bays (see `pool_shape`).
        size, capacity = pool_shape(settings.buffer_mib, settings.buffers,
                                    settings.max_concurrent)
        self._plant = Plant(db, ledger, store_root, settings, deadline, tz,
                            BufferPool(size, capacity),
                            Workers(2 * settings.max_concurrent + 2))
        self._promises = Promises(self._plant)
        self._wipes = Wipes(self._plant)
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._cleanup_lock = asyncio.Lock()
        self._cleaned = False
        self._active: set[str] = set()
        self._stops: set[threading.Event] = set()
        self._closed = False
        self.orphans_removed: list[Path] = []

    async def cleanup_orphans(self) -> list[Path]:
        """Delete `.partial-*` files no pending row claims (leftovers of lost rows).

        Runs once per Offloader, before its first copy starts (a partial is always
        journalled before it is created, so nothing in progress can be mistaken for one).
        """
        p = self._plant
        async with self._cleanup_lock:
            if not self._cleaned:
                claimed = await p.db.read(pending.claimed_paths)
                orphans = await p.workers.call(orphan_partials, p.store, claimed)
                for path in orphans:
                    await p.workers.call(discard, path)
                self.orphans_removed = orphans
                self._cleaned = True
        return self.orphans_removed

    async def offload(
        self,
        ctx: DockingContext,
        source_root: Path,
        *,
        recordings: ListedTimes | None = None,
        wiper: Wiper | None = None,
        on_progress: Callable[[OffloadProgress], None] | None = None,
    ) -> OffloadSummary:
        """Offload every footage file not yet stored; see the module docstring.

        `recordings` is the recorder's listing: path relative to the storage root (or base
        name) -> (start_ms, end_ms). Files it does not cover, or whose listed times are out
        of range, use their mtime as the end of recording (`time_source == "mtime"`, start
        unknown), or failing that the offload date (`"dock"`; see `agent.offload.times`).
        Raises CancelledError when cancelled (after the copy threads stopped cleanly).
        """
        if self._closed:
            raise OffloadError("the offloader is closed")
        serial = ctx.identity.serial
        if serial in self._active:
            raise OffloadError(f"recorder {serial} is already being offloaded")
        self._active.add(serial)
        stop = threading.Event()
        self._stops.add(stop)
        try:
            await self.cleanup_orphans()
            summary = OffloadSummary("complete")
            p = self._plant
            run = Run(ctx, summary, wiper, stop, Claims(),
                      ProblemLog(p.db, p.ledger, ctx, summary))
            try:
                summary = await self._offload(run, source_root, recordings, on_progress)
            except BaseException:
                with contextlib.suppress(Exception):  # the first error is the one to tell
                    await run.problems.close()  # even when stopped: what was found is kept
                raise
            await run.problems.close()
            return summary
        finally:
            self._stops.discard(stop)
            self._active.discard(serial)

    async def close(self) -> None:
        """Stop running copies at their next chunk and release threads and buffers."""
        self._closed = True
        for stop in list(self._stops):
            stop.set()
        await self._plant.workers.shutdown()
        self._plant.pool.close()

    async def _offload(
        self, run: Run, source_root: Path,
        recordings: ListedTimes | None,
        on_progress: Callable[[OffloadProgress], None] | None,
    ) -> OffloadSummary:
        summary, call, p = run.summary, self._plant.workers.call, self._plant
        root = os.fsencode(source_root)
        serial = run.ctx.identity.serial
        intents = await p.db.read(lambda c: pending.wipe_intents(c, serial))
        try:
            source = Source(root, (await call(os.stat, root)).st_dev)
            # every refused or unreadable entry is recorded as the walk finds it
            listing = await call(scan, root, p.settings.footage_dirs, run.problems.walked,
                                 [i.source_name for i in intents], run.stop, stop=run.stop)
            capacity = await call(_source_capacity, root)
        except (OSError, CopyStopped) as exc:
            summary.outcome = "interrupted"
            summary.detail = f"cannot list the recorder's storage: {exc}"
            return summary
        crashpoint.reached("offload_started")
        items = await self._look(run, root, listing, intents, recordings)
        del listing  # its files live on in `items`
        admitted = await self._promises.admit(items, capacity, summary, run.problems)
        tracker = ProgressTracker(run.ctx, sum(items.files[i].size for i in admitted.items),
                                  len(admitted.items))
        ticker = None if on_progress is None else asyncio.create_task(
            _tick(tracker, on_progress))
        try:
            await self._copy_all(run, source, items, admitted, tracker)
        finally:
            self._promises.release(admitted.token)
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        if on_progress is not None:
            on_progress(tracker.snapshot())
        return summary

    async def _look(self, run: Run, root: bytes, listing: Scan,
                    intents: list[pending.WipeIntent],
                    recordings: ListedTimes | None) -> Items:
        """What each listed file is to the dock (reading the recorder takes a slot)."""
        p, serial = self._plant, run.ctx.identity.serial
        items = Items(listing.files, TimeClaims(recordings, current_us()))
        async with self._slots:  # reading the recorder counts against max_concurrent
            await self._wipes.settle(root, serial, listing, intents, run.summary, run.stop)
            journal = await p.db.read(lambda c: pending.for_recorder(c, serial))
            for name, j in journal.items():
                at = items.files.index(name)
                if at is not None:
                    items.keep(at, j)
            # in batches: the index rows of only a few files are held at a time
            for lo in range(0, len(items), PLAN_BATCH):
                known = await p.db.read(partial(plan, serial=serial, files=items.files,
                                                lo=lo, hi=lo + PLAN_BATCH))
                for i, versions in known:
                    await self._know(run, root, items, i, versions,
                                     journal.get(items.files.relpath(i)))
        return items

    async def _know(self, run: Run, root: bytes, items: Items, i: int,
                    versions: tuple[IndexedFile, ...], journal: pending.JournalEntry | None,
                    ) -> None:
        """Settle or keep one file of a name stored before, by what it holds now."""
        f = items.files[i]
        known = await identify(self._plant, root, f, versions, run.stop)
        if known.stored is not None:
            s = known.stored
            wipes = (run.wiper is not None and self._plant.settings.wipe_after_offload
                     and s.source_changed is None and s.verify_state != "failed")
            items.settle(i, s.id if wipes else None)
            run.summary.already_stored.append(f.relpath)
        elif known.reappeared is not None:
            items.settle(i)
            run.summary.already_stored.append(f.relpath)
            await run.problems.add("wipe_failed", reappeared(f, known.reappeared))
        elif known.previous is not None or journal is not None:
            items.keep(i, journal, None if known.previous is None else known.previous.id)

    async def _copy_all(self, run: Run, source: Source, items: Items,
                        admitted: Admitted, tracker: ProgressTracker) -> None:
        """Copy the admitted files in order; then wipe what earlier dockings stored."""
        token = admitted.token
        after = AfterCommit(self._plant, self._wipes, run)
        copy = FileCopy(self._plant, run.ctx, source, tracker, after, run,
                        lambda n: self._promises.spend(token, n))
        # What is still promised after each file (bytes written count down as they land);
        # a file's need is taken before its copy starts, as admission counted it.
        later = sum(items[i].still_needed() for i in admitted.items)
        try:
            async with self._slots:
                for i in admitted.items:
                    item = items[i]
                    later -= item.still_needed()
                    try:
                        await copy.one(item)
                    except StopOffload:
                        break
                    finally:
                        self._promises.promise(token, later)
                        tracker.files_done += 1
                        tracker.current = None
                await after.finish()
                await self._finish_wipes(run, items, admitted)
        except BaseException:
            await after.abort()
            raise

    async def _finish_wipes(self, run: Run, items: Items, admitted: Admitted) -> None:
        summary = run.summary
        if admitted.left and summary.outcome == "complete":
            summary.outcome = "storage_full"
            summary.detail = admitted.full
        if summary.outcome == "complete" and run.wiper is not None:
            for name, file_id in items.to_wipe():  # stored at earlier dockings
                await self._wipes.wipe_stored(run.ctx.identity.serial, name, file_id,
                                              run.wiper, run.stop, run.problems, run.claims)
        if run.wiper is not None:
            await self._wipes.confirm(run.wiper, run.claims, summary, run.problems)
