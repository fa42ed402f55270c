"""Fixtures for the custody store tests: a real SQLite file, a real key, a real store dir."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner

from .store_helpers import DOCK, T0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "dock.sqlite3"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(db_path, ALL_SCHEMAS)
    yield database
    database.close()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "dock.key"


@pytest.fixture
def signer(key_path: Path) -> CheckpointSigner:
    return CheckpointSigner.from_file(key_path)


@pytest.fixture
def ledger(signer: CheckpointSigner) -> Ledger:
    return Ledger(DOCK, signer, checkpoint_every=4)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "evidence"
    root.mkdir()
    return root


@pytest.fixture
def append_n(db: Database, ledger: Ledger) -> Callable[[int], None]:
    def go(n: int) -> None:
        def fn(c: sqlite3.Connection) -> None:
            for i in range(n):
                ledger.append(c, "docked", recorder=f"SER{i % 3:05d}", officer="007",
                              bay="bay-1", session_id=f"s{i}", data={"i": i}, now_us=T0 + i)
        db.write_sync(fn)
    return go
