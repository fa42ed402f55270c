"""The daemon: wires the one-way flow and runs it in one TaskGroup.

    device source (udev | dock-sim) -> BaySupervisor -> DockingSession (firmware bridge)
      -> Offloader -> evidence store + custody ledger + MQTT outbox (one transaction)
      -> Reporter -> broker

Readiness and health are derived from that state (`agent.dockview`); dockctl reads it over
the control socket or the read-only database. Commands (MQTT, control socket) enter at the
top like any other event. Any essential task failing ends the group, and the process exits
non-zero so systemd restarts it; evidence is safe at every point because each file commits
atomically and resume is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import __version__, sdnotify
from agent.actions import AgentActions
from agent.checkpointing import LedgerCheckpoints
from agent.compliance.deadlines import DeadlinePolicy, load_day_list, make_policy
from agent.config import needs_fleet_secret
from agent.control import ControlServer, Handler
from agent.devices.events import DeviceEvent
from agent.devices.source import DeviceSource, open_device_source
from agent.dockclock import dock_clock_probe
from agent.dockview import DockView, RecorderFeed, status_document
from agent.firmware.errors import FirmwareError
from agent.firmware.service import FirmwareControl, FirmwareService
from agent.firmware.service import make_service as make_firmware_service
from agent.firmware.session_unit import FirmwareUpdateUnit
from agent.health.integrity import audit_ledger
from agent.health.monitor import HealthMonitor, HealthSources
from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, prepare_private_dir, read_input_file
from agent.lifecycle.service import LifecycleService
from agent.longjobs import LongJobs
from agent.metrics import MetricsServer, collect
from agent.mount.mounter import make_mounter
from agent.offload import Offloader
from agent.schemas import ALL_SCHEMAS
from agent.session.context import SessionDeps, StepUnit
from agent.session.recorder_link import recorder_client_opener
from agent.session.registry import SessionTable
from agent.session.state_machine import Step
from agent.session.supervisor import BaySupervisor
from agent.settings import ReadinessSettings, Settings
from agent.store.db import DB_RESERVE_BYTES, Database
from agent.store.errors import SigningError
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner, load_or_create_key
from agent.store.unended import close_unended_sessions
from agent.watchdog import LoopLag, run_watchdog, watch_stop

if TYPE_CHECKING:
    from agent.mqtt.reporter import Reporter

log = logging.getLogger("dock_agent")


class StartupError(Exception):
    """The agent cannot start: a file, directory or key it needs is not usable."""


def prepare_directories(settings: Settings) -> None:
    """State and store are private to the agent's user (regulation 000 §14)."""
    for path, mode, what in (
        (settings.dock.state_dir, 0o700, "state directory"),
        (settings.dock.store_dir, 0o750, "store directory"),
        (settings.dock.runtime_dir, 0o750, "runtime directory"),
    ):
        try:
            prepare_private_dir(path, mode, what)  # never chmods through a symlink
        except InputFileError as exc:
            raise StartupError(str(exc)) from None


def read_fleet_secret(path: Path) -> bytes:
    try:
        secret = read_input_file(path, "recorder fleet secret", max_bytes=MAX_SECRET_BYTES,
                                 secret=True).strip()
    except InputFileError as exc:
        raise StartupError(str(exc)) from None
    if len(secret) < 16:
        raise StartupError(f"recorder fleet secret {path} is shorter than 16 bytes")
    return secret


def make_device_source(settings: Settings) -> DeviceSource:
    return open_device_source(settings.devices)


@dataclass
class _Agent:
    """The assembled one-way flow: every part built with its collaborators."""

    settings: Settings
    db: Database
    ledger: Ledger
    key: Ed25519PrivateKey
    offloader: Offloader
    sessions: SessionTable
    view: DockView
    lifecycle: LifecycleService
    firmware: FirmwareService
    reporter: Reporter | None
    checkpoints: LedgerCheckpoints
    health: HealthMonitor
    deps: SessionDeps
    lag: LoopLag
    uploads: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]
    close_uploads: Callable[[], None]
    jobs: LongJobs  # long worker-thread jobs; a stop ends them (agent.longjobs)


