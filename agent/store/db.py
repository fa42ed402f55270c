"""The agent's one SQLite database: ledger, evidence index, outbox, offload journal, faults.

All access goes through one dedicated thread that owns the connection, so a commit's fsync
(`synchronous=FULL`) never blocks the event loop and writes are serialised without locks.
`write()` runs a function inside `BEGIN IMMEDIATE ... COMMIT`: everything it does commits
together or not at all (a ledger entry and its outbox event, for example).
Read-only users (dockctl) open the file with `open_readonly()`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 1


class DatabaseError(Exception):
    """The state database could not be opened or used."""


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

    def __init__(self, path: Path, schemas: Sequence[str]) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None
        # Called on the event loop after every committed write (e.g. wake the publisher:
        # a ledger entry's outbox event is ready to send).
        self._on_commit: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ddl in schemas:
                for statement in _split_statements(ddl):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._conn = conn

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the calling event loop after each committed write."""
        self._loop = asyncio.get_running_loop()
        self._on_commit = callback

    def _run_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        callback, loop = self._on_commit, self._loop
        if callback is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)
        return result

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        assert conn is not None
        return fn(conn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one committed transaction, off the event loop."""
        return await asyncio.wrap_future(self._executor.submit(self._run_tx, fn))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` for reading, off the event loop."""
        return await asyncio.wrap_future(self._executor.submit(self._run_read, fn))

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking `write()` for threads that are not the event loop (workers, tools)."""
        return self._call(self._run_tx, fn)

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
