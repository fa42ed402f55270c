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
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent import __version__, sdnotify
from agent.compliance.deadlines import load_day_list, make_policy
from agent.config import needs_fleet_secret
from agent.control import ControlServer
from agent.devices.events import DeviceEvent
from agent.dockview import DockView
from agent.health.monitor import HealthMonitor
from agent.metrics import MetricsServer, collect
from agent.mount.mounter import make_mounter
from agent.offload import Offloader
from agent.session.clock import dock_clock_probe
from agent.session.ports import recorder_client_opener
from agent.session.runner import SessionDeps
from agent.session.supervisor import BaySupervisor
from agent.settings import Settings
from agent.store.db import Database
from agent.store.ledger import Ledger
from agent.store.schemas import ALL_SCHEMAS
from agent.store.signing import CheckpointSigner, load_or_create_key
from agent.watchdog import LoopLag, run_watchdog

log = logging.getLogger("dock_agent")


class StartupError(Exception):
    """The agent cannot start: a file, directory or key it needs is not usable."""


def prepare_directories(settings: Settings) -> None:
    """State and store are private to the agent's user (regulation 000 §14)."""
    for path, mode in (
        (settings.dock.state_dir, 0o700),
        (settings.dock.store_dir, 0o750),
        (settings.dock.runtime_dir, 0o750),
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        except OSError as exc:
            raise StartupError(f"cannot prepare {path}: {exc}") from exc


def read_fleet_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise StartupError(f"cannot read recorder fleet secret {path}: {exc}") from exc
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
    key = load_or_create_key(settings.key_file)
    db = await asyncio.to_thread(Database, settings.db_path, ALL_SCHEMAS)
    ledger = Ledger(settings.dock.id, CheckpointSigner(key))
    offloader = Offloader(db, ledger, settings.dock.store_dir, settings.offload, deadline, tz)
    view = DockView(settings, db, deadline)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reporter = None
    if settings.mqtt.enabled:
        from agent.mqtt.reporter import Reporter

        reporter = Reporter(db, settings.mqtt, settings.dock.id, view.actions(),
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
        battery_poll_s=settings.recorder.battery_poll_s,
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
            handlers = view.control_handlers()

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
            raise _Shutdown  # noqa: TRY301 - leaves the TaskGroup, cancelling every task
    except* _Shutdown:
        pass
    finally:
        with contextlib.suppress(Exception):
            await offloader.close()
        await db.write(ledger.checkpoint)
        db.close()
    return 0


class _Shutdown(Exception):
    """Raised inside the TaskGroup to cancel every task on a clean stop."""
