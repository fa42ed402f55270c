"""Recorders from udev: the pyudev adapter around `DeviceTracker`.

The monitor is created and started before the devices already present are enumerated,
so nothing plugged in during start-up is missed; a device seen both ways is handled once
because the tracker treats a repeated add as no news. The monitor's socket is read on the
event loop (`add_reader`, non-blocking polls drained in the callback); the debounce
deadlines are `call_at` timers on the same loop. All decisions live in `matching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pyudev

from agent.devices.errors import DeviceSourceError
from agent.devices.events import DeviceEvent
from agent.devices.matching import DeviceTracker, UdevRecord
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


def to_record(device: Any, action: str | None = None) -> UdevRecord:
    """Convert a `pyudev.Device` into the tracker's plain record."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    props["ACTION"] = action or device.action or "add"
    props.setdefault("DEVPATH", device.device_path)
    if device.subsystem:
        props.setdefault("SUBSYSTEM", device.subsystem)
    if props["ACTION"] == "remove":  # the parent is gone from sysfs; the tracker remembers
        return UdevRecord(props)
    if props.get("SUBSYSTEM") == "usb" and props.get("DEVTYPE") == "usb_device":
        usb = _usb_properties(device)
        props.update(usb)
        return UdevRecord(props, usb)
    parent = device.find_parent("usb", "usb_device")
    return UdevRecord(props, _usb_properties(parent) if parent is not None else None)


def coldplug_records(context: Any) -> list[UdevRecord]:
    """Records for every relevant device present now (runs in a worker thread)."""
    records: list[UdevRecord] = []
    for subsystem in SUBSYSTEMS:
        for device in context.list_devices(subsystem=subsystem):
            try:
                records.append(to_record(device, "add"))
            except (OSError, pyudev.DeviceNotFoundError):  # left while we looked
                continue
    return records


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
        self._settings = settings
        self._context = context
        self._netlink_source = netlink_source
        self.tracker = DeviceTracker(settings)  # validates the settings now, not at run()
        self.ready = asyncio.Event()  # set once present devices are handled and we listen

    async def run(self, emit: Callable[[DeviceEvent], None]) -> None:
        """Detect until cancelled; the monitor is released on the way out."""
        loop = asyncio.get_running_loop()
        context = self._context or pyudev.Context()
        try:
            monitor = pyudev.Monitor.from_netlink(context, self._netlink_source)
            for subsystem in SUBSYSTEMS:
                monitor.filter_by(subsystem)
            with contextlib.suppress(OSError, ValueError):  # needs CAP_NET_ADMIN
                monitor.set_receive_buffer_size(_RECEIVE_BUFFER)
            monitor.start()
        except (OSError, ValueError) as exc:
            raise DeviceSourceError(f"cannot listen to udev events: {exc}") from exc

        timer: asyncio.TimerHandle | None = None

        def deliver(events: Iterable[DeviceEvent]) -> None:
            nonlocal timer
            for event in events:
                log.debug("device event: %s", event)
                try:
                    emit(event)
                except Exception:  # a broken consumer must not stop detection
                    log.exception("device event consumer failed on %s", event)
            if timer is not None:
                timer.cancel()
                timer = None
            deadline = self.tracker.next_deadline()
            if deadline is not None:
                timer = loop.call_at(deadline, on_timer)

        def on_timer() -> None:
            deliver(self.tracker.tick(loop.time()))

        def feed(record: UdevRecord) -> None:
            deliver(self.tracker.handle(record, loop.time()))

        resyncing: asyncio.Task[None] | None = None

        async def resync() -> None:
            # Stop reading while a fresh enumeration is taken and applied, so that no event
            # newer than the snapshot is undone by it; queued events follow afterwards.
            loop.remove_reader(fd)
            try:
                records = await asyncio.to_thread(coldplug_records, pyudev.Context())
                deliver(self.tracker.resync(records, loop.time()))
            finally:
                loop.add_reader(fd, on_readable)

        def on_readable() -> None:
            nonlocal resyncing
            while True:
                try:
                    device = monitor.poll(timeout=0)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS and (resyncing is None or resyncing.done()):
                        log.warning("udev events were lost (burst); re-reading all devices")
                        resyncing = asyncio.create_task(resync())
                    else:
                        log.warning("udev monitor read failed: %s", exc)
                    return
                if device is None:
                    return
                try:
                    record = to_record(device)
                except (OSError, pyudev.DeviceNotFoundError) as exc:
                    log.info("udev device vanished while being read: %s", exc)
                    continue
                feed(record)

        fd = monitor.fileno()
        try:
            for record in await asyncio.to_thread(coldplug_records, context):
                feed(record)
            loop.add_reader(fd, on_readable)
            on_readable()  # whatever queued up during the enumeration
            self.ready.set()
            await asyncio.Event().wait()
        finally:
            self.ready.clear()
            if resyncing is not None:  # first: its own cleanup re-adds the reader
                resyncing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await resyncing
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
            if timer is not None:
                timer.cancel()
            # libudev closes the socket when the last reference to the monitor goes; drop
            # ours now rather than whenever the traceback holding this frame is freed.
            monitor = None