async def _open_store(settings: Settings, log: logging.Logger
                      ) -> tuple[Ed25519PrivateKey, Database, Ledger]:
    try:
        key = load_or_create_key(settings.key_file)
    except SigningError as exc:
        raise StartupError(str(exc)) from None
    db = await asyncio.to_thread(Database, settings.db_path, ALL_SCHEMAS,
                                 reserve_bytes=DB_RESERVE_BYTES)
    ledger = Ledger(settings.dock.id, CheckpointSigner(key))
    unended = await db.write(lambda conn: close_unended_sessions(conn, ledger))
    if unended:
        log.warning("closed %d docking session(s) whose end was never recorded (power loss "
                    "or crash): %s", len(unended), ", ".join(unended))
    return key, db, ledger


def _deadline_policy(settings: Settings) -> tuple[DeadlinePolicy, ZoneInfo]:
    tz = ZoneInfo(settings.dock.timezone)
    return make_policy(
        hours=settings.deadline.hours,
        working_days=settings.deadline.working_days,
        tz=tz,
        holidays=load_day_list(settings.deadline.holiday_file),
        workdays=load_day_list(settings.deadline.workday_file),
    ), tz


async def _assemble(settings: Settings, log: logging.Logger) -> _Agent:
    """Build every part in data-flow order, each given its collaborators."""
    prepare_directories(settings)
    # Storage-only fleets never authenticate: they need (and may have) no secret.
    secret = (read_fleet_secret(settings.recorder.fleet_secret_file)
              if needs_fleet_secret(settings.devices) else b"")
    deadline, tz = _deadline_policy(settings)
    key, db, ledger = await _open_store(settings, log)
    offloader = Offloader(db, ledger, settings.dock.store_dir, settings.offload, deadline, tz)
    try:
        firmware = make_firmware_service(settings, db, ledger)
    except FirmwareError as exc:
        raise StartupError(str(exc)) from None
    await firmware.load()
    sessions = SessionTable()
    feed = RecorderFeed()
    view = DockView(settings, sessions, feed, firmware)

    def busy() -> bool:
        return any(s.offloading for s in sessions.snapshot())

    uploads, close_uploads = _upload_tasks(settings, db, ledger, busy)
    jobs = LongJobs()
    lifecycle = LifecycleService(
        settings.access, settings.audit, db, ledger, key, dock_id=settings.dock.id,
        store_dir=settings.dock.store_dir, busy=busy, jobs=jobs)
    await lifecycle.recover()
    reporter = _make_reporter(settings, db, AgentActions(
        settings, db, ledger, view, assign_now=sessions.apply_pending_assignment,
        lifecycle=lifecycle, firmware=firmware,
        firmware_policy_changed=sessions.firmware_policy_changed, jobs=jobs))
    if reporter is not None:
        feed.subscribe(reporter)
    checkpoints = LedgerCheckpoints(db, ledger, reporter.checkpoint_signed
                                    if reporter is not None else lambda: None)
    clock_probe = dock_clock_probe(settings.clock)
    deps = _session_deps(settings, db, ledger, offloader, secret, clock_probe,
                         view.sessions_changed, FirmwareUpdateUnit(firmware.after_offload),
                         firmware_readiness=firmware.readiness)
    lag = LoopLag()
    health = HealthMonitor(settings, db, ledger, deadline, lag, HealthSources(
        docked=sessions.snapshot, clock_synchronised=clock_probe,
        sign_checkpoint=checkpoints.sign_now, publisher=reporter))
    return _Agent(settings, db, ledger, key, offloader, sessions, view, lifecycle, firmware,
                  reporter, checkpoints, health, deps, lag, uploads, close_uploads, jobs)


