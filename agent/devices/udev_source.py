"""Recorders from udev: the pyudev adapter around `DeviceTracker`.

The monitor is created and started before the devices already present are enumerated,
so nothing plugged in during start-up is missed; a device seen both ways is handled once
because the tracker treats a repeated add as no news. The monitor's socket is read on the
event loop (`add_reader`, non-blocking polls drained in the callback); the debounce
deadlines are `TrackerFeed` timers on the same loop. All decisions live in `matching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from typing import Any

import pyudev

from agent.devices.errors import DeviceSourceError
from agent.devices.feed import Emit, TrackerFeed
from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord
from agent.settings import DeviceSettings

log = logging.getLogger(__name__)

SUBSYSTEMS = ("usb", "tty", "block")  # enumerated in this order: parents before children
_USB_ATTRIBUTES = ("idVendor", "idProduct", "serial", "bDeviceClass")
_RECEIVE_BUFFER = 4 * 1024 * 1024  # a dock full of recorders plugged at once is a burst


def _attributes(device: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _USB_ATTRIBUTES:
        try:
            value = device.attributes.get(name)
        except (OSError, KeyError, UnicodeDecodeError):
            continue
        if isinstance(value, bytes):
            out[f"ATTR{{{name}}}"] = value.decode("utf-8", "replace").strip()
    return out


def _usb_properties(device: Any) -> dict[str, str]:
    props = {str(k): str(v) for k, v in device.properties.items()}
    props.setdefault("DEVPATH", device.device_path)
    props.update(_attributes(device))
    return props


def to_record(device: Any, action: str | None = None) -> DeviceRecord:
    """Convert a `pyudev.Device` into the tracker's plain record."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    props["ACTION"] = action or device.action or "add"
    props.setdefault("DEVPATH", device.device_path)
    if device.subsystem:
        props.setdefault("SUBSYSTEM", device.subsystem)
    if props["ACTION"] == "remove":  # the parent is gone from sysfs; the tracker remembers
        return DeviceRecord(props)
    if props.get("SUBSYSTEM") == "usb" and props.get("DEVTYPE") == "usb_device":
        usb = _usb_properties(device)
        props.update(usb)
        return DeviceRecord(props, usb)
    parent = device.find_parent("usb", "usb_device")
    return DeviceRecord(props, _usb_properties(parent) if parent is not None else None)


def coldplug_records(context: Any) -> list[DeviceRecord]:
    """Records for every relevant device present now (runs in a worker thread)."""
    records: list[DeviceRecord] = []
    for subsystem in SUBSYSTEMS:
        for device in context.list_devices(subsystem=subsystem):
            try:
                records.append(to_record(device, "add"))
            except (OSError, pyudev.DeviceNotFoundError):  # left while we looked
                continue
    return records


def _open_monitor(context: Any, netlink_source: str) -> Any:
    """A started udev monitor for our subsystems, with a burst-sized receive buffer."""
    try:
        monitor = pyudev.Monitor.from_netlink(context, netlink_source)
        for subsystem in SUBSYSTEMS:
            monitor.filter_by(subsystem)
        with contextlib.suppress(OSError, ValueError):  # needs CAP_NET_ADMIN
            monitor.set_receive_buffer_size(_RECEIVE_BUFFER)
        monitor.start()
    except (OSError, ValueError) as exc:
        raise DeviceSourceError(f"cannot listen to udev events: {exc}") from exc
    return monitor


class _MonitorReader:
    """Reads the monitor's socket on the loop and feeds its records; re-enumerates
    everything when the kernel reports lost events (ENOBUFS)."""

    def __init__(self, monitor: Any, feed: TrackerFeed) -> None:
        self._monitor = monitor
        self._feed = feed
        self._loop = asyncio.get_running_loop()
        self._fd: int = monitor.fileno()
        self._resyncing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._on_readable)
        self._on_readable()  # whatever queued up before

    async def stop(self) -> None:
        if self._resyncing is not None:  # first: its own cleanup re-adds the reader
            self._resyncing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resyncing
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)

    async def _resync(self) -> None:
        # Stop reading while a fresh enumeration is taken and applied, so that no event
        # newer than the snapshot is undone by it; queued events follow afterwards.
        self._loop.remove_reader(self._fd)
        try:
            records = await asyncio.to_thread(coldplug_records, pyudev.Context())
            self._feed.resync(records)
        finally:
            self._loop.add_reader(self._fd, self._on_readable)

    def _lost_events(self, exc: OSError) -> None:
        if exc.errno == errno.ENOBUFS and (self._resyncing is None or self._resyncing.done()):
            log.warning("udev events were lost (burst); re-reading all devices")
            self._resyncing = asyncio.create_task(self._resync())
        else:
            log.warning("udev monitor read failed: %s", exc)

    def _on_readable(self) -> None:
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                self._lost_events(exc)
                return
            if device is None:
                return
            try:
                record = to_record(device)
            except (OSError, pyudev.DeviceNotFoundError) as exc:
                log.info("udev device vanished while being read: %s", exc)
                continue
            self._feed.handle(record)


class UdevDeviceSource:
    """Emits the domain events of recorders docked in USB bays, from udev."""

    def __init__(
        self,
        settings: DeviceSettings,
        *,
        context: pyudev.Context | None = None,
        netlink_source: str = "udev",
    ) -> None:
        # netlink_source="kernel" listens to raw kernel uevents instead of udevd's; they lack
        # udev's ID_* properties (no storage is ever identified), so it is for tests only.
        self._context = context
        self._netlink_source = netlink_source
        self.tracker = DeviceTracker(settings)  # validates the settings now, not at run()
        self.ready = asyncio.Event()  # set once present devices are handled and we listen

    async def run(self, emit: Emit) -> None:
        """Detect until cancelled; the monitor is released on the way out."""
        context = self._context or pyudev.Context()
        # The monitor listens before the enumeration, so nothing plugged meanwhile is missed.
        monitor = _open_monitor(context, self._netlink_source)
        feed = TrackerFeed(self.tracker, emit)
        reader = _MonitorReader(monitor, feed)
        try:
            for record in await asyncio.to_thread(coldplug_records, context):
                feed.handle(record)
            reader.start()
            self.ready.set()
            await asyncio.Event().wait()
        finally:
            self.ready.clear()
            await reader.stop()
            feed.close()
            # libudev closes the socket when the last reference to the monitor goes; drop
            # ours now rather than whenever the traceback holding this frame is freed.
            del reader, monitor
