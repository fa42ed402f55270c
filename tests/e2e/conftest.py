"""Fixtures for the end-to-end tests: the shared broker, PKI and central client of
tests/conftest.py (with this suite's identities), and a `Rig` per test whose agent process and
virtual dock are torn down even when the test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from .harness import Rig, stop_rigs

DOCK_ID = "dock-e2e"
IDENTITIES = [DOCK_ID, "central", "dock-other"]


@pytest.fixture
def broker_identities() -> Sequence[str]:
    return IDENTITIES  # the broker, PKI and central client: tests/conftest.py


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    def make(mqtt: Any = None, name: str = "dock", **kw: Any) -> Rig:
        rig = Rig(tmp_path / name, DOCK_ID, mqtt, **kw)
        rigs.append(rig)
        return rig

    yield make
    await stop_rigs(rigs)
