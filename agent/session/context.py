"""What one docking session knows and the calls every step makes.

`SessionContext` holds the session's facts (identity, battery, clock, offload result,
faults) and its resources (control channel, mount), and offers the steps their common
calls: one bounded protocol call with bridge errors translated to session faults, custody
records and faults, state transitions. The steps (agent.session.steps) do the work; the
runner (agent.session.runner) decides nothing but asks the machine what comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from agent.devices.events import PortIdentity, StorageRef
from agent.docking_state import (
    STORAGE_ONLY_UNCHECKED,
    BatteryFacts,
    BatterySampleRow,
    ClockFacts,
    FaultNote,
    OffloadProgressFacts,
    OffloadResult,
    SessionSnapshot,
    StorageFacts,
)
from agent.domain import DockingContext, RecorderIdentity
from agent.mount.mounter import Mounter
from agent.offload import Offloader
from agent.session.custody_records import SessionRecords
from agent.session.errors import SessionFailure
from agent.session.recorder_link import LinkOpener, RecorderLink
from agent.session.state_machine import SessionMachine, State, Step, Transition
from agent.settings import (
    ClockSettings,
    DeviceSettings,
    OffloadSettings,
    ReadinessSettings,
    RecorderSettings,
)
from agent.store import recorder_history
from agent.store.db import Database
from agent.store.faults import FaultCode as FC
from agent.store.faults import Severity
from agent.store.ledger import Ledger
from firmware_bridge.errors import AuthRefused, BridgeError, DeviceError, LinkClosed, LinkTimeout
from firmware_bridge.messages import DeviceLogEvent

log = logging.getLogger("agent.session.runner")

T = TypeVar("T")

ChangeHook = Callable[[], None]
PageHook = Callable[[int, int], None]  # (entries received, total) after each page


class StepUnit(Protocol):
    """Executes one step of the plan (`Step`) on the session's context, or raises
    `SessionFailure`; the runner then reports the step completed to the machine."""

    async def run(self, ctx: SessionContext) -> None: ...


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
    dock_synchronised: Callable[[], bool]  # see agent.dockclock.dock_clock_probe
    open_link: LinkOpener
    on_change: ChangeHook = field(default=lambda: None)
    on_transition: Callable[[Transition], None] | None = None  # every state machine step
    battery_poll_s: float = 45.0
    readiness: ReadinessSettings = field(default_factory=ReadinessSettings)
    # readiness settings -> the same with the central firmware allowlists laid over them
    # (agent.firmware's FirmwareService.readiness): the identify-time firmware check judges
    # with exactly the lists readiness and the firmware view use
    firmware_readiness: Callable[[ReadinessSettings], ReadinessSettings] = field(
        default=lambda settings: settings)
    mount_timeout_s: float = 120.0
    unplug_grace_s: float = 3.0  # a closed link is an unplug if the event follows within
    clock_samples: int = 3
    wall_time: Callable[[], float] = time.time
    # Units of the optional steps this dock runs (Step.FIRMWARE_UPDATE): a step without a
    # unit here is not in any session's plan.
    optional_units: dict[Step, StepUnit] = field(default_factory=dict)


@dataclass
class Facts:
    """The session's facts as gathered so far (its snapshot is made of these)."""

    identity: RecorderIdentity | None = None
    battery: BatteryFacts | None = None
    battery_at: float | None = None  # dock wall time of the last battery reading
    # (dock wall time, percent, charging) of this pack, including earlier dockings
    battery_samples: list[BatterySampleRow] = field(default_factory=list)
    storage: StorageFacts | None = None
    clock: ClockFacts | None = None
    progress: OffloadProgressFacts | None = None
    offload_result: OffloadResult | None = None
    faults: list[FaultNote] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # achieved, for the undocked record


@dataclass
class Resources:
    """What the session holds and must give back: control channel, unlock, mount."""

    link: RecorderLink | None = None
    unlocked: bool = False
    mounted: bool = False
    storage_ref: StorageRef | None = None
    storage_event: asyncio.Event = field(default_factory=asyncio.Event)
    storage_lost: bool = False
    unplugged: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Carry:
    """Values one step hands to a later one."""

    protocol_version: int | None = None
    field_events: list[DeviceLogEvent] | None = None  # the recorder's new log entries
    event_cursor: recorder_history.EventCursor | None = None
    field_officer: str | None = None  # who held the recorder when its log was read
    footage_settled: bool = False  # this docking's offload completed
    offload_ctx: DockingContext | None = None
    left_on_recorder: list[dict[str, object]] = field(default_factory=list)  # the first
    left_on_recorder_count: int = 0  # all of them
    left_on_recorder_list: dict[str, object] | None = None  # their "entry_list" entries


