"""Writes queued while the database thread is busy commit together (one COMMIT, one
fsync) in the order they were queued; each caller hears of its write only after that
COMMIT; a write that raises is rolled back alone, and an SQLite error makes every write
of the group run on its own again."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.store.db import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, v TEXT UNIQUE NOT NULL);"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "g.sqlite3", [SCHEMA])
    yield database
    database.close()


def insert(v: str) -> Callable[[sqlite3.Connection], int]:
    def tx(c: sqlite3.Connection) -> int:
        return int(c.execute("INSERT INTO t (v) VALUES (?) RETURNING seq", (v,)).fetchone()[0])
    return tx


def rows(db: Database) -> list[str]:
    return db.read_sync(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY seq")])


class Held:
    """Keeps the database thread busy until released, and counts COMMITs after it."""

    def __init__(self, db: Database) -> None:
        self.release = threading.Event()
        self.statements: list[str] = []
        db.read_sync(lambda c: c.set_trace_callback(self.statements.append))
        self._db = db

    def hold(self) -> None:
        started = threading.Event()

        def busy(_: sqlite3.Connection) -> None:
            started.set()
            self.release.wait(120)

        self.job = self._db._executor.submit(self._db._run_read, busy)
        assert started.wait(120)
        self.statements.clear()

    def commits(self) -> int:
        return sum(1 for s in self.statements if s.strip().upper() == "COMMIT")


async def test_queued_writes_commit_once_in_order(db: Database) -> None:
    held = Held(db)
    held.hold()
    futures = [db.queue_write(insert(f"w{i}")) for i in range(20)]
    threads = [threading.Thread(target=db.write_sync, args=(insert(f"s{i}"),))
               for i in range(5)]
    for t in threads:
        t.start()
    while len(db._queued) < 25:  # the copy threads' writes are queued too
        await asyncio.sleep(0.01)
    assert not any(f.done() for f in futures)  # nothing reported before its COMMIT
    held.release.set()
    seqs = await asyncio.gather(*futures)
    for t in threads:
        t.join(120)
    assert seqs == sorted(seqs)
    assert rows(db)[:20] == [f"w{i}" for i in range(20)]
    assert sorted(rows(db)[20:]) == sorted(f"s{i}" for i in range(5))
    assert held.commits() == 1


async def test_a_failing_write_is_rolled_back_alone(db: Database) -> None:
    held = Held(db)
    held.hold()

    def half_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t (v) VALUES ('half')")
        raise ValueError("refused")

    first = db.queue_write(insert("a"))
    bad = db.queue_write(half_then_fail)
    last = db.queue_write(insert("b"))
    held.release.set()
    await first
    with pytest.raises(ValueError, match="refused"):
        await bad
    await last
    assert rows(db) == ["a", "b"]
    assert held.commits() == 1


async def test_an_sqlite_error_runs_the_group_one_by_one(db: Database) -> None:
    await db.write(insert("taken"))
    held = Held(db)
    held.hold()
    first = db.queue_write(insert("x"))
    dup = db.queue_write(insert("taken"))  # UNIQUE: an SQLite error
    last = db.queue_write(insert("y"))
    held.release.set()
    await first
    with pytest.raises(sqlite3.IntegrityError):
        await dup
    await last
    assert rows(db) == ["taken", "x", "y"]


async def test_a_cancelled_write_never_happens(db: Database) -> None:
    held = Held(db)
    held.hold()
    gone = asyncio.ensure_future(db.write(insert("never")))
    kept = db.queue_write(insert("kept"))
    while len(db._queued) < 2:
        await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.wait([gone])  # its cancellation has reached the queued write
    held.release.set()
    await kept
    assert rows(db) == ["kept"]
