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
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from agent import __version__, sdnotify
from agent.compliance.deadlines import load_day_list, make_policy
from agent.config import needs_fleet_secret
from agent.control import ControlServer
from agent.devices.events import DeviceEvent
from agent.dockview import DockView
from agent.firmware import store as firmware_store
from agent.firmware.errors import FirmwareError
from agent.firmware.service import FirmwareControl
from agent.firmware.service import make_service as make_firmware_service
from agent.health.integrity import audit_ledger
from agent.health.monitor import HealthMonitor
from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, prepare_private_dir, read_input_file
from agent.lifecycle.service import LifecycleService
from agent.metrics import MetricsServer, collect
from agent.mount.mounter import make_mounter
from agent.offload import Offloader
from agent.session.clock import dock_clock_probe
from agent.session.ports import recorder_client_opener
from agent.session.runner import SessionDeps
from agent.session.supervisor import BaySupervisor
from agent.settings import Settings
from agent.store.db import DB_RESERVE_BYTES, Database
from agent.store.errors import SigningError
from agent.store.ledger import Ledger
from agent.store.schemas import ALL_SCHEMAS
from agent.store.signing import CheckpointSigner, load_or_create_key
from agent.store.unended import close_unended_sessions
from agent.watchdog import LoopLag, run_watchdog

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


def make_device_source(settings: Settings) -> object:
    if settings.devices.source == "sim":
        from agent.devices.sim_source import SimDeviceSource

        return SimDeviceSource(settings.devices.sim_socket)
    from agent.devices.udev_source import UdevDeviceSource

    return UdevDeviceSource(settings.devices)


