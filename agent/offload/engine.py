"""The offloader: moves a docked recorder's footage into the evidence store with custody.

Per file, in this order (each step durable before the next):
  1. journal row (which partial belongs to which recorder file) committed;
  2. copy + BLAKE3 into `.partial-*` in worker threads, periodic fdatasync, journal
     advanced after each (see `agent.offload.copier`); fchmod 0444 + fsync at the end;
  3. rename to the final name, directory fsync;
  4. one transaction: evidence row + "offloaded" ledger entry + outbox event, journal row
     removed (plus a "fault" entry when the source changed during the copy);
  5. optional verify (re-read from disk, cache dropped) recorded with `mark_verified`;
  6. optional wipe through the session's guarded delete, recorded with `mark_wiped`,
     only when configured, the source did not change and verification did not fail.
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
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from agent import crashpoint
from agent.domain import DockingContext
from agent.offload import journal
from agent.offload.buffers import BufferPool
from agent.offload.copier import Copier, CopyJob, CopyResult, hash_fd, verify_stored
from agent.offload.errors import (
    CopyStopped,
    OffloadError,
    SourceGoneError,
    SourceReadError,
    SourceRefusedError,
    StoreConflictError,
    StoreError,
    StoreFullError,
)
from agent.offload.journal import JournalEntry
from agent.offload.names import disambiguated, partial_name
from agent.offload.policy import DeadlinePolicy, Wiper
from agent.offload.progress import ProgressTracker
from agent.offload.storefs import discard, ensure_dir, free_bytes, install, orphan_partials
from agent.offload.summary import FileProblem, OffloadProgress, OffloadSummary, StoredFile
from agent.offload.walk import SourceFile, open_source, scan
from agent.settings import OffloadSettings
from agent.store.db import Database
from agent.store.evidence import StoredFile as IndexedFile
from agent.store.evidence import (
    StoredFileRecord,
    commit_file,
    display_name,
    find_stored,
    get_file,
    mark_verified,
    mark_wiped,
)
from agent.store.faults import FaultCode, raise_fault
from agent.store.layout import layout_relpath, recording_day
from agent.store.ledger import Ledger, current_us

T = TypeVar("T")
TimeSource = Literal["recorder", "mtime"]
PROGRESS_INTERVAL_S = 0.5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Times:
    start_us: int | None
    end_us: int
    source: TimeSource


@dataclass(slots=True)
class _Item:
    file: SourceFile
    times: _Times
    journal: JournalEntry | None = None
    stored: IndexedFile | None = None  # the index row that already holds this file
    confirm: IndexedFile | None = None  # same name and size, but identity needs the hash
    never_wipe: bool = False  # stored while it changed: the recorder keeps its copy


@dataclass(frozen=True, slots=True)
class _Committed:
    item: _Item
    journal: JournalEntry
    result: CopyResult
    file_id: int
    late: bool
    final: Path


class _AfterCommit:
    """Per offload: verifies and wipes committed files in order, one at a time, while the
    next file copies (bounded: at most one file waits)."""

    def __init__(self, owner: Offloader, ctx: DockingContext, summary: OffloadSummary,
                 wiper: Wiper | None, stop: threading.Event) -> None:
        self._queue: asyncio.Queue[_Committed | None] = asyncio.Queue(maxsize=1)
        self._args = (owner, ctx, summary, wiper, stop)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        owner, ctx, summary, wiper, stop = self._args
        while (c := await self._queue.get()) is not None:
            await owner._after_commit(ctx, c, summary, wiper, stop)

    async def put(self, c: _Committed | None) -> None:
        putter = asyncio.ensure_future(self._queue.put(c))
        try:
            done, _ = await asyncio.wait({putter, self._task},
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            putter.cancel()
            raise
        if putter not in done:  # the worker died: surface its error
            putter.cancel()
            self._task.result()

    async def finish(self) -> None:
        await self.put(None)
        await self._task

    async def abort(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class _Stop(Exception):
    """Internal: end the offload with the summary's outcome already set."""


