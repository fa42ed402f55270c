"""Recorders from the simulator: the dock-sim adapter around `DeviceTracker`.

dock-sim (`hw_sim`) serves newline-delimited JSON on a Unix stream socket (format in
docs/simulator.md): first a `state` message (the dock's bays and every device present),
then one `uevent` per device that comes or goes. Each device is a udev-like record, fed to
the same `DeviceTracker` as udev's, so simulated recorders meet the allowlist, bays,
pairing and debounce of real ones. This client connects (retrying until the socket
exists); if the simulator goes away, its devices are removed as if unplugged (debounced:
a simulator back within the window loses no session) and the client reconnects.
The agent never imports the simulator itself; this JSON stream is the whole interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.devices.feed import Emit, TrackerFeed
from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord
from agent.settings import DeviceSettings

log = logging.getLogger(__name__)

SUPPORTED_VERSION = 2
MAX_LINE = 1 << 20


class SimAnnouncementError(Exception):
    """An announcement line that is not valid (bad JSON, missing field, wrong version)."""


class SimDeviceSource:
    """Follows a dock-sim socket and feeds its device records to a `DeviceTracker`.

    Without `[devices.bays]` configured, the bays dock-sim announces (USB port ID_PATH ->
    label) stand in for them, as an installer's bay map would.
    """

    def __init__(
        self, settings: DeviceSettings, socket_path: Path | str | None = None, *,
        retry_interval_s: float = 0.5,
    ) -> None:
        self.socket_path = Path(socket_path if socket_path is not None else settings.sim_socket)
        self.retry_interval_s = retry_interval_s
        self._settings = settings
        self.tracker = DeviceTracker(settings, source="sim")  # validates the settings now
        if not settings.allow:
            log.warning("devices.allow is empty: every dock-sim recorder will be rejected "
                        "(its recorders are USB 1209:d0c5 unless their spec says otherwise)")
        self._bays: dict[str, str] = dict(settings.bays)
        self._feed: TrackerFeed | None = None
        self.ready = asyncio.Event()  # set while connected and the present devices are known
        self.bad_lines = 0

    async def run(self, emit: Emit) -> None:
        """Run until cancelled."""
        self._feed = TrackerFeed(self.tracker, emit)
        try:
            while True:
                reader, writer = await self._connect()
                try:
                    await self._follow(reader)
                finally:
                    self.ready.clear()
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
                log.warning("dock-sim went away; its devices are gone unless it comes back")
                self._feed.resync([])
                await asyncio.sleep(self.retry_interval_s)
        finally:
            self._feed.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        logged_wait = False
        while True:
            try:
                connection = await asyncio.open_unix_connection(
                    str(self.socket_path), limit=MAX_LINE
                )
            except OSError as e:  # not there yet, or refusing: dock-sim is (re)starting
                if not logged_wait:
                    log.info("waiting for dock-sim at %s: %s", self.socket_path, e)
                    logged_wait = True
                await asyncio.sleep(self.retry_interval_s)
                continue
            log.info("connected to dock-sim at %s", self.socket_path)
            return connection

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, OSError):
                return
            except ValueError:  # line longer than MAX_LINE: the stream is out of step
                log.warning("dock-sim sent an oversized line; reconnecting")
                return
            if not line:
                return
            try:
                self.handle(parse_line(line))
            except SimAnnouncementError as e:
                self.bad_lines += 1
                log.warning("ignoring bad dock-sim announcement: %s", e)

    def handle(self, msg: dict[str, Any]) -> None:
        """Apply one decoded message (the source must be running)."""
        assert self._feed is not None, "handle() is for a running source"
        kind = msg["type"]
        if kind == "state":
            bays = parse_bays(_field(msg, "bays", list))
            records = [parse_record(d) for d in _field(msg, "devices", list)]
            self._use_bays(bays)
            self._feed.resync(records)
            self.ready.set()
        elif kind == "uevent":
            self._feed.handle(parse_record(_field(msg, "device", dict)))
        else:
            log.debug("ignoring dock-sim message of unknown type %r", kind)

    def _use_bays(self, announced: dict[str, str]) -> None:
        """Adopt the simulator's bay map unless bays are configured. Another map means
        another dock: what the old one had is gone now, not after a debounce window."""
        if self._settings.bays or announced == self._bays:
            return
        assert self._feed is not None
        self._feed.resync([])
        self._feed.flush()
        self._bays = announced
        self.tracker = DeviceTracker(replace(self._settings, bays=announced), source="sim")
        self._feed.tracker = self.tracker


def parse_line(line: bytes) -> dict[str, Any]:
    """Decode one announcement line; SimAnnouncementError if it is not a valid message."""
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise SimAnnouncementError(f"not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise SimAnnouncementError("message is not a JSON object")
    version = msg.get("v")
    if version != SUPPORTED_VERSION:
        raise SimAnnouncementError(f"unsupported announcement version {version!r}")
    _field(msg, "type", str)
    return msg


def parse_bays(items: list[Any]) -> dict[str, str]:
    """`[{"label", "id_path"}]` -> {ID_PATH: label}, the shape of `[devices.bays]`."""
    bays: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            raise SimAnnouncementError("bays entries must be objects")
        bays[_field(item, "id_path", str)] = _field(item, "label", str)
    return bays


def parse_record(item: Any) -> DeviceRecord:
    """`{"props": {...}, "usb": {...} | null}` -> DeviceRecord; every value a string."""
    if not isinstance(item, dict):
        raise SimAnnouncementError("a device record must be an object")
    usb = item.get("usb")
    return DeviceRecord(_props(_field(item, "props", dict)),
                        None if usb is None else _props(usb))


def _props(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SimAnnouncementError("device properties must map strings to strings")
    return value


def _field(msg: dict[str, Any], name: str, kind: type) -> Any:
    value = msg.get(name)
    if not isinstance(value, kind):
        raise SimAnnouncementError(f"field {name!r} missing or not a {kind.__name__}")
    return value
