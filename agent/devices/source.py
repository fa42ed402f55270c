"""The device source interface: where recorders come from.

A device source watches one origin of device records (udev, or the dock-sim simulator)
and drives a `DeviceTracker` with them through a `TrackerFeed`; both sources are thin
shells, and every decision (allowlist, bays, pairing, debounce) is the tracker's.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from agent.devices.feed import Emit
from agent.settings import DeviceSettings


class DeviceSource(Protocol):
    """`run` detects until cancelled, handing domain events to `emit`; `ready` is set while
    the devices present at start have been reported and new ones are being followed."""

    ready: asyncio.Event

    async def run(self, emit: Emit) -> None: ...


def open_device_source(settings: DeviceSettings) -> DeviceSource:
    """The configured source; its settings (allowlist, bays) are checked now, not at run."""
    if settings.source == "sim":
        from agent.devices.sim_source import SimDeviceSource

        return SimDeviceSource(settings)
    from agent.devices.udev_source import UdevDeviceSource  # imports pyudev: udev docks only

    return UdevDeviceSource(settings)
