"""Fixtures shared by the suites: a real mosquitto with TLS PKI and ACL (tests/mqtt/broker.py),
a central MQTT client, and the agent's SQLite database in the test's temp dir.

A suite chooses what differs by overriding a small fixture in its own conftest:
`broker_identities` (the client certificates the PKI issues) and `db_schemas` (the tables
the database gets; all of the agent's by default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from tests.mqtt.broker import Broker, Pki
from tests.mqtt.central import Central


@pytest.fixture(scope="session")
def make_pki(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Sequence[str]], Pki]:
    """One PKI per set of identities per test session (key generation is slow)."""
    made: dict[tuple[str, ...], Pki] = {}

    def make(identities: Sequence[str]) -> Pki:
        key = tuple(identities)
        if key not in made:
            made[key] = Pki.create(tmp_path_factory.mktemp("pki"), list(key))
        return made[key]

    return make


@pytest.fixture
def broker_identities() -> Sequence[str]:
    return ("dock-A", "dock-B", "central")


@pytest.fixture
def pki(make_pki: Callable[[Sequence[str]], Pki], broker_identities: Sequence[str]) -> Pki:
    return make_pki(broker_identities)


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", pki)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[Central]:
    c = await Central(broker.settings("central")).start()
    yield c
    await c.stop()


@pytest.fixture
def db_schemas() -> Sequence[str]:
    return ALL_SCHEMAS


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "dock.sqlite3"


@pytest.fixture
def db(db_path: Path, db_schemas: Sequence[str]) -> Iterator[Database]:
    database = Database(db_path, db_schemas)
    yield database
    database.close()
