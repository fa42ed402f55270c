"""The agent's one SQLite database: ledger, evidence index, outbox, offload journal, faults.

All access goes through one dedicated thread that owns the connection, so a commit's fsync
(`synchronous=FULL`) never blocks the event loop and writes are serialised without locks.
`write()` runs a function inside `BEGIN IMMEDIATE ... COMMIT`: everything it does commits
together or not at all (a ledger entry and its outbox event, for example).
Read-only users (dockctl) open the file with `open_readonly()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agent.store.group_commit import GroupAborted, run_group

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


DB_RESERVE_BYTES = 4 << 20  # room kept for the ledger and outbox when the disk fills


class DatabaseError(Exception):
    """The state database could not be opened or used."""


class DatabaseFull(DatabaseError):
    """The disk holding the database is full, even after its reserve was given back."""


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc))


class SpaceReserve:
    """A pre-allocated file beside the database, given back when the disk is full.

    Whatever fills the disk (a copy, a log, another program), the custody ledger and its
    outbox must still be able to record that it happened: on SQLITE_FULL the reserve is
    deleted and the transaction retried; it is allocated again once there is room
    (twice its size free), at start-up or after a later write. While it is given back,
    its bytes are not free space for anything else: offload admission still counts them,
    and running copies stop as on a full disk (`holds()`).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.released = True
        self._lock = threading.Lock()  # the database thread and copy threads ask

    def holds(self) -> bool:
        """True unless the reserve is given back and cannot be taken again yet."""
        return self.size <= 0 or not self.released or self.ensure()

    def shortfall(self) -> int:
        """Bytes the reserve is missing (to be kept free for it)."""
        return self.size if self.size > 0 and self.released else 0

    def ensure(self) -> bool:
        """Allocate the reserve if it is not there and the disk has room; True if held."""
        if self.size <= 0:
            return False
        with self._lock:
            return self._ensure()

    def _ensure(self) -> bool:
        if not self.released:
            return True
        try:
            st = os.statvfs(self.path.parent)
            have = 0
            with contextlib.suppress(FileNotFoundError):
                have = self.path.stat().st_size
            if have < self.size and st.f_bavail * st.f_frsize < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot allocate the database space reserve %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        self.released = False
        return True

    def release(self) -> bool:
        """Give the space back; True if there was something to give."""
        if self.size <= 0:
            return False
        with self._lock:
            return self._release()

    def _release(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            was_held = not self.released
            self.released = True
            return was_held
        except OSError:
            log.exception("cannot release the database space reserve %s", self.path)
            return False
        self.released = True
        log.warning("disk full: released the database space reserve (%d bytes) so that "
                    "custody records can still be written", self.size)
        return True


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the database for reading only (dockctl, verify). Never creates the file."""
    if not path.exists():
        raise DatabaseError(f"state database {path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Database:
    """Owner of the read-write connection; every call runs on its private thread."""

    def __init__(self, path: Path, schemas: Sequence[str], *, reserve_bytes: int = 0) -> None:
        self.path = path
        self.reserve = SpaceReserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None
        # Called on the event loop after every committed write (e.g. wake the publisher:
        # a ledger entry's outbox event is ready to send).
        self._on_commit: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Writes waiting for the database thread, committed as one group (group_commit.py).
        self._queued: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._queue_lock = threading.Lock()
        self._group_pending = False  # a group job is queued and has not taken its writes
        self._executor.submit(self._open, schemas).result()

    def _open(self, schemas: Sequence[str]) -> None:
        self._thread_id = threading.get_ident()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open state database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        _configure(conn)
        self._conn = conn
        self.reserve.ensure()

        def create(c: sqlite3.Connection) -> None:
            for ddl in schemas:
                for statement in _split_statements(ddl):
                    c.execute(statement)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        try:
            self._run_tx(create, notify=False)
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the calling event loop after each committed write."""
        self._loop = asyncio.get_running_loop()
        self._on_commit = callback

    def _run_tx(self, fn: Callable[[sqlite3.Connection], T], *, notify: bool = True) -> T:
        """One transaction; on a full disk, once more after releasing the reserve."""
        retried = False
        try:
            result = self._tx_once(fn)
        except sqlite3.Error as exc:
            if not _is_full(exc):
                raise
            if not self.reserve.release():
                raise DatabaseFull(f"state database {self.path}: disk full: {exc}") from exc
            retried = True
            try:
                result = self._tx_once(fn)
            except sqlite3.Error as again:
                if _is_full(again):
                    raise DatabaseFull(
                        f"state database {self.path}: disk full: {again}") from again
                raise
        self._committed(notify=notify, reserve=not retried)
        return result

    def _committed(self, *, notify: bool = True, reserve: bool = True) -> None:
        if reserve and self.reserve.released:
            self.reserve.ensure()  # space came back: hold the reserve again
        callback, loop = self._on_commit, self._loop
        if notify and callback is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def _queue(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a write for the next group commit (in the order queued)."""
        fut: Future[T] = Future()
        with self._queue_lock:
            if not self._group_pending:
                self._executor.submit(self._commit_group)
                self._group_pending = True
            self._queued.append((fn, fut))
        return fut

    def _commit_group(self) -> None:
        with self._queue_lock:
            queued, self._queued = self._queued, []
            self._group_pending = False
        writes = [(fn, fut) for fn, fut in queued if fut.set_running_or_notify_cancel()]
        if len(writes) > 1:
            try:
                outcomes = run_group(self._connection(), [fn for fn, _ in writes])
            except GroupAborted:
                pass  # nothing was kept: each write on its own, below
            except BaseException as exc:
                for _, fut in writes:
                    fut.set_exception(exc)
                return
            else:
                self._committed()
                for (_, fut), (ok, value) in zip(writes, outcomes, strict=True):
                    if ok:
                        fut.set_result(value)
                    else:
                        assert isinstance(value, BaseException)
                        fut.set_exception(value)
                return
        for fn, fut in writes:
            try:
                fut.set_result(self._run_tx(fn))
            except BaseException as exc:
                fut.set_exception(exc)

    def _connection(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _tx_once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) leaves the transaction open: end it, or every
            # later BEGIN would fail and the database would be wedged for good.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        return fn(conn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one committed transaction, off the event loop."""
        return await self.queue_write(fn)

    def queue_write(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`write()` queued now, before any write asked for later (writes run one at a
        time, in the order queued); the future completes when it committed."""
        return asyncio.wrap_future(self._queue(fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` for reading, off the event loop."""
        return await asyncio.wrap_future(self._executor.submit(self._run_read, fn))

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking `write()` for threads that are not the event loop (workers, tools)."""
        if threading.get_ident() == self._thread_id:
            return self._run_tx(fn)  # already on the db thread (nested use)
        return self._queue(fn).result()

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._call(self._run_read, fn)

    def _call(
        self,
        runner: Callable[[Callable[[sqlite3.Connection], T]], T],
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        if threading.get_ident() == self._thread_id:
            return runner(fn)  # already on the db thread (nested use)
        fut: Future[T] = self._executor.submit(runner, fn)
        return fut.result()

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)


def _split_statements(ddl: str) -> list[str]:
    """Split a DDL script into complete statements (executescript would COMMIT implicitly)."""
    out: list[str] = []
    buf = ""
    for line in ddl.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise DatabaseError(f"incomplete SQL statement in schema: {buf.strip()[:80]}")
    return out
