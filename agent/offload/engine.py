"""The offloader: moves a docked recorder's footage into the evidence store with custody.

Before any copy: the storage is listed entry by entry (`agent.offload.walk`: what cannot
be read is named, the rest goes on); a file whose name was stored before is hashed and
compared by content with every stored copy (same content: already stored; other content:
a new version, flagged); admission is per file (an impossible size is refused on its own).

Per file, in this order (each step durable before the next):
  1. journal row (which partial belongs to which recorder file) committed;
  2. copy + BLAKE3 into `.partial-*` in worker threads, periodic fdatasync, journal
     advanced after each (see `agent.offload.copier`); fchmod 0444 + fsync at the end;
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
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
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
from agent.offload.times import RecordingTimes, decide
from agent.offload.walk import Scan, SourceFile, open_source, scan
from agent.settings import OffloadSettings
from agent.store.canonical import MAX_SAFE_INT
from agent.store.db import Database, DatabaseFull
from agent.store.evidence import StoredFile as IndexedFile
from agent.store.evidence import (
    StoredFileRecord,
    commit_file,
    display_name,
    get_file,
    mark_verified,
    mark_wiped,
    stored_versions,
)
from agent.store.faults import FaultCode, raise_fault
from agent.store.layout import layout_relpath, recording_day
from agent.store.ledger import EntryKind, Ledger, current_us

T = TypeVar("T")
log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAULT_NAMES_MAX = 50  # a fault names at most this many entries; longer lists go to the ledger
LIST_CHUNK = 100  # entries per "entry_list" ledger entry
SPARSE_SLACK = 1 << 20  # allocation may trail the size by this much (inline data, tails)
# summary lists that a session turns into faults, with the fault code each one gets
_LISTS = (("refused", FaultCode.HOSTILE_CONTENT), ("failed", FaultCode.READ_ERROR),
          ("wipe_failed", FaultCode.WIPE_FAILED))


@dataclass(slots=True)
class _Item:
    file: SourceFile
    times: RecordingTimes
    journal: JournalEntry | None = None
    stored: IndexedFile | None = None  # the index row holding this content (hash-matched)
    versions: list[IndexedFile] = field(default_factory=list)  # rows of this name, newest first
    previous: IndexedFile | None = None  # stored earlier with other content: a new version
    reappeared: IndexedFile | None = None  # recorded as wiped, yet the recorder still has it
    never_wipe: bool = False  # stored while it changed: the recorder keeps its copy


@dataclass(frozen=True, slots=True)
class _Claim:
    """A delete the recorder answered "deleted"; recorded once its absence is confirmed."""

    file_id: int
    name: bytes


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
                 wiper: Wiper | None, stop: threading.Event, claims: list[_Claim]) -> None:
        self._queue: asyncio.Queue[_Committed | None] = asyncio.Queue(maxsize=1)
        self._args = (owner, ctx, summary, wiper, stop, claims)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        owner, ctx, summary, wiper, stop, claims = self._args
        while (c := await self._queue.get()) is not None:
            await owner._after_commit(ctx, c, summary, wiper, stop, claims)

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

    def __init__(self, db: Database, serial: str, name: bytes, tracker: ProgressTracker,
                 spent: Callable[[int], None] = lambda n: None):
        self.db, self.serial, self.name, self.tracker = db, serial, name, tracker
        self.spent = spent  # bytes written: no longer promised, already off the free space

    def reset(self, source_size: int, source_mtime_ns: int) -> None:
        self.db.write_sync(
            lambda c: journal.restart(c, self.serial, self.name, source_size, source_mtime_ns)
        )

    def durable(self, length: int, digest: bytes, complete: bool) -> None:
        try:
            self.db.write_sync(
                lambda c: journal.advance(c, self.serial, self.name, length, digest,
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


def _source_capacity(root: bytes) -> int:
    """Size of the filesystem holding the recorder's files (0 when it does not say)."""
    st = os.statvfs(root)
    return st.f_blocks * st.f_frsize


def _problem_fields(p: FileProblem) -> dict[str, object]:
    return {"name": display_name(p.name), "name_hex": p.name.hex(), "reason": p.reason,
            **(p.detail or {})}


