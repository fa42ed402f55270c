"""Test bench for docking sessions: a real database, ledger, offloader and evidence
store on tmp files, and a bench of virtual recorders (hw_sim) on real ptys whose plug,
storage and unplug events are fed to a real `BaySupervisor`."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.compliance.deadlines import HoursDeadline
from agent.devices.events import (
    DirectoryStorage,
    PortIdentity,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRef,
    StorageRemoved,
)
from agent.mount.mounter import DirectoryMounter
from agent.offload import SCHEMA as OFFLOAD_SCHEMA
from agent.offload import Offloader
from agent.schemas import ALL_SCHEMAS
from agent.session.context import SessionDeps
from agent.session.recorder_link import recorder_client_opener
from agent.session.runner import DockingSession
from agent.session.state_machine import State
from agent.session.supervisor import BaySupervisor
from agent.settings import ClockSettings, DeviceSettings, OffloadSettings, RecorderSettings
from agent.store import faults as faultreg
from agent.store import ledger as ledgermod
from agent.store.db import Database
from agent.store.ledger import Ledger
from firmware_bridge.messages import OfficerRecord
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import FootageSpec, RecorderSpec
from hw_sim.uevents import born_ns

OFFICER = OfficerRecord(officer_no="0042", officer_name="Li Wei", unit_no="U7",
                        unit_name="Health Enforcement Team 7")
SMALL = FootageSpec(count=2, size_bytes=64 * 1024)


def spec(serial: str, **kw: Any) -> RecorderSpec:
    kw.setdefault("officer", OFFICER)
    kw.setdefault("footage", SMALL)
    return RecorderSpec(serial=serial, **kw)


class TrackingMounter(DirectoryMounter):
    """The simulator's real mounter, remembering which keys are currently mounted."""

    def __init__(self) -> None:
        self.mounted: set[str] = set()
        self.calls: list[tuple[str, str, bool]] = []

    async def mount(self, key: str, storage: StorageRef) -> Path:
        path = await super().mount(key, storage)
        self.mounted.add(key)
        self.calls.append(("mount", key, False))
        return path

    async def unmount(self, key: str, *, lazy: bool = False) -> None:
        await super().unmount(key, lazy=lazy)
        self.mounted.discard(key)
        self.calls.append(("unmount", key, lazy))


class Bench:
    """Virtual recorders in bays, their events delivered to a supervisor as udev would."""

    def __init__(self, supervisor: BaySupervisor, workdir: Path, secret: bytes) -> None:
        self.supervisor = supervisor
        self.workdir = workdir
        self.secret = secret
        self.recorders: dict[str, VirtualRecorder] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.deliver_storage = True  # False: storage events are swallowed (never appears)
        self._plugs = 0

    def _emit(self, event: Any) -> None:
        task = asyncio.get_running_loop().create_task(self.supervisor.handle(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def plug(self, bay: str, rec_spec: RecorderSpec,
                   workdir: Path | None = None) -> VirtualRecorder:
        """Plug a recorder into `bay`; the USB serial the dock sees is the spec's serial
        (`workdir`: another home for a second recorder with the same serial)."""
        key = rec_spec.serial

        def on_storage(path: Path | None) -> None:
            if not self.deliver_storage:
                return
            if path is None:
                self._emit(StorageRemoved(key=key, bay=bay))
            else:
                self._emit(StorageAppeared(key=key, bay=bay,
                                           storage=DirectoryStorage(str(path)), source="sim"))

        def on_unplug() -> None:
            asyncio.get_running_loop().create_task(self.unplug(bay))

        rec = VirtualRecorder(rec_spec, workdir or self.workdir, secret=self.secret,
                              on_storage=on_storage, on_unplug=on_unplug)
        tty = await rec.start()
        self.recorders[bay] = rec
        self._plugs += 1  # each enumeration its own USB device number, as a kernel does
        port = PortIdentity(f"/dev/bus/usb/001/{1 + self._plugs % 127:03d}", born_ns(tty))
        await self.supervisor.handle(RecorderPlugged(key=key, bay=bay, tty_path=tty,
                                                     source="sim", port=port))
        return rec

    async def unplug(self, bay: str) -> DockingSession:
        """Unplug the recorder in `bay`; returns the session of its serial (for a refused
        duplicate that is the other bay's, which does not end)."""
        rec = self.recorders.pop(bay)
        await rec.stop()
        await self.settle()
        session = self.session(rec.spec.serial)
        await self.supervisor.handle(RecorderUnplugged(key=rec.spec.serial, bay=bay))
        if session.bay == bay:
            await session.wait_finished()
        return session

    async def settle(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending))

    def session(self, key: str) -> DockingSession:
        s = self.supervisor.session(key)
        assert s is not None, f"no session for {key}"
        return s

    async def stop(self) -> None:
        for bay in list(self.recorders):
            await self.unplug(bay)
        await self.settle()


async def wait_state(session: DockingSession, *states: State) -> None:
    """Wait until the session is in one of `states` (the test timeout bounds the wait)."""
    while session.state not in states:
        await asyncio.sleep(0.01)


class Env:
    """The real custody store and everything a session needs, on tmp files."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = Database(tmp / "state" / "dock.sqlite3", [*ALL_SCHEMAS, OFFLOAD_SCHEMA])
        self.ledger = Ledger("dock-test")
        self.store = tmp / "evidence"
        self.store.mkdir()
        self.offload_settings = OffloadSettings(reserve_mib=0)
        self.offloader = Offloader(self.db, self.ledger, self.store, self.offload_settings,
                                   HoursDeadline(24), ZoneInfo("Asia/Shanghai"))
        self.mounter = TrackingMounter()
        self.gate: asyncio.Event | None = None
        self.changes = 0

    def configure_offload(self, **kw: Any) -> None:
        """Rebuild the offloader with other settings (before any bench is made)."""
        self.offload_settings = OffloadSettings(**{"reserve_mib": 0, **kw})
        self.offloader = Offloader(self.db, self.ledger, self.store, self.offload_settings,
                                   HoursDeadline(24), ZoneInfo("Asia/Shanghai"))

    def deps(self, **kw: Any) -> SessionDeps:
        recorder = kw.pop("recorder", RecorderSettings(command_timeout_s=0.5, retries=1))
        base: dict[str, Any] = dict(
            db=self.db, ledger=self.ledger, mounter=self.mounter, offloader=self.offloader,
            devices=DeviceSettings(source="sim", storage_wait_s=5.0),
            recorder=recorder, clock=ClockSettings(), offload=self.offload_settings,
            fleet_secret=DEFAULT_FLEET_SECRET, dock_synchronised=lambda: True,
            open_link=recorder_client_opener(recorder), on_change=self._changed,
        )
        base.update(kw)
        return SessionDeps(**base)

    def _changed(self) -> None:
        self.changes += 1

    def kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.entries(session_id=session_id)]

    def entries(self, **kw: Any) -> list[ledgermod.LedgerEntry]:
        return self.db.read_sync(lambda c: ledgermod.entries(c, **kw))

    def faults(self, **kw: Any) -> list[faultreg.Fault]:
        return self.db.read_sync(lambda c: faultreg.list_faults(c, **kw))

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.store.rglob("*") if p.is_file()
                      and not p.name.startswith(".partial"))

    def query(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return self.db.read_sync(fn)