async def run_agent(settings: Settings, *, log: logging.Logger = log) -> int:
    prepare_directories(settings)
    # Storage-only fleets never authenticate: they need (and may have) no secret.
    secret = (read_fleet_secret(settings.recorder.fleet_secret_file)
              if needs_fleet_secret(settings.devices) else b"")
    tz = ZoneInfo(settings.dock.timezone)
    deadline = make_policy(
        hours=settings.deadline.hours,
        working_days=settings.deadline.working_days,
        tz=tz,
        holidays=load_day_list(settings.deadline.holiday_file),
        workdays=load_day_list(settings.deadline.workday_file),
    )
    try:
        key = load_or_create_key(settings.key_file)
    except SigningError as exc:
        raise StartupError(str(exc)) from None
    db = await asyncio.to_thread(Database, settings.db_path, [*ALL_SCHEMAS, firmware_store.SCHEMA],
                                 reserve_bytes=DB_RESERVE_BYTES)
    ledger = Ledger(settings.dock.id, CheckpointSigner(key))
    try:
        firmware = make_firmware_service(settings, db, ledger)
    except FirmwareError as exc:
        raise StartupError(str(exc)) from None
    unended = await db.write(lambda conn: close_unended_sessions(conn, ledger))
    if unended:
        log.warning("closed %d docking session(s) whose end was never recorded (power loss "
                    "or crash): %s", len(unended), ", ".join(unended))
    offloader = Offloader(db, ledger, settings.dock.store_dir, settings.offload, deadline, tz)
    view = DockView(settings, db, deadline, firmware)
    await firmware.load()
    upload_tasks, close_uploads = _upload_tasks(settings, db, ledger, view)
    lifecycle = LifecycleService(
        settings.access, settings.audit, db, ledger, key, dock_id=settings.dock.id,
        store_dir=settings.dock.store_dir,
        busy=lambda: any(r.get("state") == "offloading" for r in view.recorders()))
    await lifecycle.recover()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reporter = None
    if settings.mqtt.enabled:
        from agent.mqtt.reporter import Reporter

        reporter = Reporter(db, settings.mqtt, settings.dock.id, view.actions(lifecycle, firmware),
                            agent_version=__version__)
        view.attach_reporter(reporter)
        db.on_commit(reporter.notify_outbox)

    deps = SessionDeps(
        db=db,
        ledger=ledger,
        mounter=make_mounter(settings.mount),
        offloader=offloader,
        devices=settings.devices,
        recorder=settings.recorder,
        clock=settings.clock,
        offload=settings.offload,
        fleet_secret=secret,
        dock_synchronised=dock_clock_probe(settings.clock),
        open_link=recorder_client_opener(settings.recorder),
        on_change=view.sessions_changed,
        readiness=settings.readiness,
        battery_poll_s=settings.recorder.battery_poll_s,
        firmware=firmware.after_offload,
    )
    events: asyncio.Queue[DeviceEvent] = asyncio.Queue()
    source = make_device_source(settings)
    lag = LoopLag()
    health = HealthMonitor(settings, db, view, lag)

    try:
        async with asyncio.TaskGroup() as tg:
            supervisor = BaySupervisor(deps, tg)
            view.attach_supervisor(supervisor, ledger)

            async def apply_assignment(serial: str) -> bool:
                session = supervisor.docked(serial)
                return session is not None and await session.apply_pending_assignment()

            view.apply_assignment = apply_assignment
            essential: dict[str, asyncio.Task[None]] = {}

            async def dispatch() -> None:
                while True:
                    await supervisor.handle(await events.get())

            essential["device source"] = tg.create_task(
                source.run(events.put_nowait), name="device-source"  # type: ignore[attr-defined]
            )
            essential["dispatcher"] = tg.create_task(dispatch(), name="dispatcher")
            if reporter is not None:
                essential["publisher"] = tg.create_task(reporter.run(), name="publisher")
            handlers = {**view.control_handlers(), **lifecycle.control_handlers(),
                        **FirmwareControl(firmware, view.recorders).handlers()}

            async def last_health(_: dict[str, Any]) -> dict[str, Any]:
                return dict(health.last)  # read-only: the latest sample (dock-screen header)

            handlers["health"] = last_health
            control = ControlServer(settings.control_socket, handlers)
            tg.create_task(control.serve(), name="control")
            tg.create_task(lag.run(), name="loop-lag")
            if settings.control.metrics_port is not None:
                metrics = MetricsServer(settings.control.metrics_port, lambda: collect(
                    view.recorders(),
                    asdict(reporter.stats) if reporter is not None else None,
                    health.last,
                ))
                tg.create_task(metrics.serve(), name="metrics")
            tg.create_task(health.run(), name="health")
            tg.create_task(audit_ledger(db, ledger, settings.db_path, key.public_key()),
                           name="ledger-audit")
            for name, make in upload_tasks:
                tg.create_task(make(), name=name)
            if settings.audit.enabled:
                tg.create_task(lifecycle.run_audits(), name="fixity-audit")
            tg.create_task(
                run_watchdog(lag, lambda: essential, lambda p: log.error("unhealthy: %s", p)),
                name="watchdog",
            )
            sdnotify.notify("READY=1")
            log.info("dock agent started", extra={"dock_id": settings.dock.id})
            await stop.wait()
            log.info("stopping")
            sdnotify.notify("STOPPING=1")
            await supervisor.aclose()
            await _final_checkpoint(view, reporter)
            raise _Shutdown  # noqa: TRY301 - leaves the TaskGroup, cancelling every task
    except* _Shutdown:
        pass
    finally:
        with contextlib.suppress(Exception):
            await offloader.close()
        close_uploads()
        try:
            await db.write(ledger.checkpoint)
        except Exception:  # a full disk must not turn a clean stop into a failure
            log.exception("could not write the closing ledger checkpoint")
        db.close()
    return 0


async def _final_checkpoint(view: DockView, reporter: Reporter | None) -> None:
    """Sign the ledger's last entry and hand the checkpoint to the broker before going
    offline, so the central side can tell if this ledger is later cut short."""
    try:
        await view.sign_checkpoint()
        if reporter is not None:
            await asyncio.wait_for(reporter.publish_checkpoint(), 5.0)
    except Exception as exc:  # a clean stop must not fail on this
        log.warning("final checkpoint not published: %s", exc)


def _upload_tasks(settings: Settings, db: Database, ledger: Ledger, view: DockView
                  ) -> tuple[list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]],
                             Callable[[], None]]:
    """Uploader and retention, when an object store is configured. They run beside the
    offloads in this loop; their store I/O is in worker threads, paced so offloads come first."""
    if not settings.upload.enabled:
        return [], lambda: None
    from agent.commands import in_scope
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
        busy=lambda: any(r.get("state") == "offloading" for r in view.recorders()),
    )
    retention = Retention(db, ledger, settings.dock.store_dir, settings.retention, factory,
                          in_scope)
    return [("uploader", uploader.run), ("retention", retention.run)], uploader.close


class _Shutdown(Exception):
    """Raised inside the TaskGroup to cancel every task on a clean stop."""