def _replaced(item: _Item, result: CopyResult) -> IndexedFile | None:
    """The stored copy this one is a new version of (None when the content is the same)."""
    prev = item.previous
    return prev if prev is not None and prev.blake3_hex != result.digest.hex() else None


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
            listing = await self._call(scan, root, self._settings.footage_dirs)
            capacity = await self._call(_source_capacity, root)
        except OSError as exc:
            summary.outcome = "interrupted"
            summary.detail = f"cannot list the recorder's storage: {exc}"
            return summary
        summary.refused = [FileProblem(r.relpath, r.reason) for r in listing.refused]
        summary.failed = [FileProblem(u.relpath, u.reason) for u in listing.unreadable]
        crashpoint.reached("offload_started")
        serial = ctx.identity.serial
        now_us = current_us()
        items = [_Item(f, self._times(f, recordings, now_us)) for f in listing.files]
        async with self._slots:  # reading the recorder counts against max_concurrent
            await self._settle_wipes(root, serial, listing, summary, stop)
            await self._db.read(lambda conn: self._plan(conn, serial, items))
            for item in items:
                if item.versions:
                    await self._identify(root, item, stop, summary)
        summary.already_stored = [i.file.relpath for i in items
                                  if i.stored is not None or i.reappeared is not None]
        pending = [i for i in items if i.stored is None and i.reappeared is None]
        token, pending, left, full = await self._admit(pending, capacity, summary)
        tracker = ProgressTracker(ctx, sum(i.file.size for i in pending), len(pending))
        ticker = None
        if on_progress is not None:
            ticker = asyncio.create_task(self._tick(tracker, on_progress))
        claims: list[_Claim] = []
        after = _AfterCommit(self, ctx, summary, wiper, stop, claims)
        # What is still promised after each file (bytes written count down as they land).
        later = [0] * len(pending)
        for k in range(len(pending) - 2, -1, -1):
            later[k] = later[k + 1] + self._still_needed(pending[k + 1])
        try:
            async with self._slots:
                for k, item in enumerate(pending):
                    try:
                        await self._one(ctx, root, root_dev, item, tracker, stop, summary, after)
                    except _Stop:
                        break
                    finally:
                        self._reserved[token] = later[k]
                        tracker.files_done += 1
                        tracker.current = None
                await after.finish()
                if left and summary.outcome == "complete":
                    summary.outcome = "storage_full"
                    summary.detail = full
                if summary.outcome == "complete":
                    for item in items:
                        if item.stored is not None:
                            await self._wipe_stored(ctx, item, summary, wiper, stop, claims)
                if wiper is not None:
                    await self._confirm_wipes(wiper, claims, summary)
        except BaseException:
            await after.abort()
            raise
        finally:
            del self._reserved[token]
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        await self._record_lists(ctx, summary)
        if on_progress is not None:
            on_progress(tracker.snapshot())
        return summary

    def _times(self, f: SourceFile, recordings: Mapping[bytes, tuple[int, int]] | None,
               now_us: int) -> RecordingTimes:
        hit = None
        if recordings:
            hit = recordings.get(f.relpath) or recordings.get(f.basename)
        return decide(hit, f.mtime_ns, now_us)

    def _plan(self, conn: sqlite3.Connection, serial: str, items: list[_Item]) -> None:
        rows = journal.for_recorder(conn, serial)
        for item in items:
            item.versions = stored_versions(conn, serial, item.file.relpath)
            item.journal = rows.get(item.file.relpath)

    async def _identify(
        self, root: bytes, item: _Item, stop: threading.Event, summary: OffloadSummary
    ) -> None:
        """A file of a name stored before: what it holds now decides, never name and size.

        Same content as a stored copy: already stored. Same content as a copy recorded as
        wiped: the recorder's delete did not take (named; not copied again). Other content
        than the newest stored copy: a new version, copied and flagged.
        """
        same_size = [v for v in item.versions if v.size == item.file.size]
        # unreadable now (None): the copy reports the real problem
        got = (await self._hash_source(root, item.file.relpath, item.file.size, stop)
               if same_size else None)
        match = next((v for v in same_size if v.blake3_hex == got), None)
        if match is not None and not match.wiped:
            item.stored = match
            item.never_wipe = match.source_changed is not None
            return
        if match is not None:
            item.reappeared = match
            summary.wipe_failed.append(FileProblem(
                item.file.relpath,
                "recorded as wiped at an earlier docking, but the recorder still holds it:"
                " its delete did not take",
                detail={"file_id": match.id, "firmware_claim": "deleted",
                        "wiped_us": match.wiped_us}))
            return
        prev = next((v for v in item.versions if not v.wiped), None)
        if (prev is not None and prev.source_changed is not None
                and item.file.size > prev.size
                and await self._hash_source(root, item.file.relpath, prev.size, stop,
                                            prefix=True) == prev.blake3_hex):
            # The earlier copy was cut at its admitted size while the recording grew; this
            # is the same recording, complete now: stored as a record of its own, and not a
            # content change (the flagged prefix stays as it was).
            prev = None
        item.previous = prev

    async def _hash_source(self, root: bytes, relpath: bytes, size: int,
                           stop: threading.Event, *, prefix: bool = False) -> str | None:
        """BLAKE3 (hex) of a recorder file as it reads now, if it still has the listed size
        (reading is bounded by it: a file that keeps growing cannot hold this up); None if
        it cannot be read or its size changed. With `prefix`, of its first `size` bytes."""
        def digest() -> bytes | None:
            fd = open_source(root, relpath)
            try:
                hasher, n = hash_fd(fd, self._pool, stop, size)
                if n != size or (not prefix and os.fstat(fd).st_size != size):
                    return None
                return hasher.digest()
            finally:
                os.close(fd)

        try:
            got = await self._call(digest, stop=stop)
        except (OSError, OffloadError):
            return None
        return None if got is None else got.hex()

    def _still_needed(self, item: _Item) -> int:
        j = item.journal
        if j is not None and (j.source_size, j.source_mtime_ns) == (item.file.size,
                                                                    item.file.mtime_ns):
            return max(0, item.file.size - j.durable_len)
        return item.file.size

    async def _admit(
        self, items: list[_Item], capacity: int, summary: OffloadSummary
    ) -> tuple[int, list[_Item], list[_Item], str]:
        """Per file: the impossible are refused, the rest admitted in order while they fit.

        Returns the reservation token, the admitted items, those left for lack of room and
        what to say about them.
        An impossible file (larger than the recorder's whole storage, or sparse and larger
        than the dock could take) is the recorder's fault and never blocks the others.
        """
        reserve = self._settings.reserve_mib << 20
        sizes_known = any(i.file.blocks > 0 for i in items)
        async with self._space_lock:
            free = await self._call(free_bytes, self._store)
            others = sum(self._reserved.values())
            held = self._db.reserve.shortfall()  # given back on a full disk: not free
            room = free - reserve - others - held
            admitted: list[_Item] = []
            left: list[_Item] = []
            need = 0
            for item in items:
                why = self._impossible(item.file, capacity, room, sizes_known)
                if why is not None:
                    size = item.file.size  # as claimed: may exceed what JSON carries
                    summary.refused.append(FileProblem(item.file.relpath, why, detail={
                        "size": size if size <= MAX_SAFE_INT else str(size)}))
                    continue
                n = self._still_needed(item)
                if n > 0 and need + n > room:
                    left.append(item)
                    continue
                need += n
                admitted.append(item)
            missing = sum(self._still_needed(i) for i in left)
            summary.bytes_needed, summary.bytes_free = need + missing, free
            full = (f"dock storage full: {len(left)} files ({missing} bytes) do not fit:"
                    f" {need + missing} bytes to store + {reserve} reserve + {others}"
                    f" promised to other bays"
                    + (f" + {held} kept for the custody database" if held else "")
                    + f" > {free} free") if left else ""
            token = id(summary)
            self._reserved[token] = need
            return token, admitted, left, full

    @staticmethod
    def _impossible(f: SourceFile, capacity: int, room: int, sizes_known: bool) -> str | None:
        if capacity > 0 and f.size > capacity:
            return (f"claims {f.size} bytes, more than the recorder's whole storage"
                    f" ({capacity} bytes)")
        allocated = f.blocks * 512
        if sizes_known and allocated + SPARSE_SLACK < f.size and f.size > room:
            return (f"sparse: claims {f.size} bytes with {allocated} allocated, more than"
                    f" the dock has room for ({max(room, 0)} bytes)")
        return None

    def _spend(self, token: int, n: int) -> None:
        """Written bytes left the free space: stop counting them as promised too (else a
        long copy would keep other bays out twice over). Called from a copy thread; the
        loop only resets this token's promise when no copy of it is running."""
        left = self._reserved.get(token)
        if left is not None:
            self._reserved[token] = max(0, left - n)

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
            self._settings.buffers, self._settings.fdatasync_interval_s,
        )
        token = id(summary)  # the offload's admission promise (see _admit)
        hooks = _JournalHooks(self._db, serial, f.relpath, tracker,
                              lambda n: self._spend(token, n))
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
            summary.outcome, summary.detail = "storage_full", str(exc)
            await self._give_back(serial, f.relpath, partial, stop)
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
        wiper: Wiper | None, stop: threading.Event, claims: list[_Claim],
    ) -> None:
        """Verify, then maybe wipe, one committed file (overlaps the next file's copy)."""
        r = c.result
        verified = await self._verify(ctx, c.file_id, c.final, r, stop)
        prev = _replaced(c.item, r)
        changed = r.changed
        if changed is None and prev is not None:
            changed = f"content differs from the copy stored earlier (file {prev.id})"
        summary.stored.append(StoredFile(
            c.item.file.relpath, c.journal.stored_relpath, r.size, r.digest.hex(),
            r.resumed_from, c.late, changed, c.item.times.source, verified,
        ))
        if (wiper is not None and self._settings.wipe_after_offload
                and summary.outcome == "complete" and changed is None):
            if verified is None:  # not verified under the verify mode: a wipe still needs it
                verified = await self._verify_file(c.file_id, c.final, r.size, r.digest, stop)
            if verified:
                await self._wipe(wiper, ctx.identity.serial, c.file_id, c.item.file.relpath,
                                 r.size, r.digest, summary, claims)

    def _choose_relpath(self, ctx: DockingContext, item: _Item) -> str:
        """Final store path: layout path, disambiguated if another file already has it."""
        ident = ctx.identity_for(item.file.relpath)  # the officer who recorded it
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
        ident = ctx.identity_for(item.file.relpath)  # the officer who recorded it
        t = item.times
        end_us = current_us()
        # "dock": the recorder's times were out of range; the deadline runs from the
        # fallback (the offload), and no recording time is claimed on the record
        due = self._deadline.due(_us_to_dt(t.end_us))
        late_by = (_us_to_dt(end_us) - due).total_seconds()
        prev = _replaced(item, result)
        changed: dict[str, object] | None = None
        if result.changed is not None or prev is not None:
            changed = {"reason": result.changed or "content differs from the copy stored"
                       " at an earlier docking"}
            if prev is not None:
                changed["replaces"] = {"file_id": prev.id, "blake3": prev.blake3_hex,
                                       "size": prev.size, "stored_relpath": prev.stored_relpath}
        rejected = [r.as_dict() for r in t.rejected]
        rec = StoredFileRecord(
            recorder_serial=ident.serial, session_id=ctx.session_id, bay=ctx.bay,
            source_name=item.file.relpath, stored_relpath=j.stored_relpath, size=result.size,
            blake3_hex=result.digest.hex(), rec_start_us=t.start_us,
            rec_end_us=None if t.source == "dock" else t.end_us,
            offload_start_us=start_us, offload_end_us=end_us, unit_no=ident.unit_no,
            officer_no=ident.officer_no, officer_name=ident.officer_name, late=late_by > 0,
            late_by_s=max(0.0, late_by), deadline_us=int(due.timestamp() * 1_000_000),
            source_changed=changed, rejected_times=rejected or None,
        )
        who: dict[str, Any] = {"recorder": ident.serial, "officer": ident.officer_no,
                               "bay": ctx.bay, "session_id": ctx.session_id}
        name = display_name(item.file.relpath)

        def tx(conn: sqlite3.Connection) -> int:
            entry = commit_file(conn, self._ledger, rec)
            journal.remove(conn, ident.serial, item.file.relpath)
            file_id = int(entry.data["file_id"])
            if changed is not None:
                # The flag itself is on the index row; the fault tells the operators.
                why = (f"{name} changed while it was copied" if result.changed is not None
                       else f"{name} holds other content than the copy stored at an earlier"
                       f" docking (file {prev.id if prev else '?'})")
                raise_fault(
                    conn, self._ledger, FaultCode.FILE_CHANGED,
                    f"{why}; stored as read (a new version), flagged, not wiped",
                    **who, severity="warning",
                    detail={"file_id": file_id, "stored_relpath": j.stored_relpath,
                            "name": name, "change": changed},
                )
            if rejected:
                raise_fault(
                    conn, self._ledger, FaultCode.RECORDING_TIME_INVALID,
                    f"{name}: recording time from the recorder out of range; stored under"
                    f" the {t.source} date", **who, severity="warning",
                    detail={"file_id": file_id, "name": name, "rejected": rejected,
                            "time_source": t.source,
                            "files": [{"name": name, "reason": "; ".join(
                                f"{r['field']}={r['raw']}: {r['reason']}" for r in rejected)}]},
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
        summary: OffloadSummary, claims: list[_Claim],
    ) -> None:
        """Guarded delete on the recorder, bracketed so a crash cannot hide a deletion.

        The intent is durable before the command goes out. The recorder's "deleted" is a
        claim: the wipe record and the intent's removal commit together only once a fresh
        listing no longer shows the file (`_confirm_wipes`). If the agent dies in between,
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
        claims.append(_Claim(file_id, name))
        crashpoint.reached("wipe_sent")

    async def _confirm_wipes(
        self, wiper: Wiper, claims: list[_Claim], summary: OffloadSummary
    ) -> None:
        """Record as wiped only what the recorder no longer lists after its "deleted"."""
        if not claims:
            return
        try:
            present = set(await wiper.listed())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for c in claims:  # the intents stay: the next docking decides from the files
                summary.wipe_failed.append(FileProblem(
                    c.name, f"the recorder answered 'deleted', but could not be asked again"
                    f" ({type(exc).__name__}: {exc}); settled at its next docking",
                    detail={"file_id": c.file_id, "firmware_claim": "deleted"}))
            return
        for c in claims:
            # a recorder may list base names only (as its listing may, see `offload`)
            still = c.name in present or c.name.rpartition(b"/")[2] in present

            def record(conn: sqlite3.Connection, c: _Claim = c, still: bool = still) -> None:
                if not still:
                    mark_wiped(conn, self._ledger, c.file_id, detail={
                        "confirmed_by": "absent from the recorder's listing after its delete"})
                journal.settle_wipe(conn, c.file_id)

            await self._db.write(record)
            if not still:
                crashpoint.reached("wiped")
            if still:
                summary.wipe_failed.append(FileProblem(
                    c.name, "the recorder answered 'deleted', but still lists the file",
                    detail={"file_id": c.file_id, "firmware_claim": "deleted"}))
            else:
                summary.wiped.append(c.name)

    async def _record_lists(self, ctx: DockingContext, summary: OffloadSummary) -> None:
        """Every entry of a problem list too long for one fault goes into the ledger, in
        "entry_list" entries of at most LIST_CHUNK each; the fault points at them."""
        ident = ctx.identity
        for key, code in _LISTS:
            problems: list[FileProblem] = getattr(summary, key)
            if len(problems) <= FAULT_NAMES_MAX:
                continue
            chunks = [problems[i:i + LIST_CHUNK] for i in range(0, len(problems), LIST_CHUNK)]

            def tx(conn: sqlite3.Connection, key: str = key, code: FaultCode = code,
                   chunks: list[list[FileProblem]] = chunks, count: int = len(problems),
                   ) -> list[int]:
                return [self._ledger.append(
                    conn, EntryKind.ENTRY_LIST, recorder=ident.serial,
                    officer=ident.officer_no, bay=ctx.bay, session_id=ctx.session_id,
                    data={"list": key, "code": code.value, "part": n + 1,
                          "parts": len(chunks), "count": count,
                          "entries": [_problem_fields(p) for p in chunk]},
                ).seq for n, chunk in enumerate(chunks)]

            summary.listed[key] = await asyncio.shield(self._db.write(tx))

    async def _settle_wipes(
        self, root: bytes, serial: str, listing: Scan, summary: OffloadSummary,
        stop: threading.Event,
    ) -> None:
        """Settle deletes left undecided by a crash or a lost answer at an earlier docking.

        The file still on the recorder (same content, hashed now) was not deleted: the
        intent goes, and the normal rules may wipe it again. A file no longer there, or a
        name now holding other content, was deleted by that command: the wipe is recorded
        now, saying how it is known. A file below an entry the dock could not read proves
        nothing by its absence: its intent stays undecided.
        """
        present = {f.relpath: f for f in listing.files}
        refused = {r.relpath for r in listing.refused}
        intents = await self._db.read(lambda c: journal.wipe_intents(c, serial))
        walked = {os.fsencode(d.strip("/")) for d in self._settings.footage_dirs}
        for intent in intents:
            name = intent.source_name
            if name.split(b"/", 1)[0] not in walked:
                continue  # not looked at this time (footage_dirs changed): decide later
            if listing.covers_unread(name) or name in refused:
                continue  # could not be looked at this time: decide later
            file_id = intent.file_id
            stored = await self._db.read(lambda c: get_file(c, file_id))  # noqa: B023
            now = present.get(name)
            how: str | None = "absent from the recorder at its next docking"
            if now is not None and stored is not None:
                if now.size != stored.size:
                    how = "the name holds a file of another size at the next docking"
                else:
                    got = await self._hash_source(root, name, now.size, stop)
                    if got is None:
                        continue  # unreadable now: decide later
                    how = (None if got == stored.blake3_hex else
                           "the name holds other content at the next docking")

            def settle(conn: sqlite3.Connection, intent: journal.WipeIntent = intent,
                       how: str | None = how) -> None:
                row = get_file(conn, intent.file_id)
                if how is not None and row is not None and not row.wiped:
                    mark_wiped(conn, self._ledger, intent.file_id, detail={
                        "confirmed_by": how,
                        "interrupted_wipe_requested_at": intent.requested_at,
                    })
                journal.settle_wipe(conn, intent.file_id)

            await self._db.write(settle)
            if how is not None:
                summary.wiped.append(name)

    async def _wipe_stored(
        self, ctx: DockingContext, item: _Item, summary: OffloadSummary, wiper: Wiper | None,
        stop: threading.Event, claims: list[_Claim],
    ) -> None:
        """Wipe a file stored at an earlier docking whose content (hashed at this docking)
        matches it, once its stored copy is verified."""
        s = item.stored
        if (wiper is None or s is None or not self._settings.wipe_after_offload
                or s.verify_state == "failed" or s.wiped or item.never_wipe):
            return
        digest = bytes.fromhex(s.blake3_hex)
        if s.verify_state != "ok" and not await self._verify_file(
                s.id, self._store / s.stored_relpath, s.size, digest, stop):
            return
        await self._wipe(wiper, ctx.identity.serial, s.id, item.file.relpath, s.size, digest,
                         summary, claims)

    async def _give_back(
        self, serial: str, name: bytes, partial: Path, stop: threading.Event
    ) -> None:
        """The disk is full: the partial goes first (its space is what the database needs
        to record the rest); its journal row after, as far as the disk allows. A row left
        behind only makes the next docking start the file over."""
        await self._call(discard, partial, stop=stop)
        try:
            await self._db.write(lambda c: journal.remove(c, serial, name))
        except DatabaseFull:
            log.exception("disk full: the journal row of a discarded partial stays")

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