def _make_reporter(settings: Settings, db: Database, actions: AgentActions) -> Reporter | None:
    if not settings.mqtt.enabled:
        return None
    from agent.mqtt.reporter import Reporter

    reporter = Reporter(db, settings.mqtt, settings.dock.id, actions, agent_version=__version__)
    db.on_commit(reporter.notify_outbox)
    return reporter


def _session_deps(settings: Settings, db: Database, ledger: Ledger, offloader: Offloader,
                  secret: bytes, clock_probe: Callable[[], bool],
                  on_change: Callable[[], None], firmware_update: StepUnit, *,
                  firmware_readiness: Callable[[ReadinessSettings], ReadinessSettings]
                  ) -> SessionDeps:
    return SessionDeps(
        db=db,
        ledger=ledger,
        mounter=make_mounter(settings.mount),
        offloader=offloader,
        devices=settings.devices,
        recorder=settings.recorder,
        clock=settings.clock,
        offload=settings.offload,
        fleet_secret=secret,
        dock_synchronised=clock_probe,
        open_link=recorder_client_opener(settings.recorder),
        on_change=on_change,
        readiness=settings.readiness,
        battery_poll_s=settings.recorder.battery_poll_s,
        unplug_grace_s=settings.devices.unplug_grace_s,
        optional_units={Step.FIRMWARE_UPDATE: firmware_update},
        firmware_readiness=firmware_readiness,
    )


def _control_handlers(agent: _Agent) -> dict[str, Handler]:
    """dockctl's live queries over the control socket (read-only, plus the lifecycle)."""
    settings, view, reporter, health = agent.settings, agent.view, agent.reporter, agent.health

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return status_document(
            view.recorders(), dock_id=settings.dock.id, version=__version__,
            broker_connected=reporter.connected if reporter is not None else None,
            outbox_depth=reporter.stats.outbox_depth if reporter is not None else None,
            store_free_bytes=health.last.get("store_free_bytes"))

    async def readiness(_: dict[str, Any]) -> dict[str, Any]:
        return view.readiness_report(time.time())

    async def checkpoint(_: dict[str, Any]) -> dict[str, Any]:
        return await agent.checkpoints.sign_now()

    async def last_health(_: dict[str, Any]) -> dict[str, Any]:
        return dict(health.last)  # read-only: the latest sample (dock-screen header)

    firmware = FirmwareControl(agent.firmware, lambda: [v.as_record() for v in view.recorders()])
    return {"status": status, "readiness": readiness, "checkpoint": checkpoint,
            **agent.lifecycle.control_handlers(), **firmware.handlers(), "health": last_health}


