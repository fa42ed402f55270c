"""Fixtures of the firmware tests: a dock rig (the real agent process, a virtual dock of
simulated recorders over ptys, SQLite) configured with the simulator's vendor key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import IDENTITIES
from tests.e2e.harness import Rig, stop_rigs

from .fwrig import firmware_section

FirmwareRigFactory = Callable[..., Rig]


@pytest.fixture
def broker_identities() -> Sequence[str]:
    return IDENTITIES  # the e2e dock's broker identities (tests/conftest.py's broker)


@pytest.fixture
async def make_fw_rig(tmp_path: Path) -> AsyncIterator[FirmwareRigFactory]:
    rigs: list[Rig] = []

    def make(name: str = "dock", firmware: dict[str, Any] | None = None, mqtt: Any = None,
             dock_id: str = "dock-fw", **kw: Any) -> Rig:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        extra = {"firmware": firmware_section(root, **(firmware or {}))}
        rig = Rig(root, dock_id, mqtt, extra=extra, **kw)
        rigs.append(rig)
        return rig

    yield make
    await stop_rigs(rigs)
