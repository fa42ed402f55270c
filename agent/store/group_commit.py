"""Group commit: the writes queued while the database thread was busy, in one transaction.

With `synchronous=FULL` every COMMIT is an fsync. While many bays offload, their copy
checkpoints commit one after another and each write waits for every fsync queued before
it; a docking's custody entry waited behind them for hundreds of milliseconds. The
database thread therefore takes every write queued so far and runs them in one
`BEGIN IMMEDIATE ... COMMIT`, each inside its own SAVEPOINT, in the order they were
queued. A write whose function raises (not an SQLite error) is rolled back alone and gets
its error; the others commit together. No caller hears of its write before that COMMIT,
so "committed" still means durable. An SQLite error (a full disk, a constraint, an error
that ended the transaction) rolls the whole group back, and the caller runs each write on
its own again, with the single-write handling (the full-disk reserve among it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence

SAVEPOINT = "queued_write"

# (committed, the function's value) or (rolled back, the exception it raised)
Outcome = tuple[bool, object]


class GroupAborted(Exception):
    """The group transaction was rolled back as a whole: run its writes one by one."""


def run_group(conn: sqlite3.Connection,
              writes: Sequence[Callable[[sqlite3.Connection], object]]) -> list[Outcome]:
    """Run `writes` in one transaction; GroupAborted if nothing of it was kept."""
    conn.execute("BEGIN IMMEDIATE")
    outcomes: list[Outcome] = []
    try:
        for fn in writes:
            conn.execute(f"SAVEPOINT {SAVEPOINT}")
            try:
                value = fn(conn)
            except sqlite3.Error:
                raise
            except Exception as exc:
                _undo_one(conn)
                outcomes.append((False, exc))
            else:
                conn.execute(f"RELEASE {SAVEPOINT}")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except Exception as exc:
        _rollback(conn)
        raise GroupAborted(f"group transaction rolled back: {exc}") from exc
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def _undo_one(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:  # the error ended the transaction: nothing left to keep
        raise GroupAborted("the transaction ended inside a write")
    conn.execute(f"ROLLBACK TO {SAVEPOINT}")
    conn.execute(f"RELEASE {SAVEPOINT}")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
