"""A virtual dock: labelled bays, recorders plugged into them, and the announcement socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hw_sim.announce import AnnounceServer, Message
from hw_sim.errors import BayError
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import Faults, RecorderSpec

log = logging.getLogger(__name__)


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
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir = workdir
        self._server = AnnounceServer(socket_path, self._snapshot) if socket_path else None
        self._lock = asyncio.Lock()
        self._reboots: set[asyncio.Task[None]] = set()  # recorders booting, off the bus

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

    def _snapshot(self) -> Message:
        return {
            "bays": self.bays,
            "recorders": [
                {
                    "bay": bay,
                    "serial": rec.spec.serial,
                    "tty": rec.tty_path,
                    "storage": str(rec.storage_path) if rec.storage_path else None,
                }
                for bay, rec in self.recorders.items()
            ],
        }

    def _announce(self, msg_type: str, **fields: Any) -> None:
        if self._server is not None:
            self._server.broadcast(msg_type, **fields)

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
                if path is None:
                    self._announce("storage_removed", bay=bay, serial=serial)
                else:
                    self._announce("storage", bay=bay, serial=serial, path=str(path))

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
            self.recorders[bay] = rec
            self._announce("plugged", bay=bay, serial=serial, tty=tty)
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
            await rec.stop()  # announces storage_removed through on_storage if it was exposed
            self._announce("unplugged", bay=bay, serial=rec.spec.serial)
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
