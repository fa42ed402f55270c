"""The bay supervisor: one `DockingSession` task per docked recorder.

It consumes the device source's domain events, starts and routes sessions by attachment
key, and keeps the per-bay picture (`snapshot()`) that MQTT retained state and dockctl
publish. Sessions run as independent tasks: a session never raises into the task group,
so one recorder's failure or hang leaves every other bay untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from agent.devices.events import (
    DeviceEvent,
    DeviceRejected,
    PortIdentity,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.docking_state import SessionSnapshot
from agent.session.context import SessionDeps
from agent.session.custody_records import SessionRecords
from agent.session.registry import SessionTable
from agent.session.runner import DockingSession
from agent.store.faults import FaultCode

log = logging.getLogger(__name__)


class BaySupervisor:
    """Starts, routes and tracks docking sessions; `handle()` is fed every device event."""

    def __init__(self, deps: SessionDeps, task_group: asyncio.TaskGroup | None = None,
                 sessions: SessionTable | None = None) -> None:
        self.deps = deps
        self._tg = task_group
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions = sessions if sessions is not None else SessionTable()
        self._early_storage: dict[str, StorageAppeared] = {}  # storage seen before its tty
        self.rejections: list[dict[str, object]] = []
        # (key, bay) refused as a duplicate serial -> it was a storage-only attachment
        self._refused: dict[tuple[str, str], bool] = {}

    # --- events ------------------------------------------------------------------------

    async def handle(self, event: DeviceEvent) -> None:
        match event:
            case RecorderPlugged() | StorageAppeared() if (
                    event.key, event.bay) in self._refused:
                pass  # refused already; nothing of it reaches the recorder docked first
            case RecorderPlugged() | StorageAppeared() if (
                    elsewhere := self._docked_elsewhere(event.key, event.bay)) is not None:
                storage_only = isinstance(event, StorageAppeared) and event.storage_only
                self._refused[(event.key, event.bay)] = storage_only
                await self._refuse_duplicate(event.key, event.bay, elsewhere)
            case RecorderPlugged():
                self._start(event.key, event.bay, tty=event.tty_path, source=event.source,
                            storage_only=False, port=event.port)
            case StorageAppeared(storage_only=True) if event.key not in self._live_keys():
                if not self.deps.devices.allow_storage_only:
                    await self._reject(DeviceRejected(
                        bay=event.bay, vid_pid=event.vid_pid, serial=event.key,
                        reason="storage-only recorders are not allowed by configuration"))
                    return
                session = self._start(event.key, event.bay, tty=None, source=event.source,
                                      storage_only=True)
                session.storage_appeared(event)
            case StorageAppeared():
                live = self._live(event.key, event.bay)
                if live is None:
                    self._early_storage[event.key] = event
                else:
                    live.storage_appeared(event)
            case StorageRemoved():
                if self._refused.get((event.key, event.bay)):  # a storage-only one left
                    del self._refused[(event.key, event.bay)]
                self._forget_early(event.key, event.bay)
                live = self._live(event.key, event.bay)
                if live is not None:
                    live.storage_removed()
                    if live.storage_only:  # its storage is all there is: gone means unplugged
                        live.unplugged()
            case RecorderUnplugged():
                self._refused.pop((event.key, event.bay), None)
                self._forget_early(event.key, event.bay)
                live = self._live(event.key, event.bay)
                if live is not None:
                    live.unplugged()
            case DeviceRejected():
                await self._reject(event)

    def _live_keys(self) -> set[str]:
        return self.sessions.live_keys()

    def _live(self, key: str, bay: str | None = None) -> DockingSession | None:
        """The live session of `key` (in `bay`, if given: events of a refused duplicate
        in another bay never reach the recorder docked first)."""
        return self.sessions.live(key, bay)

    def _forget_early(self, key: str, bay: str) -> None:
        early = self._early_storage.get(key)
        if early is not None and early.bay == bay:
            del self._early_storage[key]

    def _docked_elsewhere(self, key: str, bay: str) -> str | None:
        """The bay where a recorder with this serial is docked and not leaving, if that
        is another bay than `bay`: one serial cannot be in two bays at once."""
        s = self._live(key)
        if s is None or s.bay == bay or s.leaving:
            return None
        return s.bay

    async def _refuse_duplicate(self, key: str, bay: str, docked_in: str) -> None:
        """A second recorder with the serial of one already docked: never talked to,
        never unlocked; recorded under that serial, and the first docking is untouched."""
        reason = (f"serial {key!r} is already docked in bay {docked_in}: docking in bay"
                  f" {bay} refused")
        detail: dict[str, object] = {"usb_serial": key, "docked_in": docked_in,
                                     "reason": reason}
        self.rejections.append({"bay": bay, **detail})
        journal = SessionRecords(self.deps.db, self.deps.ledger, bay=bay, session_id=None)
        try:
            await journal.entry("device_rejected", recorder=key, officer=None, data=detail)
            await journal.fault(FaultCode.DEVICE_REJECTED, reason, recorder=key, officer=None,
                                severity="error", detail=detail)
        except Exception:
            log.exception("could not record duplicate serial %r in bay %s", key, bay)
        self._changed()

    def _start(self, key: str, bay: str, *, tty: str | None, source: str,
               storage_only: bool, port: PortIdentity | None = None) -> DockingSession:
        previous = self._live(key) or next(  # one leaving this bay may hold its port node
            (s for k in self._live_keys() if (s := self._live(k, bay)) and s.leaving), None)
        session = DockingSession(self.deps, key=key, bay=bay, tty_path=tty, source=source,
                                 storage_only=storage_only, port=port)
        early = self._early_storage.pop(key, None)
        if early is not None:
            session.storage_appeared(early)
        self.sessions.put(session)
        if previous is not None:
            # Replug while the old session still shuts down (or a missed unplug): the old
            # one must finish - lazy unmount, undocked record - before the new one starts.
            previous.unplugged()
            self._spawn(self._run_after(previous, session))
        else:
            self._spawn(session.run())
        self._changed()
        return session

    @staticmethod
    async def _run_after(previous: DockingSession, session: DockingSession) -> None:
        await previous.wait_finished()
        await session.run()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tg is not None:
            self._tg.create_task(coro)
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reject(self, ev: DeviceRejected) -> None:
        detail: dict[str, object] = {"vid_pid": ev.vid_pid, "usb_serial": ev.serial,
                                     "devpath": ev.devpath, "reason": ev.reason}
        self.rejections.append({"bay": ev.bay, **detail})
        journal = SessionRecords(self.deps.db, self.deps.ledger, bay=ev.bay, session_id=None)
        try:
            await journal.entry("device_rejected", recorder=None, officer=None, data=detail)
            await journal.fault(FaultCode.DEVICE_REJECTED,
                                f"device rejected in bay {ev.bay}: {ev.reason}",
                                recorder=None, officer=None, severity="warning", detail=detail)
        except Exception:
            log.exception("could not record rejected device in bay %s", ev.bay)
        self._changed()

    # --- reporting ---------------------------------------------------------------------

    def session(self, key: str) -> DockingSession | None:
        """The newest session for `key` (finished or not)."""
        return self.sessions.session(key)

    def docked(self, serial: str) -> DockingSession | None:
        """The live session of the recorder with this device serial, if it is docked."""
        return self.sessions.docked(serial)

    def snapshot(self) -> list[SessionSnapshot]:
        """One entry per bay with a live session, sorted by bay label."""
        return self.sessions.snapshot()

    def _changed(self) -> None:
        try:
            self.deps.on_change()
        except Exception:
            log.exception("on_change hook failed")

    async def aclose(self) -> None:
        """Stop every session this supervisor owns (when it was given no task group)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