class SessionContext:
    """One docking session's facts, resources and common calls."""

    def __init__(self, deps: SessionDeps, *, key: str, bay: str, tty_path: str | None,
                 source: str, storage_only: bool, port: PortIdentity | None = None) -> None:
        self.deps = deps
        self.key = key
        self.bay = bay
        self.tty_path = tty_path
        self.port = port  # the port node's device generation, checked when it is opened
        self.source = source
        self.storage_only = storage_only
        self.session_id = uuid.uuid4().hex
        self.machine = SessionMachine(
            bay=bay, key=key, serial=key if storage_only else None, now=deps.wall_time,
            storage_only=storage_only, optional_steps=frozenset(deps.optional_units))
        self.records = SessionRecords(deps.db, deps.ledger, bay=bay, session_id=self.session_id)
        self.docked_at = deps.wall_time()
        self.facts = Facts(identity=RecorderIdentity(serial=key) if storage_only else None)
        self.res = Resources()
        self.carry = Carry()
        self.assigning = asyncio.Lock()

    @property
    def state(self) -> State:
        return self.machine.state

    # --- protocol calls ----------------------------------------------------------------

    def bound(self, floor: float = 0.0) -> float:
        """Outer limit of one protocol call: the client's own timeouts plus margin.

        `floor` mirrors the client's minimum timeout of slow commands (mass storage
        switch, guarded delete), so this backstop never cuts them short."""
        r = self.deps.recorder
        return max(r.command_timeout_s, floor) * (r.retries + 1) + 1.0

    async def call(self, what: str, aw: Awaitable[T],
                   device_error: FC = FC.PROTOCOL_ERROR, *, floor: float = 0.0) -> T:
        """One protocol step, bounded, with bridge errors translated to session faults."""
        async with self._translated(what, device_error):
            async with asyncio.timeout(self.bound(floor)):
                return await aw
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    async def call_paged(self, what: str, fetch: Callable[[PageHook], Awaitable[T]],
                         device_error: FC = FC.PROTOCOL_ERROR) -> T:
        """A step made of many requests (a paged listing): the bound of one request applies
        to each of them, renewed by every page that arrives. A slow listing that keeps
        making progress completes however long it is; one that stalls still times out."""
        loop = asyncio.get_running_loop()
        async with self._translated(what, device_error):
            async with asyncio.timeout(self.bound()) as deadline:
                def progress(_received: int, _total: int) -> None:
                    deadline.reschedule(loop.time() + self.bound())

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

    def require_link(self) -> RecorderLink:
        link = self.res.link
        if link is None:
            raise SessionFailure(FC.PROTOCOL_ERROR, "no control channel to the recorder")
        return link

    def require_identity(self) -> RecorderIdentity:
        ident = self.facts.identity
        assert ident is not None, "identified before this step"
        return ident

    # --- state, records, faults --------------------------------------------------------

    def advance(self, state: State, reason: str = "") -> None:
        step = self.machine.advance(state, reason)
        log.info("bay %s: recorder %s -> %s%s", self.bay, step.serial or self.key,
                 state.value, f" ({reason})" if reason else "")
        if self.deps.on_transition is not None:
            try:
                self.deps.on_transition(step)
            except Exception:
                log.exception("on_transition hook failed")
        self.changed()

    def changed(self) -> None:
        try:
            self.deps.on_change()
        except Exception:
            log.exception("on_change hook failed")

    def who(self) -> tuple[str, str | None]:
        """Recorder and officer for records; before identification the attachment key
        (USB serial) is the best name of the recorder there is."""
        ident = self.facts.identity
        if ident is None:
            return self.key, None
        return ident.serial, ident.officer_no or None

    def open_record(self, kind: str, data: dict[str, object]) -> asyncio.Future[None]:
        """Queue the session's first ledger entry now; see SessionRecords.open."""
        serial, officer = self.who()
        return self.records.open(kind, recorder=serial, officer=officer, data=data)

    async def record(self, kind: str, data: dict[str, object]) -> None:
        serial, officer = self.who()
        await self.records.entry(kind, recorder=serial, officer=officer, data=data)

    async def fault(self, code: FC, reason: str, severity: Severity,
                    detail: dict[str, object]) -> None:
        serial, officer = self.who()
        self.facts.faults.append(FaultNote(code.value, reason, severity))
        self.changed()
        await self.records.fault(code, reason, recorder=serial, officer=officer,
                                 severity=severity, detail=detail)

    async def clear_condition(self, code: FC, reason: str) -> None:
        self.facts.faults = [f for f in self.facts.faults if f.code != code.value]
        serial, _ = self.who()
        await self.records.clear(code, reason, recorder=serial)

    def snapshot(self) -> SessionSnapshot:
        f, history = self.facts, self.machine.history
        return SessionSnapshot(
            bay=self.bay, key=self.key, session_id=self.session_id, identity=f.identity,
            storage_only=self.storage_only, state=self.state.value,
            state_since=history[-1].at if history else self.docked_at,
            docked_at=self.docked_at, battery=f.battery, battery_at=f.battery_at,
            battery_samples=tuple(f.battery_samples), storage=f.storage, clock=f.clock,
            offload=f.progress, offload_result=f.offload_result, faults=tuple(f.faults),
            unchecked=STORAGE_ONLY_UNCHECKED if self.storage_only else (),
        )
