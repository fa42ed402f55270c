"""A virtual dock: labelled bays, recorders plugged into them, and the announcement socket.

Bay N (1-based, in the order given) is USB port N of the simulated host controller; every
plug, unplug and storage change is announced as the udev-like device records a real dock
would produce (`hw_sim.uevents`), so the agent's device tracker handles them as it does
udev's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hw_sim import uevents
from hw_sim.announce import AnnounceServer, Message
from hw_sim.errors import BayError
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import Faults, RecorderSpec

log = logging.getLogger(__name__)


@dataclass
class _BayDevices:
    """The udev properties of what a plugged recorder currently shows the host."""

    usb: uevents.Props
    tty: uevents.Props
    block: uevents.Props | None = None

    def records(self) -> list[uevents.Record]:
        present = [self.usb, self.tty] + ([self.block] if self.block is not None else [])
        return [uevents.added(props, self.usb) for props in present]


class VirtualDock:
    """N bays; `plug`/`unplug` recorders; announces changes on `socket_path` if given.

    `workdir` holds the recorders' storage (default: a temporary directory removed on
    stop). Use as `async with VirtualDock(...) as dock:`; stop unplugs every recorder.
    """

    def __init__(
        self,
        bays: int | Sequence[str] = 4,
        socket_path: Path | None = None,
        *,
        workdir: Path | None = None,
        secret: bytes = DEFAULT_FLEET_SECRET,
    ) -> None:
        labels = [str(i) for i in range(1, bays + 1)] if isinstance(bays, int) else list(bays)
        if not labels or len(set(labels)) != len(labels):
            raise BayError("bay labels must be non-empty and unique")
        self.bays: list[str] = labels
        self.secret = secret
        self.recorders: dict[str, VirtualRecorder] = {}
        self._devices: dict[str, _BayDevices] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir = workdir
        self._server = AnnounceServer(socket_path, self._snapshot) if socket_path else None
        self._lock = asyncio.Lock()
        self._reboots: set[asyncio.Task[None]] = set()  # recorders booting, off the bus
        self._plugs = 0  # enumerations so far: each plug gets the bus's next device number

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dock-sim-")
            self._workdir = Path(self._tmp.name)
        return self._workdir

    async def start(self) -> None:
        if self._server is not None:
            await self._server.start()

    async def stop(self) -> None:
        for task in list(self._reboots):
            task.cancel()
        for bay in list(self.recorders):
            with contextlib.suppress(BayError):
                await self.unplug(bay)
        if self._server is not None:
            await self._server.stop()
        if self._tmp is not None:
            await asyncio.to_thread(self._tmp.cleanup)
            self._tmp = None
            self._workdir = None

    async def __aenter__(self) -> VirtualDock:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def port(self, bay: str) -> int:
        """The USB port number of `bay` on the simulated controller."""
        return self.bays.index(bay) + 1

    def _snapshot(self) -> Message:
        return {
            "bays": [{"label": bay, "id_path": uevents.id_path(self.port(bay))}
                     for bay in self.bays],
            "devices": [record for devices in self._devices.values()
                        for record in devices.records()],
        }

    def _announce(self, record: uevents.Record) -> None:
        if self._server is not None:
            self._server.broadcast("uevent", device=record)

    def _storage_changed(self, bay: str, path: Path | None) -> None:
        devices = self._devices.get(bay)
        if devices is None or (devices.block is not None and path is not None and
                               devices.block[uevents.STORAGE_DIR_PROPERTY] == str(path)):
            return  # not plugged (yet), or the same disk still there
        if devices.block is not None:  # a new exposure is a new disk: the old one goes first
            self._announce(uevents.removed(devices.block))
            devices.block = None
        if path is not None:
            devices.block = uevents.block_props(self.port(bay), str(path))
            self._announce(uevents.added(devices.block, devices.usb))

    async def plug(
        self, bay: str, spec: RecorderSpec, workdir: Path | None = None
    ) -> VirtualRecorder:
        """Plug a recorder built from `spec` into `bay`; returns it once its tty is served."""
        async with self._lock:
            if bay not in self.bays:
                raise BayError(f"no bay {bay!r} (bays: {', '.join(self.bays)})")
            if bay in self.recorders:
                raise BayError(f"bay {bay} is occupied by {self.recorders[bay].spec.serial}")
            for other, rec in self.recorders.items():
                if rec.spec.serial == spec.serial:
                    raise BayError(f"recorder {spec.serial} is already in bay {other}")
            serial = spec.serial

            def storage_changed(path: Path | None) -> None:
                self._storage_changed(bay, path)

            def self_unplugged() -> None:  # a fault made the recorder drop off the bus
                asyncio.get_running_loop().create_task(self._unplug_if(bay, rec))

            def rebooted() -> None:  # the recorder leaves the bay's bus and comes back
                task = asyncio.get_running_loop().create_task(self._reboot(bay, rec))
                self._reboots.add(task)
                task.add_done_callback(self._reboots.discard)

            rec = VirtualRecorder(
                spec, workdir or self.workdir, secret=self.secret,
                on_storage=storage_changed, on_unplug=self_unplugged, on_reboot=rebooted,
            )
            tty = await rec.start()
            port = self.port(bay)
            # Device numbers 2..127 in turn (1 is the root hub), as a kernel hands them out.
            devnum = 2 + self._plugs % 126
            self._plugs += 1
            usb = uevents.usb_props(port, serial, spec.usb_vid, spec.usb_pid, spec.model,
                                    devnum)
            devices = _BayDevices(usb, uevents.tty_props(port, tty, uevents.born_ns(tty)))
            self.recorders[bay] = rec
            self._devices[bay] = devices
            self._announce(uevents.added(usb, usb))  # parents before children, as udev does
            self._announce(uevents.added(devices.tty, usb))
            log.info("bay %s: plugged %s on %s", bay, serial, tty)
            return rec

    async def _unplug_if(self, bay: str, rec: VirtualRecorder) -> None:
        if self.recorders.get(bay) is rec:
            with contextlib.suppress(BayError):
                await self.unplug(bay)

    async def _reboot(self, bay: str, rec: VirtualRecorder) -> None:
        """Firmware reboot: the bay's device unplugs, and re-plugs after the boot delay."""
        if self.recorders.get(bay) is not rec:
            return
        with contextlib.suppress(BayError):
            await self.unplug(bay)
        await asyncio.sleep(rec.spec.boot_delay_s)
        if bay not in self.recorders:
            await self.plug(bay, rec.spec, rec.dir.parent)

    async def unplug(self, bay: str) -> None:
        """Pull the recorder out of `bay`: storage vanishes, the tty closes."""
        async with self._lock:
            rec = self.recorders.pop(bay, None)
            if rec is None:
                raise BayError(f"bay {bay!r} is empty")
            await rec.stop()  # announces the disk's removal through on_storage if exposed
            devices = self._devices.pop(bay)
            if devices.block is not None:
                self._announce(uevents.removed(devices.block))
            self._announce(uevents.removed(devices.tty))
            self._announce(uevents.removed(devices.usb))
            log.info("bay %s: unplugged %s", bay, rec.spec.serial)

    def set_faults(self, bay: str, faults: Faults) -> None:
        """Change the faults of the recorder in `bay` (see VirtualRecorder.set_faults)."""
        rec = self.recorders.get(bay)
        if rec is None:
            raise BayError(f"bay {bay!r} is empty")
        rec.set_faults(faults)

    def listing(self) -> list[tuple[str, str | None, str | None]]:
        """(bay, serial or None, storage path or None) for every bay."""
        out: list[tuple[str, str | None, str | None]] = []
        for bay in self.bays:
            rec = self.recorders.get(bay)
            if rec is None:
                out.append((bay, None, None))
            else:
                path = rec.storage_path
                out.append((bay, rec.spec.serial, str(path) if path else None))
        return out
