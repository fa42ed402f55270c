"""Fixtures for the end-to-end tests: a real mosquitto with TLS and ACLs (the MQTT suite's
broker, imported), a central MQTT client, and a `Rig` per test whose agent process and
virtual dock are torn down even when the test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mqtt.broker import Broker, Pki  # tests/mqtt: the shared broker fixture code
from tests.mqtt.central import Central

from .harness import Rig

DOCK_ID = "dock-e2e"
IDENTITIES = [DOCK_ID, "central", "dock-other"]


@pytest.fixture(scope="session")
def e2e_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("e2e-pki"), IDENTITIES)


@pytest.fixture
def broker(tmp_path: Path, e2e_pki: Pki) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", e2e_pki)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[Central]:
    c = await Central(broker.settings("central")).start()
    yield c
    await c.stop()


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    def make(mqtt: Any = None, name: str = "dock", **kw: Any) -> Rig:
        rig = Rig(tmp_path / name, DOCK_ID, mqtt, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        if rig.agent.proc is not None and rig.agent.running():
            rig.agent.kill9()
        if rig.dock is not None:
            await rig.dock.stop()
