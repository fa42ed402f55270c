"""Shared values for the simulator tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.devices.events import DeviceEvent
from agent.devices.sim_source import SimDeviceSource
from agent.settings import AllowedDevice, DeviceSettings
from firmware_bridge.client import RecorderClient
from hw_sim import fusemount
from hw_sim.recorder import VirtualRecorder
from hw_sim.spec import SIM_USB_PID, SIM_USB_VID, FootageSpec, RecorderSpec

START_MS = 1_795_000_000_000  # fixed recording start, so specs compare equal across tests
SMALL = FootageSpec(count=3, size_bytes=256 * 1024, seed=7, start_ms=START_MS)

StartRecorder = Callable[..., Awaitable[VirtualRecorder]]  # fixture start_recorder
OpenClient = Callable[..., Awaitable[RecorderClient]]  # fixture open_client

needs_fuse = pytest.mark.skipif(
    not fusemount.fuse_available(), reason="needs /dev/fuse and fusermount3"
)


SIM_ALLOW = AllowedDevice(vid=SIM_USB_VID, pid=SIM_USB_PID, serial_pattern="[A-Z0-9]{8}")


def sim_devices(**overrides: object) -> DeviceSettings:
    """Device settings that allow dock-sim's recorders; unplugs are not debounced unless a
    test asks for a window."""
    base: dict[str, object] = {"source": "sim", "allow": [SIM_ALLOW], "debounce_ms": 0}
    return DeviceSettings(**(base | overrides))  # type: ignore[arg-type]


def small_spec(serial: str = "BWC00001", **kw: object) -> RecorderSpec:
    kw.setdefault("footage", SMALL)
    return RecorderSpec(serial=serial, **kw)  # type: ignore[arg-type]


class Collector:
    """Runs a SimDeviceSource and lets tests wait for the events it emits."""

    def __init__(self, sock: Path, settings: DeviceSettings | None = None) -> None:
        self.source = SimDeviceSource(settings or sim_devices(), sock, retry_interval_s=0.02)
        self.events: list[DeviceEvent] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self.source.run(self._emit))

    def _emit(self, ev: DeviceEvent) -> None:
        self.events.append(ev)
        self._changed.set()

    async def wait_for(self, n: int, timeout: float = 60.0) -> list[DeviceEvent]:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.events

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