def _start_tasks(tg: asyncio.TaskGroup, agent: _Agent, supervisor: BaySupervisor
                 ) -> dict[str, asyncio.Task[None]]:
    """Every task of the running agent; returns the essential ones (watched)."""
    settings, reporter, health = agent.settings, agent.reporter, agent.health
    events: asyncio.Queue[DeviceEvent] = asyncio.Queue()
    source = make_device_source(settings)
    essential: dict[str, asyncio.Task[None]] = {}

    async def dispatch() -> None:
        while True:
            await supervisor.handle(await events.get())

    essential["device source"] = tg.create_task(
        source.run(events.put_nowait), name="device-source"
    )
    essential["dispatcher"] = tg.create_task(dispatch(), name="dispatcher")
    if reporter is not None:
        essential["publisher"] = tg.create_task(reporter.run(), name="publisher")
    control = ControlServer(settings.control_socket, _control_handlers(agent))
    tg.create_task(control.serve(), name="control")
    tg.create_task(agent.lag.run(), name="loop-lag")
    if settings.control.metrics_port is not None:
        metrics = MetricsServer(settings.control.metrics_port, lambda: collect(
            [v.as_record() for v in agent.view.recorders()],
            asdict(reporter.stats) if reporter is not None else None,
            health.last,
        ))
        tg.create_task(metrics.serve(), name="metrics")
    tg.create_task(health.run(), name="health")
    tg.create_task(audit_ledger(agent.db, agent.ledger, settings.db_path,
                                agent.key.public_key(), agent.jobs), name="ledger-audit")
    for name, make in agent.uploads:
        tg.create_task(make(), name=name)
    if settings.audit.enabled:
        tg.create_task(agent.lifecycle.run_audits(), name="fixity-audit")
    tg.create_task(
        run_watchdog(agent.lag, lambda: essential, lambda p: log.error("unhealthy: %s", p)),
        name="watchdog",
    )
    return essential


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_agent(settings: Settings, *, log: logging.Logger = log) -> int:
    agent = await _assemble(settings, log)
    stop = _stop_event()
    try:
        async with asyncio.TaskGroup() as tg:
            supervisor = BaySupervisor(agent.deps, tg, agent.sessions)
            _start_tasks(tg, agent, supervisor)
            sdnotify.notify("READY=1")
            log.info("dock agent started", extra={"dock_id": settings.dock.id})
            await stop.wait()
            log.info("stopping")
            sdnotify.notify("STOPPING=1")
            watch_stop()  # a slow stop logs its stacks (armed until the process exits)
            agent.jobs.request_stop()  # long worker-thread jobs end at their next check
            await supervisor.aclose()
            await _final_checkpoint(agent.checkpoints, agent.reporter)
            if agent.reporter is not None:
                agent.reporter.freeze_states()  # the sessions' stop is not an undocking
            raise _Shutdown  # noqa: TRY301 - leaves the TaskGroup, cancelling every task
    except* _Shutdown:
        pass
    finally:
        await _close(agent)
    log.info("stopped")
    return 0


async def _close(agent: _Agent) -> None:
    await agent.jobs.stop()  # no long job outlives the loop (asyncio.run would wait for it)
    with contextlib.suppress(Exception):
        await agent.offloader.close()
    agent.close_uploads()
    try:
        await agent.db.write(agent.ledger.checkpoint)
    except Exception:  # a full disk must not turn a clean stop into a failure
        log.exception("could not write the closing ledger checkpoint")
    agent.db.close()


async def _final_checkpoint(checkpoints: LedgerCheckpoints, reporter: Reporter | None) -> None:
    """Sign the ledger's last entry and hand the checkpoint to the broker before going
    offline, so the central side can tell if this ledger is later cut short."""
    try:
        await checkpoints.sign_now()
        if reporter is not None:
            async with asyncio.timeout(5.0):
                await reporter.publish_checkpoint()
    except Exception as exc:  # a clean stop must not fail on this
        log.warning("final checkpoint not published: %s", exc)


def _upload_tasks(settings: Settings, db: Database, ledger: Ledger, busy: Callable[[], bool]
                  ) -> tuple[list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]],
                             Callable[[], None]]:
    """Uploader and retention, when an object store is configured. They run beside the
    offloads in this loop; their store I/O is in worker threads, paced so offloads come first."""
    if not settings.upload.enabled:
        return [], lambda: None
    from agent.hold_scope import in_scope
    from agent.upload import client_factory
    from agent.upload.errors import CredentialsError
    from agent.upload.retention import Retention
    from agent.upload.uploader import Uploader

    try:
        factory = client_factory(settings.upload)
    except CredentialsError as exc:
        raise StartupError(str(exc)) from exc
    uploader = Uploader(
        db, ledger, settings.dock.store_dir, settings.upload, settings.retention, factory,
        busy=busy,
    )
    retention = Retention(db, ledger, settings.dock.store_dir, settings.retention, factory,
                          in_scope)
    return [("uploader", uploader.run), ("retention", retention.run)], uploader.close


class _Shutdown(Exception):
    """Raised inside the TaskGroup to cancel every task on a clean stop."""