class _JournalHooks:
    """Copy-thread callbacks: journal updates (blocking, off the loop) and progress."""

    def __init__(self, db: Database, serial: str, name: bytes, tracker: ProgressTracker):
        self.db, self.serial, self.name, self.tracker = db, serial, name, tracker

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        self.db.write_sync(
            lambda c: journal.restart(c, self.serial, self.name, source_size, source_mtime_ns)
        )

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        self.db.write_sync(
            lambda c: journal.advance(c, self.serial, self.name, length, digest,
                                      complete=complete)
        )

    def progress(self, nbytes: int) -> None:
        self.tracker.add_copied(nbytes)

    def resumed(self, nbytes: int) -> None:
        self.tracker.add_resumed(nbytes)


def _flagged_changed(conn: sqlite3.Connection, file_id: int) -> bool:
    """Whether the offloader recorded that this file changed while it was copied."""
    return conn.execute(
        "SELECT 1 FROM evidence_files WHERE id = ? AND source_changed IS NOT NULL", (file_id,),
    ).fetchone() is not None


def _us_to_dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _sampled(digest: bytes, rate: float) -> bool:
    """Deterministic sampling from the file's own hash (unpredictable before the copy)."""
    return int.from_bytes(digest[:8], "big") < rate * 2**64


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
        self._db = db
        self._ledger = ledger
        self._store = store_root
        self._settings = settings
        self._deadline = deadline
        self._tz = tz
        # One copy keeps at most `buffers` in flight; with several copies the pool (not the
        # sum of their depths) bounds memory: enough for each to have one buffer plus one.
        capacity = max(settings.buffers, settings.max_concurrent + 1)
        self._pool = BufferPool(settings.buffer_mib << 20, capacity)
        self._executor = ThreadPoolExecutor(
            max_workers=2 * settings.max_concurrent + 2, thread_name_prefix="offload"
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._space_lock = asyncio.Lock()
        self._cleanup_lock = asyncio.Lock()
        self._cleaned = False
        self._reserved: dict[int, int] = {}
        self._active: set[str] = set()
        self._stops: set[threading.Event] = set()
        self._closed = False
        self.orphans_removed: list[Path] = []

    # -- public -----------------------------------------------------------------------------

    async def cleanup_orphans(self) -> list[Path]:
        """Delete `.partial-*` files no journal row claims (leftovers of lost rows).

        Runs once per Offloader, before its first copy starts (a partial is always
        journalled before it is created, so nothing in progress can be mistaken for one).
        """
        async with self._cleanup_lock:
            if not self._cleaned:
                claimed = await self._db.read(journal.claimed_paths)
                orphans = await self._call(orphan_partials, self._store, claimed)
                for path in orphans:
                    await self._call(discard, path)
                self.orphans_removed = orphans
                self._cleaned = True
        return self.orphans_removed

    async def offload(
        self,
        ctx: DockingContext,
        source_root: Path,
        *,
        recordings: Mapping[bytes, tuple[int, int]] | None = None,
        wiper: Wiper | None = None,
        on_progress: Callable[[OffloadProgress], None] | None = None,
    ) -> OffloadSummary:
        """Offload every footage file not yet stored; see the module docstring.

        `recordings` is the recorder's listing: path relative to the storage root (or base
        name) -> (start_ms, end_ms). Files it does not cover use their mtime as the end
        of recording (`StoredFile.time_source == "mtime"`, start unknown).
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
            return await self._offload(ctx, source_root, recordings, wiper, on_progress, stop)
        finally:
            self._stops.discard(stop)
            self._active.discard(serial)

    async def close(self) -> None:
        """Stop running copies at their next chunk and release threads and buffers."""
        self._closed = True
        for stop in list(self._stops):
            stop.set()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self._pool.close()

    # -- one offload ------------------------------------------------------------------------

    async def _offload(
        self,
        ctx: DockingContext,
        source_root: Path,
        recordings: Mapping[bytes, tuple[int, int]] | None,
        wiper: Wiper | None,
        on_progress: Callable[[OffloadProgress], None] | None,
        stop: threading.Event,
    ) -> OffloadSummary:
        root = os.fsencode(source_root)
        summary = OffloadSummary("complete")
        try:
            root_dev = (await self._call(os.stat, root)).st_dev
            files, refused = await self._call(scan, root, self._settings.footage_dirs)
        except OSError as exc:
            summary.outcome = "interrupted"
            summary.detail = f"cannot list the recorder's storage: {exc}"
            return summary
        summary.refused = [FileProblem(r.relpath, r.reason) for r in refused]
        crashpoint.reached("offload_started")
        serial = ctx.identity.serial
        await self._settle_wipes(serial, {f.relpath for f in files} | {r.relpath for r in refused},
                                 summary)
        items = [_Item(f, self._times(f, recordings)) for f in files]
        await self._db.read(lambda conn: self._plan(conn, serial, items))
        for item in items:
            if item.confirm is not None:
                await self._confirm(root, item, stop, summary)
        pending = [i for i in items if i.stored is None]
        summary.already_stored = [i.file.relpath for i in items if i.stored is not None]
        need = sum(self._still_needed(i) for i in pending)
        token = await self._admit(need, summary)
        if token is None:
            return summary
        tracker = ProgressTracker(ctx, sum(i.file.size for i in pending), len(pending))
        ticker = None
        if on_progress is not None:
            ticker = asyncio.create_task(self._tick(tracker, on_progress))
        after = _AfterCommit(self, ctx, summary, wiper, stop)
        try:
            async with self._slots:
                for item in pending:
                    try:
                        await self._one(ctx, root, root_dev, item, tracker, stop, summary, after)
                    except _Stop:
                        break
                    finally:
                        self._reserved[token] = max(0, self._reserved[token]
                                                    - self._still_needed(item))
                        tracker.files_done += 1
                        tracker.current = None
                await after.finish()
                if summary.outcome == "complete":
                    for item in items:
                        if item.stored is not None:
                            await self._wipe_stored(ctx, item, summary, wiper, stop)
        except BaseException:
            await after.abort()
            raise
        finally:
            del self._reserved[token]
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        if on_progress is not None:
            on_progress(tracker.snapshot())
        return summary

    def _times(self, f: SourceFile, recordings: Mapping[bytes, tuple[int, int]] | None) -> _Times:
        hit = None
        if recordings:
            hit = recordings.get(f.relpath) or recordings.get(f.basename)
        if hit is not None:
            return _Times(int(hit[0]) * 1000, int(hit[1]) * 1000, "recorder")
        return _Times(None, f.mtime_ns // 1000, "mtime")

    def _plan(self, conn: sqlite3.Connection, serial: str, items: list[_Item]) -> None:
        rows = journal.for_recorder(conn, serial)
        for item in items:
            f, t = item.file, item.times
            if t.source == "recorder":
                item.stored = find_stored(conn, serial, f.relpath, f.size,
                                          rec_start_us=t.start_us)
            if item.stored is None:
                hit = find_stored(conn, serial, f.relpath, f.size)
                if hit is not None and t.source == "mtime" and hit.rec_end_us == t.end_us:
                    item.stored = hit
                elif hit is not None:
                    item.confirm = hit  # same name and size, times disagree: hash decides
            if item.stored is None:
                item.journal = rows.get(f.relpath)
            elif _flagged_changed(conn, item.stored.id):
                item.never_wipe = True

    async def _confirm(
        self, root: bytes, item: _Item, stop: threading.Event, summary: OffloadSummary
    ) -> None:
        """Same name and size as a stored file but other times: compare the content hash."""
        assert item.confirm is not None

        def digest() -> bytes:
            fd = open_source(root, item.file.relpath)
            try:
                return hash_fd(fd, self._pool, stop)[0].digest()
            finally:
                os.close(fd)

        try:
            got = await self._call(digest, stop=stop)
        except (OSError, OffloadError):
            return  # treat as new; the copy reports any real problem
        if got.hex() == item.confirm.blake3_hex:
            item.stored = item.confirm

    def _still_needed(self, item: _Item) -> int:
        j = item.journal
        if j is not None and (j.source_size, j.source_mtime_ns) == (item.file.size,
                                                                    item.file.mtime_ns):
            return max(0, item.file.size - j.durable_len)
        return item.file.size

    async def _admit(self, need: int, summary: OffloadSummary) -> int | None:
        reserve = self._settings.reserve_mib << 20
        async with self._space_lock:
            free = await self._call(free_bytes, self._store)
            others = sum(self._reserved.values())
            summary.bytes_needed, summary.bytes_free = need, free
            if need > 0 and need + reserve + others > free:
                summary.outcome = "storage_full"
                summary.detail = (
                    f"dock storage full: {need} bytes to store + {reserve} reserve"
                    f" + {others} promised to other bays > {free} free"
                )
                return None
            token = id(summary)
            self._reserved[token] = need
            return token

    async def _tick(
        self, tracker: ProgressTracker, on_progress: Callable[[OffloadProgress], None]
    ) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            on_progress(tracker.snapshot())

    # -- one file ---------------------------------------------------------------------------

    async def _one(
        self,
        ctx: DockingContext,
        root: bytes,
        root_dev: int,
        item: _Item,
        tracker: ProgressTracker,
        stop: threading.Event,
        summary: OffloadSummary,
        after: _AfterCommit,
    ) -> None:
        f = item.file
        serial = ctx.identity.serial
        tracker.current = f.relpath
        start_us = current_us()
        j = item.journal
        if j is None:
            stored_rel = await self._call(self._choose_relpath, ctx, item, stop=stop)
            partial_rel = stored_rel.rpartition("/")[0] + "/" + partial_name(serial, f.relpath)
            j = JournalEntry(serial, f.relpath, stored_rel, partial_rel, f.size, f.mtime_ns)
            entry = j
            await self._db.write(lambda c: journal.put(c, entry))
        else:
            await self._call(ensure_dir, self._store, j.stored_relpath.rpartition("/")[0],
                             stop=stop)
        partial, final = self._store / j.partial_relpath, self._store / j.stored_relpath
        job = CopyJob(
            root, root_dev, f, partial, final, item.journal,
            self._settings.fdatasync_every_mib << 20, self._settings.read_retries,
            self._settings.buffers,
        )
        hooks = _JournalHooks(self._db, serial, f.relpath, tracker)
        try:
            result = await self._call(Copier(job, hooks, self._pool, stop).run, stop=stop)
            if not result.installed:
                await self._call(install, partial, final, stop=stop)
            crashpoint.reached("installed")
        except (SourceReadError, StoreConflictError) as exc:
            summary.failed.append(FileProblem(f.relpath, str(exc)))
            return
        except SourceRefusedError as exc:
            summary.refused.append(FileProblem(f.relpath, str(exc)))
            await self._forget(serial, f.relpath, partial, stop)
            return
        except (SourceGoneError, CopyStopped) as exc:
            summary.outcome, summary.detail = "interrupted", str(exc)
            raise _Stop from exc
        except StoreFullError as exc:
            await self._forget(serial, f.relpath, partial, stop)  # give the space back
            summary.outcome, summary.detail = "storage_full", str(exc)
            raise _Stop from exc
        except (StoreError, OSError) as exc:
            summary.outcome, summary.detail = "store_error", str(exc)
            raise _Stop from exc
        summary.bytes_copied += result.size - result.resumed_from
        if result.restart_reason is not None:
            summary.restarted.append(FileProblem(f.relpath, result.restart_reason))
        file_id, late = await self._commit(ctx, item, j, result, start_us)
        crashpoint.reached("committed")
        await after.put(_Committed(item, j, result, file_id, late, final))

    async def _after_commit(
        self, ctx: DockingContext, c: _Committed, summary: OffloadSummary,
        wiper: Wiper | None, stop: threading.Event,
    ) -> None:
        """Verify, then maybe wipe, one committed file (overlaps the next file's copy)."""
        r = c.result
        verified = await self._verify(ctx, c.file_id, c.final, r, stop)
        summary.stored.append(StoredFile(
            c.item.file.relpath, c.journal.stored_relpath, r.size, r.digest.hex(),
            r.resumed_from, c.late, r.changed, c.item.times.source, verified,
        ))
        if (wiper is not None and self._settings.wipe_after_offload
                and summary.outcome == "complete" and r.changed is None):
            if verified is None:  # not verified under the verify mode: a wipe still needs it
                verified = await self._verify_file(c.file_id, c.final, r.size, r.digest, stop)
            if verified:
                await self._wipe(wiper, ctx.identity.serial, c.file_id, c.item.file.relpath,
                                 r.size, r.digest, summary)

    def _choose_relpath(self, ctx: DockingContext, item: _Item) -> str:
        """Final store path: layout path, disambiguated if another file already has it."""
        ident = ctx.identity
        t = item.times
        day = recording_day(t.start_us if t.start_us is not None else t.end_us, self._tz)
        base = layout_relpath(ident.unit_no, ident.serial, ident.officer_no, day,
                              item.file.basename)
        rel_dir, _, name = base.rpartition("/")
        ensure_dir(self._store, rel_dir)
        claimed = self._db.read_sync(journal.claimed_paths)

        def taken(rel: str) -> bool:
            if rel in claimed or os.path.lexists(self._store / rel):
                return True
            return bool(self._db.read_sync(lambda c: c.execute(
                "SELECT 1 FROM evidence_files WHERE stored_relpath = ?", (rel,)).fetchone()))

        candidate, n = name, 0
        while taken(f"{rel_dir}/{candidate}"):
            n += 1
            salt = item.file.relpath if n == 1 else item.file.relpath + b"\0%d" % n
            candidate = disambiguated(name, salt)
        return f"{rel_dir}/{candidate}"

    async def _commit(
        self, ctx: DockingContext, item: _Item, j: JournalEntry, result: CopyResult,
        start_us: int,
    ) -> tuple[int, bool]:
        ident = ctx.identity
        t = item.times
        end_us = current_us()
        due = self._deadline.due(_us_to_dt(t.end_us))
        late_by = (_us_to_dt(end_us) - due).total_seconds()
        rec = StoredFileRecord(
            recorder_serial=ident.serial, session_id=ctx.session_id, bay=ctx.bay,
            source_name=item.file.relpath, stored_relpath=j.stored_relpath, size=result.size,
            blake3_hex=result.digest.hex(), rec_start_us=t.start_us, rec_end_us=t.end_us,
            offload_start_us=start_us, offload_end_us=end_us, unit_no=ident.unit_no,
            officer_no=ident.officer_no, officer_name=ident.officer_name, late=late_by > 0,
            late_by_s=max(0.0, late_by), deadline_us=int(due.timestamp() * 1_000_000),
            source_changed=None if result.changed is None else {"reason": result.changed},
        )

        def tx(conn: sqlite3.Connection) -> int:
            entry = commit_file(conn, self._ledger, rec)
            journal.remove(conn, ident.serial, item.file.relpath)
            file_id = int(entry.data["file_id"])
            if result.changed is not None:
                # The flag itself is on the index row; the fault tells the operators.
                raise_fault(
                    conn, self._ledger, FaultCode.FILE_CHANGED,
                    f"{display_name(item.file.relpath)} changed while it was copied;"
                    " stored as read, flagged, not wiped",
                    recorder=ident.serial, officer=ident.officer_no, bay=ctx.bay,
                    session_id=ctx.session_id, severity="warning",
                    detail={"file_id": file_id, "stored_relpath": j.stored_relpath,
                            "change": result.changed},
                )
            return file_id

        return await self._db.write(tx), late_by > 0

    async def _verify(
        self, ctx: DockingContext, file_id: int, final: Path, result: CopyResult,
        stop: threading.Event,
    ) -> bool | None:
        mode = self._settings.verify
        if not (mode == "always" or (mode == "first-docking" and ctx.first_docking)
                or (mode == "sampled"
                    and _sampled(result.digest, self._settings.verify_sample_rate))):
            return None
        return await self._verify_file(file_id, final, result.size, result.digest, stop)

    async def _verify_file(
        self, file_id: int, final: Path, size: int, digest: bytes, stop: threading.Event
    ) -> bool:
        """Re-read the stored file from disk, compare, and record the result."""
        ok, detail = await self._call(verify_stored, final, size, digest, self._pool, stop,
                                      stop=stop)
        await self._db.write(lambda c: mark_verified(c, self._ledger, file_id, ok, detail))
        crashpoint.reached("verified")
        return ok

    async def _wipe(
        self, wiper: Wiper, serial: str, file_id: int, name: bytes, size: int, digest: bytes,
        summary: OffloadSummary,
    ) -> None:
        """Guarded delete on the recorder, bracketed so a crash cannot hide a deletion.

        The intent is durable before the command goes out; the wipe record and the intent's
        removal commit together after the recorder confirms. If the agent dies in between,
        or the answer never comes, the intent stays and the next docking settles it.
        """
        await self._db.write(lambda c: journal.intend_wipe(c, file_id, serial, name, size))
        crashpoint.reached("wipe_intent")
        try:
            await wiper.delete(name, size, digest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            summary.wipe_failed.append(FileProblem(name, f"{type(exc).__name__}: {exc}"))
            return
        crashpoint.reached("wipe_sent")

        def record(conn: sqlite3.Connection) -> None:
            mark_wiped(conn, self._ledger, file_id)
            journal.settle_wipe(conn, file_id)

        await self._db.write(record)
        crashpoint.reached("wiped")
        summary.wiped.append(name)

    async def _settle_wipes(
        self, serial: str, present: set[bytes], summary: OffloadSummary
    ) -> None:
        """Settle deletes left undecided by a crash or a lost answer at an earlier docking.

        A file still on the recorder was not deleted: the intent goes, and the normal rules
        may wipe it again. A file no longer there was deleted by that command: the wipe is
        recorded now, saying how it is known.
        """
        intents = await self._db.read(lambda c: journal.wipe_intents(c, serial))
        walked = {os.fsencode(d.strip("/")) for d in self._settings.footage_dirs}
        for intent in intents:
            if intent.source_name.split(b"/", 1)[0] not in walked:
                continue  # not looked at this time (footage_dirs changed): decide later
            gone = intent.source_name not in present

            def settle(conn: sqlite3.Connection, intent: journal.WipeIntent = intent,
                       gone: bool = gone) -> None:
                stored = get_file(conn, intent.file_id)
                if gone and stored is not None and not stored.wiped:
                    mark_wiped(conn, self._ledger, intent.file_id, detail={
                        "confirmed_by": "absent from the recorder at its next docking",
                        "interrupted_wipe_requested_at": intent.requested_at,
                    })
                journal.settle_wipe(conn, intent.file_id)

            await self._db.write(settle)
            if gone:
                summary.wiped.append(intent.source_name)

    async def _wipe_stored(
        self, ctx: DockingContext, item: _Item, summary: OffloadSummary, wiper: Wiper | None,
        stop: threading.Event,
    ) -> None:
        """Wipe a file stored at an earlier docking, once its stored copy is verified."""
        s = item.stored
        if (wiper is None or s is None or not self._settings.wipe_after_offload
                or s.verify_state == "failed" or s.wiped or item.never_wipe):
            return
        digest = bytes.fromhex(s.blake3_hex)
        if s.verify_state != "ok" and not await self._verify_file(
                s.id, self._store / s.stored_relpath, s.size, digest, stop):
            return
        await self._wipe(wiper, ctx.identity.serial, s.id, item.file.relpath, s.size, digest,
                         summary)

    async def _forget(
        self, serial: str, name: bytes, partial: Path, stop: threading.Event
    ) -> None:
        """Drop a partial and its journal row (journal first: an orphan is cleaned later)."""
        await self._db.write(lambda c: journal.remove(c, serial, name))
        await self._call(discard, partial, stop=stop)

    # -- threads ----------------------------------------------------------------------------

    async def _call(
        self, fn: Callable[..., T], *args: object, stop: threading.Event | None = None
    ) -> T:
        """Run `fn` in a worker thread. With `stop`, a cancellation sets it and waits for
        the thread to finish (copy threads notice it within one chunk) before propagating,
        so no thread keeps writing after the task is gone."""
        cf: Future[T] = self._executor.submit(fn, *args)
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            if stop is not None:
                stop.set()
                while not cf.done():
                    try:
                        await asyncio.shield(asyncio.wrap_future(cf))
                    except asyncio.CancelledError:
                        continue
                    except BaseException:  # the outcome no longer matters
                        break
            raise
