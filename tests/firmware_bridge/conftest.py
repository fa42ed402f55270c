"""Fixtures: an in-memory recorder behind the real DeviceEndpoint, served on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from bridge_helpers import SECRET, Device, MemoryRecorder

from firmware_bridge.client import RecorderClient
from hw_sim.endpoint import DeviceEndpoint, DeviceServer, open_pty


@pytest.fixture
def recorder() -> MemoryRecorder:
    return MemoryRecorder()


@pytest.fixture
async def device(recorder: MemoryRecorder) -> AsyncIterator[Device]:
    pty = open_pty()
    endpoint = DeviceEndpoint(recorder, SECRET)
    dev = Device(pty, recorder, endpoint, None, None)  # type: ignore[arg-type]
    dev.server = DeviceServer(pty.master_fd, endpoint, reply_filter=dev.filter)
    dev.task = asyncio.create_task(dev.server.run())
    try:
        yield dev
    finally:
        await dev.server.aclose()
        dev.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dev.task
        dev.pty.close()


@pytest.fixture
async def client(device: Device) -> AsyncIterator[RecorderClient]:
    # Generous timeout: passing must not depend on machine speed.
    c = await RecorderClient.open(device.pty.slave_path, timeout=5.0, retries=2)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def authed(client: RecorderClient) -> RecorderClient:
    await client.hello()
    await client.authenticate(SECRET)
    return client
