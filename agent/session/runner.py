"""One docking session: the I/O shell around `SessionMachine`.

`DockingSession.run()` is one task per docked recorder. It talks to the recorder over its
control channel, checks and sets its clock, reads battery and storage, unlocks and mounts
its storage read-only, has it offloaded, locks it again and then stays with the recorder
(polling its battery while it charges) until the supervisor reports it unplugged.

Safety rules this file keeps:
- every protocol call is bounded by a timeout, so a hung recorder only stalls its own bay;
- a failure becomes one fault record and the recorder is left safe: unmounted, storage
  locked, nothing wiped (the offloader wipes only what is durably stored and verified);
- an unplug cancels whatever runs, lazily releases the mount and records `undocked`;
- nothing shared is held across an await: all state here belongs to this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from agent.compliance.firmware import firmware_problem
from agent.devices.events import DirectoryStorage, StorageAppeared, StorageRef
from agent.domain import DockingContext, RecorderIdentity
from agent.firmware.hook import DockedRecorder, docked_recorder
from agent.mount.mounter import Mounter
from agent.offload import FileProblem, Offloader, OffloadProgress, OffloadSummary
from agent.offload.errors import StoreFullError
from agent.session import clock as clockmath
from agent.session import fieldlog
from agent.session.battery import battery_facts, battery_problems
from agent.session.errors import SessionFailure
from agent.session.journal import SessionJournal
from agent.session.ports import IdentityLike, LinkOpener, RecorderLink
from agent.session.state_machine import SessionMachine, State, Transition
from agent.settings import (
    ClockSettings,
    DeviceSettings,
    OffloadSettings,
    ReadinessSettings,
    RecorderSettings,
)
from agent.store import assignments, recorder_history
from agent.store.db import Database, DatabaseFull
from agent.store.faults import FaultCode as FC
from agent.store.faults import Severity
from agent.store.ledger import Ledger
from agent.store.ledger import entries as ledger_entries
from firmware_bridge.errors import AuthRefused, BridgeError, DeviceError, LinkClosed, LinkTimeout
from firmware_bridge.messages import (
    DeleteRecording,
    DeviceLogEvent,
    OfficerRecord,
    RecordingInfo,
    SetMassStorage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

ChangeHook = Callable[[], None]
PageHook = Callable[[int, int], None]  # (entries received, total) after each page
HISTORY_WINDOW_S = 14 * 86400.0  # battery history loaded at docking, for the charge rate
MAX_BATTERY_SAMPLES = 500
EVENT_LOG_CHUNK = 256  # entries per bounded read of the recorder's event log
EVENT_LOG_MAX = 4096  # per docking; the next docking reads on from there
EVENT_LOG_FLOOR_S = 30.0  # per chunk: a full page set at 115200 baud fits easily
MASS_STORAGE_TIMEOUT_S = SetMassStorage.POLICY.min_timeout_s  # the bridge's floor
DELETE_TIMEOUT_S = DeleteRecording.POLICY.min_timeout_s  # the device hashes the file


@dataclass(frozen=True)
class SessionDeps:
    """Everything a docking session needs; built once by the application."""

    db: Database
    ledger: Ledger
    mounter: Mounter
    offloader: Offloader
    devices: DeviceSettings
    recorder: RecorderSettings
    clock: ClockSettings
    offload: OffloadSettings
    fleet_secret: bytes
    dock_synchronised: Callable[[], bool]  # see agent.session.clock.dock_clock_probe
    open_link: LinkOpener
    on_change: ChangeHook = field(default=lambda: None)
    on_transition: Callable[[Transition], None] | None = None  # every state machine step
    battery_poll_s: float = 45.0
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
    mount_timeout_s: float = 120.0
    unplug_grace_s: float = 3.0  # a closed link is an unplug if the event follows within
    clock_samples: int = 3
    wall_time: Callable[[], float] = time.time
    firmware: Callable[[DockedRecorder], Awaitable[None]] | None = None  # agent.firmware hook


class DockingSession:
    """The life of one recorder in one bay, from plug to unplug."""

    def __init__(
        self,
        deps: SessionDeps,
        *,
        key: str,
        bay: str,
        tty_path: str | None,
        source: str = "udev",
        storage_only: bool = False,
    ) -> None:
        self.deps = deps
        self.key = key
        self.bay = bay
        self.tty_path = tty_path
        self.source = source
        self.storage_only = storage_only
        self.session_id = uuid.uuid4().hex
        self.machine = SessionMachine(
            bay=bay, key=key, serial=key if storage_only else None, now=deps.wall_time
        )
        self.journal = SessionJournal(deps.db, deps.ledger, bay=bay, session_id=self.session_id)
        self.identity: RecorderIdentity | None = (
            RecorderIdentity(serial=key) if storage_only else None
        )
        self.docked_at = deps.wall_time()
        self.battery: dict[str, object] | None = None
        self.battery_at: float | None = None  # dock wall time of the last battery reading
        # (dock wall time, percent, charging) of this pack, including earlier dockings
        self.battery_samples: list[tuple[float, float, bool]] = []
        self._event_cursor: recorder_history.EventCursor | None = None
        self._field_officer: str | None = None
        self.storage: dict[str, object] | None = None
        self.clock: dict[str, object] | None = None
        self.progress: dict[str, object] | None = None
        self.offload_result: dict[str, object] | None = None
        self.faults: list[dict[str, object]] = []
        self.done: list[str] = []  # what this docking achieved, for the undocked record
        self._link: RecorderLink | None = None
        self._unlocked = False
        self._mounted = False
        self._footage_settled = False  # this docking's offload completed
        self._assigning = asyncio.Lock()
        self._offload_ctx: DockingContext | None = None
        self._left_on_recorder: list[dict[str, object]] = []  # files the offload could not take
        self._storage_ref: StorageRef | None = None
        self._storage_event = asyncio.Event()
        self._storage_lost = False
        self._unplugged = asyncio.Event()
        self._work: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()

    # --- events from the supervisor ----------------------------------------------------

    def storage_appeared(self, ev: StorageAppeared) -> None:
        self._storage_ref = ev.storage
        self._storage_lost = False
        self._storage_event.set()

    def storage_removed(self) -> None:
        self._storage_ref = None
        self._storage_event.clear()
        if self._mounted:
            # The offload notices by itself (reads fail: outcome "interrupted"); this only
            # tells the failure path to wait and see whether the recorder was pulled out.
            self._storage_lost = True

    def unplugged(self) -> None:
        self._unplugged.set()
        if self._work is not None:
            self._work.cancel()

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def leaving(self) -> bool:
        """Told it was unplugged (it may still be releasing the recorder)."""
        return self._unplugged.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    # --- the task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until unplugged; never raises (one bay's trouble must not touch another)."""
        try:
            await self._record("docked", {
                "key": self.key, "tty": self.tty_path, "source": self.source,
                "storage_only": self.storage_only,
            })
            self._work = asyncio.create_task(self._work_then_idle())
            # The work may end (released, failed) long before: the recorder stays docked.
            await self._unplugged.wait()
            await self._stop_work()
            await self._release("unplugged", lazy=True)
        except asyncio.CancelledError:
            # Agent shutdown: the recorder is still in the bay. Leave it unmounted and
            # locked, and close its custody record; the next start docks it anew.
            await self._stop_work()
            try:
                await asyncio.shield(self._release("agent_stopped", lazy=False))
            except Exception:  # e.g. a disk full past the database's reserve: still stop
                log.exception("bay %s: the docking record could not be closed", self.bay)
            raise
        except Exception:
            log.exception("session %s in bay %s crashed", self.session_id, self.bay)
        finally:
            await self._close_link()
            self._finished.set()
            self._changed()

    async def _stop_work(self) -> None:
        work = self._work
        if work is not None and not work.done():
            work.cancel()
            await asyncio.wait({work})  # unlike `await work`, an outer cancel still propagates

    async def _work_then_idle(self) -> None:
        try:
            if self.storage_only:
                await self._offload_storage_only()
            else:
                await self._drive()
        except SessionFailure as f:
            # An offload cut short by vanished storage may be seen before the unplug event.
            gone = (f.detail.get("link_closed") or self._storage_lost
                    or (self.offload_result or {}).get("outcome") == "interrupted")
            if gone and await self._unplug_follows():
                return  # the recorder was pulled out: that is an unplug, not a fault
            await self._fail(f)
            return
        except Exception as exc:  # a bug or an unforeseen error: still one clear fault
            log.exception("session %s failed unexpectedly", self.session_id)
            await self._fail(SessionFailure(
                FC.PROTOCOL_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                detail={"state": self.state.value}))
            return
        if self._link is not None:
            await self._poll_battery_forever(self._link)

    # --- the main path -----------------------------------------------------------------

    async def _drive(self) -> None:
        assert self.tty_path is not None
        link = await self._call("open control channel", self.deps.open_link(self.tty_path))
        self._link = link
        hello = await self._call("hello", link.hello())
        await self._call("authenticate", link.authenticate(self.deps.fleet_secret))
        self._advance(State.AUTHENTICATED)

        ident = await self._call("identity", link.identity())
        if ident.serial != self.key:
            await self._refuse_claimed_serial(ident)
        officer = await self._call("get officer", link.get_officer())
        self.identity = RecorderIdentity(
            serial=ident.serial, model=ident.model, hardware_rev=ident.hardware_rev,
            firmware=ident.firmware,
            officer_no=officer.officer_no if officer else "",
            officer_name=officer.officer_name if officer else "",
            unit_no=officer.unit_no if officer else "",
            unit_name=officer.unit_name if officer else "",
        )
        self.machine.identify(self.identity.serial, self.identity.officer_no or None)
        await self._record("identified", {
            "serial": ident.serial, "model": ident.model, "hardware_rev": ident.hardware_rev,
            "firmware": ident.firmware, "officer_no": self.identity.officer_no,
            "officer_name": self.identity.officer_name, "unit_no": self.identity.unit_no,
            "unit_name": self.identity.unit_name,
            "officer_assigned": bool(self.identity.officer_no),
            "protocol_version": hello.protocol_version, "usb_serial": self.key,
        })
        self._advance(State.IDENTIFIED)
        await self._check_identity_policy()
        # Read before anything here writes to the log (officer, clock), on the field clock.
        field_events = await self._fetch_event_log(link)
        # A pending officer assignment waits until the footage is off: the files on the
        # recorder belong to the officer read just now, not to the next one.

        await self._check_clock(link)
        self._advance(State.CLOCK_CHECKED)
        if field_events is not None:
            await self._record_field_events(field_events)

        await self._load_battery_history()
        bat = await self._call("battery", link.battery())
        await self._battery_reading(battery_facts(bat))
        sto = await self._call("storage", link.storage(), FC.STORAGE_ERROR)
        self.storage = {"total_bytes": sto.total_bytes, "free_bytes": sto.free_bytes,
                        "file_count": sto.file_count, "recording": sto.recording}
        self._changed()
        problems = battery_problems(bat)
        if problems:  # reported, not fatal: the footage must still come off
            await self._fault(FC.BATTERY_FAILED, "; ".join(problems), "warning",
                              {"battery": self.battery})
        self._advance(State.STATUS_READ)

        recordings = await self._call_paged("list recordings", link.list_recordings,
                                            FC.STORAGE_ERROR)
        self._unlocked = True  # set first: a cancelled unlock may still have happened
        await self._call("unlock storage", link.set_mass_storage(True), FC.STORAGE_ERROR,
                         floor=MASS_STORAGE_TIMEOUT_S)
        self._advance(State.STORAGE_UNLOCKED)
        storage = await self._wait_storage()
        await self._mount_and_offload(storage, recordings, link)
        await self._call("lock storage", link.set_mass_storage(False), FC.STORAGE_ERROR,
                         floor=MASS_STORAGE_TIMEOUT_S)
        self._unlocked = False
        self.done.append("storage locked")
        self._footage_settled = True
        await self.apply_pending_assignment()
        self._advance(State.RELEASED)
        if self.deps.firmware is not None and self.identity is not None:  # footage safe: update?
            await self.deps.firmware(docked_recorder(
                link, self.identity, self.battery, self.offload_result, self.faults,
                bay=self.bay, session_id=self.session_id, changed=self._changed))

    async def _refuse_claimed_serial(self, ident: IdentityLike) -> None:
        """The firmware claims another serial than the USB device the dock sees: nothing
        it says can be filed under either, so the docking stops before any unlock."""
        claimed = ident.serial
        detail: dict[str, object] = {
            "usb_serial": self.key, "claimed_serial": claimed, "model": ident.model,
            "hardware_rev": ident.hardware_rev, "firmware": ident.firmware,
        }
        raise SessionFailure(
            FC.SERIAL_MISMATCH,
            f"recorder firmware claims serial \"{claimed}\" but its USB serial is"
            f" \"{self.key}\":"
            " docking refused (storage not unlocked, nothing wiped)",
            detail=detail)

    async def apply_pending_assignment(self) -> bool:
        """Write an officer assignment requested while the recorder was away (or just now).

        Only after this docking's offload completed: until then the recorder's files are
        attributed to the officer read at docking, and a request that arrives meanwhile
        (or at a docking whose offload fails) stays pending. The recorder is written,
        read back, and only a matching read-back is recorded as `officer_assigned` (the
        officer before and after) and marks the request applied, in one transaction.
        """
        async with self._assigning:  # the docking itself and a command may both ask
            return await self._apply_pending_assignment()

    async def _apply_pending_assignment(self) -> bool:
        link, ident = self._link, self.identity
        if link is None or ident is None or self.storage_only or not self._footage_settled:
            return False  # stays pending: applied once this docking's footage is stored
        serial = ident.serial
        pending = await self.deps.db.read(lambda conn: assignments.pending(conn, serial))
        if pending is None:
            return False
        record = OfficerRecord(officer_no=pending.officer_no, officer_name=pending.officer_name,
                               unit_no=pending.unit_no, unit_name=pending.unit_name)
        await self._call("set officer", link.set_officer(record))
        back = await self._call("get officer", link.get_officer())
        fields = ("officer_no", "officer_name", "unit_no", "unit_name")
        if back is None or any(getattr(back, f) != getattr(record, f) for f in fields):
            await self._fault(FC.PROTOCOL_ERROR, "officer assignment did not take: read-back"
                              " differs from what was written", "warning",
                              {"assignment_id": pending.id})
            return False
        before = {f: getattr(ident, f) for f in fields}
        self.identity = replace(ident, **{f: getattr(record, f) for f in fields})
        self.machine.identify(serial, record.officer_no)
        ledger, bay, session_id = self.deps.ledger, self.bay, self.session_id
        after = {f: getattr(record, f) for f in fields}
        data: dict[str, object] = {"before": before, "after": after,
                                   "assignment_id": pending.id,
                                   "requested_by": pending.requested_by,
                                   "offload": self.offload_result}
        if self._left_on_recorder:
            # Not stored this docking (unreadable): recorded while `before` held it.
            data["left_on_recorder"] = self._left_on_recorder

        def tx(conn: sqlite3.Connection) -> None:
            ledger.append(conn, "officer_assigned", recorder=serial, officer=record.officer_no,
                          bay=bay, session_id=session_id, data=data)
            assignments.mark_applied(conn, pending.id)

        await self.deps.db.write(tx)
        await self._clear_condition(FC.OFFICER_UNASSIGNED, "officer assigned")
        self._changed()
        return True

    async def _offload_storage_only(self) -> None:
        await self._record("identified", {
            "serial": self.key, "identity_source": "usb_serial",
            "unchecked": ["officer", "clock", "battery", "storage_status"],
        })
        storage = await self._wait_storage()
        await self._mount_and_offload(storage, [], None)
        self._advance(State.RELEASED)

    async def _wait_storage(self) -> StorageRef:
        try:
            async with asyncio.timeout(self.deps.devices.storage_wait_s):
                await self._storage_event.wait()
        except TimeoutError:
            raise SessionFailure(
                FC.STORAGE_NOT_FOUND,
                f"recorder storage did not appear within {self.deps.devices.storage_wait_s:g} s"
                " of unlocking",
            ) from None
        assert self._storage_ref is not None
        return self._storage_ref

    async def _mount_and_offload(
        self, storage: StorageRef, recordings: Sequence[RecordingInfo], link: RecorderLink | None
    ) -> None:
        self._mounted = True  # from here on it may be mounted: release it on any exit
        try:
            async with asyncio.timeout(self.deps.mount_timeout_s):
                root = await self.deps.mounter.mount(self.key, storage)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise SessionFailure(FC.MOUNT_FAILED, "mounting recorder storage timed out",
                                 detail={"storage": _storage_desc(storage)}) from None
        except Exception as exc:
            raise SessionFailure(FC.MOUNT_FAILED, f"mounting recorder storage failed: {exc}",
                                 detail={"storage": _storage_desc(storage)}) from exc
        self.done.append("mounted read-only")
        self._advance(State.MOUNTED)
        self._advance(State.OFFLOADING)
        summary = await self._offload(root, recordings, link)
        self.offload_result = summary_facts(summary)
        self._left_on_recorder = [{**_problem(p), "name_hex": p.name.hex()}
                                  for p in summary.failed]
        self._changed()
        await self._summary_faults(summary)
        await self._officer_disagreements(summary)
        if summary.outcome != "complete":
            code = _OUTCOME_FAULT.get(summary.outcome, FC.OFFLOAD_FAILED)
            detail: dict[str, object] = {"offload": self.offload_result}
            if summary.outcome == "storage_full":  # what must be free for it to clear
                detail["bytes_needed"] = summary.bytes_needed
            raise SessionFailure(code, f"offload {summary.outcome}: {summary.detail}".rstrip(": "),
                                 detail=detail)
        self.done.append("offloaded")
        await asyncio.wait_for(self.deps.mounter.unmount(self.key), self.deps.mount_timeout_s)
        self._mounted = False
        self.done.append("unmounted")

    async def _offload(
        self, root: Path, recordings: Sequence[RecordingInfo], link: RecorderLink | None
    ) -> OffloadSummary:
        assert self.identity is not None
        pattern = self.deps.recorder.officer_in_name
        ctx = DockingContext(session_id=self.session_id, bay=self.bay, identity=self.identity,
                             first_docking=await self._first_docking(self.identity.serial),
                             storage_only=self.storage_only,
                             officer_in_name=re.compile(pattern) if pattern else None)
        self._offload_ctx = ctx
        wiper = _LinkWiper(link, self._call) if link is not None else None
        listing = {r.name: (r.start_ms, r.end_ms) for r in recordings}

        def on_progress(p: OffloadProgress) -> None:
            self.progress = progress_facts(p)
            self._changed()

        try:
            return await self.deps.offloader.offload(
                ctx, root, recordings=listing, wiper=wiper, on_progress=on_progress
            )
        except asyncio.CancelledError:
            raise
        except (StoreFullError, DatabaseFull) as exc:
            raise SessionFailure(FC.DOCK_STORAGE_FULL, f"evidence store full: {exc}") from exc
        except Exception as exc:
            raise SessionFailure(FC.OFFLOAD_FAILED, f"offload failed: {exc}",
                                 detail={"error": type(exc).__name__}) from exc

    async def _first_docking(self, serial: str) -> bool:
        """True unless an earlier docking session of this serial is in the ledger."""
        def q(conn: sqlite3.Connection) -> bool:
            return not any(e.session_id != self.session_id
                           for e in ledger_entries(conn, recorder=serial, kind="identified",
                                                   limit=2))

        return await self.deps.db.read(q)

    async def _summary_faults(self, s: OffloadSummary) -> None:
        """Per-file problems of an offload: each kind is one fault naming its files."""
        groups: list[tuple[FC, Severity, str, list[FileProblem]]] = [
            (FC.READ_ERROR, "error", "files could not be read and were not stored", s.failed),
            (FC.HOSTILE_CONTENT, "warning", "entries refused on the recorder storage",
             s.refused),
            (FC.WIPE_FAILED, "warning", "stored files could not be wiped from the recorder",
             s.wipe_failed),
        ]
        lists = {FC.READ_ERROR: "failed", FC.HOSTILE_CONTENT: "refused",
                 FC.WIPE_FAILED: "wipe_failed"}
        for code, severity, text, problems in groups:
            if problems:
                # at most 50 named here; the offloader put the complete list in the ledger
                detail: dict[str, object] = {"count": len(problems),
                                             "files": [_problem(p) for p in problems[:50]]}
                if s.listed.get(lists[code]):
                    detail["complete_list"] = {"ledger_kind": "entry_list",
                                               "ledger_seqs": s.listed[lists[code]]}
                await self._fault(code, f"{len(problems)} {text}", severity, detail)
        late = [f for f in s.stored if f.late]
        if late and self.identity is not None:
            serial, officer = self._who()
            await self.journal.past_fault(
                FC.LATE_OFFLOAD, f"{len(late)} files stored after their deadline",
                recorder=serial, officer=officer, severity="warning",
                detail={"files": [{"name": _text(f.name), "stored_relpath": f.stored_relpath}
                                  for f in late[:50]]})
        bad = s.verify_failed
        if bad:
            await self._fault(FC.VERIFY_FAILED, f"{len(bad)} stored files failed verification",
                              "error", {"count": len(bad),  # each has its "verified" entry
                                        "files": [f.stored_relpath for f in bad[:50]]})

    async def _officer_disagreements(self, s: OffloadSummary) -> None:
        """Files whose names carry another officer than the record read at docking were
        filed under the name's officer (`DockingContext.identity_for`); say so, once."""
        ctx = self._offload_ctx
        if ctx is None:
            return
        docking_officer = ctx.identity.officer_no
        files = [{"name": _text(f.name), "name_hex": f.name.hex(), "officer_no": officer,
                  "stored_relpath": f.stored_relpath}
                 for f in s.stored
                 if (officer := ctx.identity_for(f.name).officer_no) != docking_officer]
        if files:
            names = sorted({str(f["officer_no"]) for f in files})
            await self._fault(
                FC.OFFICER_MISMATCH,
                f"{len(files)} files name officer {', '.join(names)} but the recorder's"
                f" officer record at docking was {docking_officer or '(none)'}; filed under"
                " the officer in the file name", "warning",
                {"docking_officer": docking_officer, "files": files})

    async def _unplug_follows(self) -> bool:
        """After the tty vanished: does the unplug event follow shortly (device removal
        reaches us a moment after the port dies)?"""
        try:
            async with asyncio.timeout(self.deps.unplug_grace_s):
                await self._unplugged.wait()
        except TimeoutError:
            return False
        return True

    # --- identity policy, field log, battery history --------------------------------------

    async def _check_identity_policy(self) -> None:
        """Faults for what makes a recorder unfit to issue, by identity: firmware not on the
        allowlist, no officer assigned. Each is cleared once the condition is gone."""
        ident = self.identity
        assert ident is not None
        policy = self.deps.readiness
        problem = firmware_problem(policy, ident.model, ident.firmware)
        if problem is not None:
            await self._fault(FC.FIRMWARE_NOT_ALLOWED, problem, "warning",
                              {"model": ident.model, "firmware": ident.firmware})
        else:
            await self._clear_condition(FC.FIRMWARE_NOT_ALLOWED, "firmware allowed")
        if policy.require_officer and not ident.officer_no:
            await self._fault(FC.OFFICER_UNASSIGNED, "no officer assigned to the recorder",
                              "warning", {})
        else:
            await self._clear_condition(FC.OFFICER_UNASSIGNED, "officer assigned")

    async def _clear_condition(self, code: FC, reason: str) -> None:
        self.faults = [f for f in self.faults if f.get("code") != code.value]
        serial, _ = self._who()
        await self.journal.clear(code, reason, recorder=serial)

    async def _fetch_event_log(self, link: RecorderLink) -> list[DeviceLogEvent] | None:
        """New entries of the recorder's event log; None if it cannot be read now (the
        cursor stays, so they are read at the next docking)."""
        assert self.identity is not None
        serial = self.identity.serial
        cursor = await self.deps.db.read(lambda c: recorder_history.event_cursor(c, serial))
        # who held it when the log was read, before any assignment made at this docking
        self._field_officer = self.identity.officer_no or None
        try:
            # one entry early: the last one read before must still be there, unchanged
            since = max(0, cursor.next_index - 1) if cursor else 0
            events = await self._read_event_log(link, since)
            if not fieldlog.continues(cursor, events):
                assert cursor is not None
                await self.journal.past_fault(
                    FC.PROTOCOL_ERROR, "the recorder's event log does not continue where it"
                    " was last read (reset or replaced): read again from the start",
                    recorder=serial, officer=self._field_officer, severity="warning",
                    detail={"expected_index": cursor.next_index - 1,
                            "expected_entry": cursor.last_entry,
                            "found": fieldlog.entry_mark(events[0]) if events else None})
                cursor = recorder_history.EventCursor(0, cursor.officer, None)
                events = await self._read_event_log(link, 0)
        except SessionFailure as f:
            if f.detail.get("link_closed"):
                raise
            log.warning("bay %s: recorder event log not read: %s", self.bay, f.reason)
            return None
        self._event_cursor = cursor
        return events

    async def _read_event_log(self, link: RecorderLink, since: int) -> list[DeviceLogEvent]:
        """Up to EVENT_LOG_MAX entries from `since`, in bounded chunks, so a long log (or a
        slow link) neither stalls the docking nor keeps it from ever being read: each
        docking reads on from where the last one stopped. A failure after some chunks keeps
        what was read (the cursor moves only that far)."""
        out: list[DeviceLogEvent] = []
        while len(out) < EVENT_LOG_MAX:
            try:
                chunk = list(await self._call("event log", link.event_log(since, EVENT_LOG_CHUNK),
                                              floor=EVENT_LOG_FLOOR_S))
            except SessionFailure as f:
                if not out or f.detail.get("link_closed"):
                    raise
                log.warning("bay %s: recorder event log read in part: %s", self.bay, f.reason)
                break
            out.extend(chunk)
            if len(chunk) < EVENT_LOG_CHUNK:
                break
            since = chunk[-1].index + 1
        return out

    async def _record_field_events(self, events: list[DeviceLogEvent]) -> None:
        assert self.identity is not None
        serial, officer = self.identity.serial, self._field_officer
        drift = (self.clock or {}).get("drift_before_ms")
        now_us = int(self.deps.wall_time() * 1_000_000)
        here = (int(self.docked_at * 1_000_000) - 10_000_000, None)
        ledger, bay, session_id, cursor = (self.deps.ledger, self.bay, self.session_id,
                                           self._event_cursor)

        def tx(conn: sqlite3.Connection) -> int:
            periods = [here, *fieldlog.docked_periods(conn, serial, exclude_session=session_id)]
            p = fieldlog.plan(events, cursor=cursor, current_officer=officer,
                              drift_ms=drift if isinstance(drift, int | float) else None,
                              now_us=now_us, docked_periods=periods)
            return len(fieldlog.record(conn, ledger, p, serial=serial, bay=bay,
                                       session_id=session_id, now_us=now_us))

        n = await asyncio.shield(self.deps.db.write(tx))
        if n:
            log.info("bay %s: %d fault(s) from the recorder's event log", self.bay, n)

    async def _load_battery_history(self) -> None:
        """Earlier samples of this pack (charge-rate ETA from the first reading on)."""
        assert self.identity is not None
        serial = self.identity.serial
        since = int((self.deps.wall_time() - HISTORY_WINDOW_S) * 1_000_000)
        rows = await self.deps.db.read(lambda c: recorder_history.battery_history(
            c, serial, since_us=since, limit=MAX_BATTERY_SAMPLES))
        self.battery_samples = [(r.time_us / 1e6, r.percent, r.charging) for r in rows]

    async def _battery_reading(self, facts: dict[str, object]) -> None:
        self.battery = facts
        self.battery_at = now = self.deps.wall_time()
        percent = facts.get("percent")
        if isinstance(percent, int | float):
            self.battery_samples.append((now, float(percent), bool(facts.get("charging"))))
            del self.battery_samples[:-MAX_BATTERY_SAMPLES]
        serial, session_id = self._who()[0], self.session_id

        def tx(conn: sqlite3.Connection) -> bool:
            return recorder_history.record_battery(conn, serial, facts,
                                                   time_us=int(now * 1_000_000),
                                                   session_id=session_id)

        try:
            await asyncio.shield(self.deps.db.write(tx))
        except Exception:  # history is for trends: never let it stop the docking
            log.exception("bay %s: battery sample not stored", self.bay)

    # --- clock -------------------------------------------------------------------------

    async def _samples(self, link: RecorderLink) -> list[clockmath.ClockSample]:
        out = []
        for _ in range(max(1, self.deps.clock_samples)):
            r = await self._call("get clock", link.get_clock())
            out.append(clockmath.ClockSample(
                device_utc_ms=r.device_utc_ms, sent_ms=r.sent_wall * 1000,
                received_ms=r.received_wall * 1000))
        return out

    async def _check_clock(self, link: RecorderLink) -> None:
        cfg = self.deps.clock
        try:
            before = clockmath.measure_drift(await self._samples(link))
        except clockmath.ClockError as exc:
            raise SessionFailure(FC.CLOCK_NOT_SET, f"recorder clock unreadable: {exc}") from exc
        synced = self.deps.dock_synchronised()
        action = clockmath.decide(before.drift_ms, tolerance_ms=cfg.tolerance_ms,
                                  dock_synchronised=synced,
                                  require_dock_sync=cfg.require_dock_sync)
        facts: dict[str, object] = {
            "drift_before_ms": before.drift_ms, "rtt_ms": round(before.rtt_ms, 3),
            "samples": before.samples, "tolerance_ms": cfg.tolerance_ms,
            "dock_synchronised": synced, "action": action.value,
        }
        self.clock = dict(facts)
        if action is not clockmath.ClockAction.SET:
            await self._record("clock_checked", facts)
            if action is clockmath.ClockAction.REFUSE_UNSYNCHRONISED:
                await self._fault(
                    FC.DOCK_CLOCK_UNSYNCHRONISED,
                    f"dock clock unsynchronised: recorder drift {before.drift_ms} ms not"
                    " corrected", "warning", facts)
            return
        target = clockmath.set_target_ms(self.deps.wall_time() * 1000, before.rtt_ms / 2)
        set_error: str | None = None
        try:
            await self._call("set clock", link.set_clock(target), FC.CLOCK_NOT_SET)
        except SessionFailure as f:
            if not f.detail.get("device_error"):
                raise
            set_error = f.reason
        after = clockmath.measure_drift(await self._samples(link))
        facts.update({"drift_after_ms": after.drift_ms, "rtt_after_ms": round(after.rtt_ms, 3)})
        ok = set_error is None and clockmath.within_tolerance(after.drift_ms, cfg.tolerance_ms)
        facts["set_ok"] = ok
        if set_error:
            facts["set_error"] = set_error
        self.clock = dict(facts)
        await self._record("clock_set", facts)
        if ok:
            self.done.append("clock set")
        else:
            await self._fault(
                FC.CLOCK_NOT_SET,
                f"recorder clock will not set: drift {before.drift_ms} ms before,"
                f" {after.drift_ms} ms after" + (f" ({set_error})" if set_error else ""),
                "error", facts)

    # --- released: keep an eye on charging ---------------------------------------------

    async def _poll_battery_forever(self, link: RecorderLink) -> None:
        while True:
            await asyncio.sleep(self.deps.battery_poll_s)
            try:
                bat = await self._call("battery", link.battery())
            except SessionFailure as f:
                log.warning("bay %s: battery poll failed: %s", self.bay, f.reason)
                continue
            await self._battery_reading(battery_facts(bat))
            self._changed()

    # --- failure and release -----------------------------------------------------------

    async def _fail(self, f: SessionFailure) -> None:
        await self._make_safe(lazy=False)
        detail = {**f.detail, "state": self.state.value}
        try:
            await self._fault(f.code, f.reason, f.severity, detail)
        except Exception:  # e.g. a disk too full even for the database's reserve
            log.exception("bay %s: fault %s could not be recorded", self.bay, f.code.value)
        self._advance(State.FAILED, f.reason)  # the session ends, whatever the disk says

    async def _make_safe(self, *, lazy: bool) -> None:
        """Unmount and lock storage if we hold them; each step best-effort and bounded."""
        if self._mounted:
            try:
                await asyncio.wait_for(self.deps.mounter.unmount(self.key, lazy=lazy),
                                       self._bound())
                self._mounted = False
                self.done.append("unmounted" + (" (lazy)" if lazy else ""))
            except Exception:
                log.exception("bay %s: unmount failed", self.bay)
                if not lazy:
                    await self._make_safe_lazy_fallback()
        if self._unlocked and self._link is not None and not self._unplugged.is_set():
            try:
                await asyncio.wait_for(self._link.set_mass_storage(False),
                                       self._bound(MASS_STORAGE_TIMEOUT_S))
                self._unlocked = False
                self.done.append("storage locked")
            except Exception as exc:
                log.warning("bay %s: could not lock recorder storage: %s", self.bay, exc)

    async def _make_safe_lazy_fallback(self) -> None:
        try:
            await asyncio.wait_for(self.deps.mounter.unmount(self.key, lazy=True), self._bound())
            self._mounted = False
            self.done.append("unmounted (lazy)")
        except Exception:
            log.exception("bay %s: lazy unmount failed too", self.bay)

    async def _release(self, reason: str, *, lazy: bool) -> None:
        """Leave the recorder safe and close the docking with its `undocked` record."""
        await self._make_safe(lazy=lazy)
        if self.state is State.REMOVED:
            return
        reached = self.state.value
        self._advance(State.REMOVED, reason)
        await self._record("undocked", {
            "reason": reason, "state_reached": reached, "done": list(self.done),
            "offload": self.offload_result, "faults": [f["code"] for f in self.faults],
            "clock": self.clock, "battery": self.battery,
            "unchecked": ["officer", "clock", "battery"] if self.storage_only else [],
        })

    async def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.close(), self._bound())

    # --- helpers -----------------------------------------------------------------------

    def _bound(self, floor: float = 0.0) -> float:
        """Outer limit of one protocol call: the client's own timeouts plus margin.

        `floor` mirrors the client's minimum timeout of slow commands (mass storage
        switch, guarded delete), so this backstop never cuts them short."""
        r = self.deps.recorder
        return max(r.command_timeout_s, floor) * (r.retries + 1) + 1.0

    async def _call(self, what: str, aw: Awaitable[T],
                    device_error: FC = FC.PROTOCOL_ERROR, *, floor: float = 0.0) -> T:
        """One protocol step, bounded, with bridge errors translated to session faults."""
        async with self._translated(what, device_error):
            async with asyncio.timeout(self._bound(floor)):
                return await aw
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    async def _call_paged(self, what: str, fetch: Callable[[PageHook], Awaitable[T]],
                          device_error: FC = FC.PROTOCOL_ERROR) -> T:
        """A step made of many requests (a paged listing): the bound of one request applies
        to each of them, renewed by every page that arrives. A slow listing that keeps
        making progress completes however long it is; one that stalls still times out."""
        loop = asyncio.get_running_loop()
        async with self._translated(what, device_error):
            async with asyncio.timeout(self._bound()) as deadline:
                def progress(_received: int, _total: int) -> None:
                    deadline.reschedule(loop.time() + self._bound())

                return await fetch(progress)
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    @contextlib.asynccontextmanager
    async def _translated(self, what: str, device_error: FC) -> AsyncIterator[None]:
        """Bridge errors and timeouts of one step as session faults naming the step."""
        try:
            yield
        except TimeoutError:
            raise SessionFailure(FC.TIMEOUT, f"recorder did not answer: {what}") from None
        except AuthRefused as exc:
            raise SessionFailure(FC.AUTH_REFUSED, f"recorder authentication refused: {exc}",
                                 detail={"code": exc.code}) from exc
        except LinkTimeout as exc:
            raise SessionFailure(FC.TIMEOUT,
                                 f"recorder did not answer: {what}: {exc}") from exc
        except LinkClosed as exc:
            raise SessionFailure(FC.PROTOCOL_ERROR, f"recorder link closed: {what}: {exc}",
                                 detail={"link_closed": True}) from exc
        except DeviceError as exc:
            raise SessionFailure(device_error, f"recorder refused {what}: {exc}",
                                 detail={"code": exc.code, "device_error": True}) from exc
        except BridgeError as exc:
            raise SessionFailure(FC.PROTOCOL_ERROR,
                                 f"protocol error during {what}: {exc}") from exc

    def _advance(self, state: State, reason: str = "") -> None:
        step = self.machine.advance(state, reason)
        log.info("bay %s: recorder %s -> %s%s", self.bay, step.serial or self.key,
                 state.value, f" ({reason})" if reason else "")
        if self.deps.on_transition is not None:
            try:
                self.deps.on_transition(step)
            except Exception:
                log.exception("on_transition hook failed")
        self._changed()

    def _changed(self) -> None:
        try:
            self.deps.on_change()
        except Exception:
            log.exception("on_change hook failed")

    def _who(self) -> tuple[str, str | None]:
        """Recorder and officer for records; before identification the attachment key
        (USB serial) is the best name of the recorder there is."""
        ident = self.identity
        if ident is None:
            return self.key, None
        return ident.serial, ident.officer_no or None

    async def _record(self, kind: str, data: dict[str, object]) -> None:
        serial, officer = self._who()
        await self.journal.entry(kind, recorder=serial, officer=officer, data=data)

    async def _fault(self, code: FC, reason: str, severity: Severity,
                     detail: dict[str, object]) -> None:
        serial, officer = self._who()
        self.faults.append({"code": code.value, "reason": reason, "severity": severity})
        self._changed()
        await self.journal.fault(code, reason, recorder=serial, officer=officer,
                                 severity=severity, detail=detail)

    def snapshot(self) -> dict[str, object]:
        ident = self.identity
        return {
            "bay": self.bay,
            "key": self.key,
            "session_id": self.session_id,
            "serial": ident.serial if ident else None,
            "model": ident.model if ident else None,
            "hardware_rev": ident.hardware_rev if ident else None,
            "firmware": ident.firmware if ident else None,
            "officer_no": (ident.officer_no or None) if ident else None,
            "officer_name": (ident.officer_name or None) if ident else None,
            "unit_no": (ident.unit_no or None) if ident else None,
            "unit_name": (ident.unit_name or None) if ident else None,
            "storage_only": self.storage_only,
            "state": self.state.value,
            "state_since": self.machine.history[-1].at if self.machine.history
            else self.docked_at,
            "docked_at": self.docked_at,
            "battery": self.battery,
            "battery_at": self.battery_at,
            "battery_samples": [list(s) for s in self.battery_samples],
            "storage": self.storage,
            "clock": self.clock,
            "offload": self.progress,
            "offload_result": self.offload_result,
            "faults": list(self.faults),
            "unchecked": ["officer", "clock", "battery"] if self.storage_only else [],
        }


