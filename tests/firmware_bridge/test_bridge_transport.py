"""SerialLink over a real pty: back-pressured writes, reads, and loss of the port."""

from __future__ import annotations

import asyncio
import os

import pytest

from firmware_bridge.errors import LinkClosed
from firmware_bridge.transport import SerialLink
from hw_sim.endpoint import open_pty

GUARD = 30.0


async def test_large_write_survives_back_pressure() -> None:
    pty = open_pty()
    try:
        received = bytearray()
        arrived = asyncio.Event()

        def on_data(data: bytes) -> None:
            received.extend(data)
            if len(received) >= 15:
                arrived.set()

        link = await SerialLink.open(pty.slave_path, 115200, on_data, lambda r: None)
        payload = os.urandom(1 << 20)  # far more than a pty buffers: forces EAGAIN
        link.write(payload)
        got = bytearray()
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def drain() -> None:
            try:
                got.extend(os.read(pty.master_fd, 65536))
            except BlockingIOError:
                return
            if len(got) >= len(payload):
                done.set()

        loop.add_reader(pty.master_fd, drain)
        try:
            await asyncio.wait_for(done.wait(), GUARD)
        finally:
            loop.remove_reader(pty.master_fd)
        assert bytes(got) == payload

        os.write(pty.master_fd, b"from the device")
        await asyncio.wait_for(arrived.wait(), GUARD)
        assert bytes(received) == b"from the device"
        await link.aclose()
        await link.aclose()  # idempotent
        with pytest.raises(LinkClosed):
            link.write(b"x")
    finally:
        pty.close()


async def test_port_loss_is_reported_once() -> None:
    pty = open_pty()
    lost: list[str] = []
    gone = asyncio.Event()

    def on_lost(reason: str) -> None:
        lost.append(reason)
        gone.set()

    link = await SerialLink.open(pty.slave_path, 115200, lambda d: None, on_lost)
    pty.close()  # unplug
    await asyncio.wait_for(gone.wait(), GUARD)
    assert len(lost) == 1 and not link.is_open
    with pytest.raises(LinkClosed):
        link.write(b"x")
    await link.aclose()
    assert len(lost) == 1
