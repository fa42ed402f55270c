"""Fixtures for the simulator tests: recorders on real ptys, clients, FUSE guard."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_bridge.client import RecorderClient
from hw_sim import blockvolume, fusemount
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import RecorderSpec

from .sim_helpers import OpenClient, StartRecorder


@pytest.fixture
async def start_recorder(tmp_path: Path) -> AsyncIterator[StartRecorder]:
    """Start recorders in tmp_path; every one is stopped (and unmounted) at teardown."""
    started: list[VirtualRecorder] = []

    async def start(spec: RecorderSpec, **kw: object) -> VirtualRecorder:
        rec = VirtualRecorder(spec, tmp_path, **kw)  # type: ignore[arg-type]
        started.append(rec)
        await rec.start()
        return rec

    try:
        yield start
    finally:
        for rec in started:
            await rec.stop()
        for mp in list(fusemount._live):
            fusemount.unmount_sync(Path(mp))
        leftover = [mp for mp in fusemount._live if os.path.ismount(mp)]
        assert not leftover, f"FUSE mounts left behind: {leftover}"
        assert not blockvolume._live, f"loop devices left behind: {list(blockvolume._live)}"


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """Open RecorderClients (hello + authenticate by default); closed at teardown."""
    clients: list[RecorderClient] = []

    async def open_(tty: str, *, auth: bool = True, timeout: float = 2.0,
                    retries: int = 2) -> RecorderClient:
        c = await RecorderClient.open(tty, timeout=timeout, retries=retries)
        clients.append(c)
        if auth:
            await c.hello()
            await c.authenticate(DEFAULT_FLEET_SECRET)
        return c

    try:
        yield open_
    finally:
        for c in clients:
            await c.close()
