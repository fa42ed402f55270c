"""Device source for the simulator: turns dock-sim announcements into domain events.

dock-sim (`hw_sim`) serves newline-delimited JSON on a Unix stream socket (format in
docs/simulator.md). This client connects (retrying until the socket exists), reconciles
the initial `state` message, then follows plug/storage/unplug messages. If the simulator
goes away, everything it had announced is reported unplugged and the client reconnects.
The agent never imports the simulator itself; this JSON stream is the whole interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.devices.events import (
    DeviceEvent,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.settings import DeviceSettings

log = logging.getLogger(__name__)

SUPPORTED_VERSION = 1
MAX_LINE = 1 << 20


class SimAnnouncementError(Exception):
    """An announcement line that is not valid (bad JSON, missing field, wrong version)."""


@dataclass
class _Attached:
    bay: str
    tty: str
    storage: str | None = None


class SimDeviceSource:
    """Follows a dock-sim socket and emits RecorderPlugged/StorageAppeared/... events."""

    def __init__(self, socket_path: Path | str, *, retry_interval_s: float = 0.5) -> None:
        self.socket_path = Path(socket_path)
        self.retry_interval_s = retry_interval_s
        self._attached: dict[str, _Attached] = {}  # serial -> what we announced
        self.connected = asyncio.Event()
        self.bad_lines = 0

    @classmethod
    def from_settings(cls, settings: DeviceSettings) -> SimDeviceSource:
        return cls(settings.sim_socket)

    async def run(self, emit: Callable[[DeviceEvent], None]) -> None:
        """Run until cancelled."""
        logged_wait = False
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self.socket_path), limit=MAX_LINE
                )
            except (FileNotFoundError, ConnectionRefusedError, OSError) as e:
                if not logged_wait:
                    log.info("waiting for dock-sim at %s: %s", self.socket_path, e)
                    logged_wait = True
                await asyncio.sleep(self.retry_interval_s)
                continue
            logged_wait = False
            log.info("connected to dock-sim at %s", self.socket_path)
            try:
                await self._follow(reader, emit)
            finally:
                self.connected.clear()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            log.warning("dock-sim went away; reporting its recorders unplugged")
            self._reconcile({}, emit)
            await asyncio.sleep(self.retry_interval_s)

    async def _follow(
        self, reader: asyncio.StreamReader, emit: Callable[[DeviceEvent], None]
    ) -> None:
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
                self.handle(parse_line(line), emit)
            except SimAnnouncementError as e:
                self.bad_lines += 1
                log.warning("ignoring bad dock-sim announcement: %s", e)

    # --- pure part: one message in, events out ------------------------------------------------
    def handle(self, msg: dict[str, Any], emit: Callable[[DeviceEvent], None]) -> None:
        kind = msg["type"]
        if kind == "state":
            recs = _field(msg, "recorders", list)
            want: dict[str, _Attached] = {}
            for r in recs:
                if not isinstance(r, dict):
                    raise SimAnnouncementError("state.recorders entries must be objects")
                storage = r.get("storage")
                if storage is not None and not isinstance(storage, str):
                    raise SimAnnouncementError("storage must be a string or null")
                serial = _field(r, "serial", str)
                want[serial] = _Attached(_field(r, "bay", str), _field(r, "tty", str), storage)
            self._reconcile(want, emit)
            self.connected.set()
        elif kind == "plugged":
            serial, bay = _field(msg, "serial", str), _field(msg, "bay", str)
            tty = _field(msg, "tty", str)
            old = self._attached.get(serial)
            if old is not None and (old.bay, old.tty) == (bay, tty):
                return
            if old is not None:
                self._detach(serial, emit)
            self._attached[serial] = _Attached(bay, tty)
            emit(RecorderPlugged(key=serial, bay=bay, tty_path=tty, source="sim"))
        elif kind == "storage":
            serial, path = _field(msg, "serial", str), _field(msg, "path", str)
            cur = self._attached.get(serial)
            if cur is None:
                raise SimAnnouncementError(f"storage for {serial!r}, which is not plugged")
            if cur.storage == path:
                return
            if cur.storage is not None:
                emit(StorageRemoved(key=serial, bay=cur.bay))
            cur.storage = path
            emit(StorageAppeared(key=serial, bay=cur.bay, storage=DirectoryStorage(path),
                                 source="sim"))
        elif kind == "storage_removed":
            serial = _field(msg, "serial", str)
            cur = self._attached.get(serial)
            if cur is not None and cur.storage is not None:
                cur.storage = None
                emit(StorageRemoved(key=serial, bay=cur.bay))
        elif kind == "unplugged":
            serial = _field(msg, "serial", str)
            if serial in self._attached:
                self._detach(serial, emit)
        else:
            log.debug("ignoring dock-sim message of unknown type %r", kind)

    def _detach(self, serial: str, emit: Callable[[DeviceEvent], None]) -> None:
        cur = self._attached.pop(serial)
        if cur.storage is not None:
            emit(StorageRemoved(key=serial, bay=cur.bay))
        emit(RecorderUnplugged(key=serial, bay=cur.bay))

    def _reconcile(self, want: dict[str, _Attached], emit: Callable[[DeviceEvent], None]) -> None:
        for serial in list(self._attached):
            cur, new = self._attached[serial], want.get(serial)
            if new is None or (new.bay, new.tty) != (cur.bay, cur.tty):
                self._detach(serial, emit)
            elif new.storage != cur.storage:
                if cur.storage is not None:
                    emit(StorageRemoved(key=serial, bay=cur.bay))
                cur.storage = new.storage
                if new.storage is not None:
                    emit(StorageAppeared(key=serial, bay=cur.bay,
                                         storage=DirectoryStorage(new.storage), source="sim"))
        for serial, new in want.items():
            if serial in self._attached:
                continue
            self._attached[serial] = _Attached(new.bay, new.tty, new.storage)
            emit(RecorderPlugged(key=serial, bay=new.bay, tty_path=new.tty, source="sim"))
            if new.storage is not None:
                emit(StorageAppeared(key=serial, bay=new.bay,
                                     storage=DirectoryStorage(new.storage), source="sim"))


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


def _field(msg: dict[str, Any], name: str, kind: type) -> Any:
    value = msg.get(name)
    if not isinstance(value, kind):
        raise SimAnnouncementError(f"field {name!r} missing or not a {kind.__name__}")
    return value