class _LinkWiper:
    """The offloader's `Wiper`: the recorder's guarded delete (size + BLAKE3 checked)."""

    def __init__(self, link: RecorderLink, call: Callable[..., Awaitable[Any]]) -> None:
        self._link = link
        self._call = call

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        await self._call("delete recording",
                         self._link.delete_recording(name, size, blake3_digest),
                         floor=DELETE_TIMEOUT_S)

    async def listed(self) -> set[bytes]:
        """The recorder's listing asked again: confirms what its deletes claimed."""
        return {r.name for r in await self._call("list recordings",
                                                 self._link.list_recordings())}


_OUTCOME_FAULT: dict[str, FC] = {
    "interrupted": FC.STORAGE_ERROR,
    "storage_full": FC.DOCK_STORAGE_FULL,
    "store_error": FC.OFFLOAD_FAILED,
}


def _storage_desc(s: StorageRef) -> str:
    return s.path if isinstance(s, DirectoryStorage) else s.devnode


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _problem(p: FileProblem) -> dict[str, object]:
    return {**(p.detail or {}), "name": _text(p.name), "reason": p.reason}


def summary_facts(s: OffloadSummary) -> dict[str, object]:
    """The JSON-able outcome of an offload, for the undocked record and the snapshot."""
    return {
        "outcome": s.outcome, "detail": s.detail, "stored": len(s.stored),
        "already_stored": len(s.already_stored), "failed": len(s.failed),
        "refused": len(s.refused), "wiped": len(s.wiped), "wipe_failed": len(s.wipe_failed),
        "late": sum(1 for f in s.stored if f.late), "changed": len(s.changed),
        "bytes_copied": s.bytes_copied,
        "resumed_bytes": sum(f.resumed_from for f in s.stored),
    }


def progress_facts(p: OffloadProgress) -> dict[str, object]:
    return {
        "bytes_done": p.bytes_done, "bytes_total": p.bytes_total, "files_done": p.files_done,
        "files_total": p.files_total, "rate_bps": round(p.rate_bps, 1), "eta_s": p.eta_s,
        "current_file": _text(p.current_file) if p.current_file is not None else None,
    }
