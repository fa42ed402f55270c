"""A virtual recorder: firmware on a raw pty, storage on disk, faults injected on both.

    rec = VirtualRecorder(spec, workdir)
    tty = await rec.start()      # plug: the agent opens `tty` with pyserial
    ...                          # host switches mass storage on -> files at rec.storage_path
    await rec.stop()             # unplug: pty closed, storage hidden / unmounted
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from firmware_bridge.messages import LogKind
from hw_sim.blockvolume import BlockVolume, rate_by_kernel
from hw_sim.endpoint import DeviceEndpoint, DeviceServer, PtyPair, host_has_read, open_pty
from hw_sim.errors import FuseUnavailable, SimError
from hw_sim.exposure import StorageExposure
from hw_sim.firmware import RecorderFirmware, RecorderState
from hw_sim.fusemount import fuse_available
from hw_sim.link import LinkFaults, LinkPacer
from hw_sim.spec import Faults, RecorderSpec
from hw_sim.storage import RecorderStorage

log = logging.getLogger(__name__)

DEFAULT_FLEET_SECRET = b"dock-sim default fleet secret"


class VirtualRecorder:
    """One simulated recorder (see module docstring).

    `on_storage(path | None)` is called when its storage becomes readable / goes away;
    `on_unplug()` when a fault makes it drop off the bus (default: it stops itself);
    `on_reboot()` when the host rebooted it and the reply is on the line (default: it stops,
    waits `spec.boot_delay_s` and starts again on a new pty; `plugged` is set once it is up).
    """

    def __init__(
        self,
        spec: RecorderSpec,
        workdir: Path,
        *,
        secret: bytes = DEFAULT_FLEET_SECRET,
        on_storage: Callable[[Path | None], None] | None = None,
        on_unplug: Callable[[], None] | None = None,
        on_reboot: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.dir = workdir / spec.serial
        self.storage = RecorderStorage(spec, self.dir)
        self.firmware = RecorderFirmware(spec, self.storage, self._mass_storage_changed)
        self.exposure = StorageExposure(self.storage, lambda: self._faults, on_storage,
                                        self._fault_unplug, self.firmware.storage_fault)
        self._fleet_secret = secret
        self._on_unplug = on_unplug
        self._on_reboot = on_reboot
        self._pty: PtyPair | None = None
        self._server: DeviceServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._faults = spec.faults
        self.link = LinkFaults(spec.faults)
        self.unplugged = asyncio.Event()
        self.plugged = asyncio.Event()
        self._auth_failures_seen = 0
        self._reboot_task: asyncio.Task[None] | None = None

    # --- public view ------------------------------------------------------------------------
    @property
    def tty_path(self) -> str:
        if self._pty is None:
            raise SimError(f"recorder {self.spec.serial} is not plugged")
        return self._pty.slave_path

    @property
    def storage_dir(self) -> Path:
        """Where the files appear while mass-storage mode is on."""
        return self.storage.media

    @property
    def storage_path(self) -> Path | None:
        """The readable storage directory, or None while locked."""
        return self.exposure.exposed

    @property
    def state(self) -> RecorderState:
        return self.firmware.state

    @property
    def endpoint(self) -> DeviceEndpoint | None:
        return self._server.endpoint if self._server else None

    def _endpoint(self) -> DeviceEndpoint:
        # refuse_auth: the recorder holds a different secret, so every proof fails
        secret = secrets.token_bytes(32) if self._faults.refuse_auth else self._fleet_secret
        return DeviceEndpoint(self.firmware, secret)

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def replies_suppressed(self) -> int:
        return self.link.replies_suppressed

    @property
    def replies_garbled(self) -> int:
        return self.link.replies_garbled

    @property
    def list_pages_sent(self) -> int:
        return self.link.list_pages_sent

    def set_faults(self, faults: Faults) -> None:
        """Change the injected faults until unplug (a dock replug starts from the spec again).

        Link and device faults act at once (`garble_replies` counts afresh); file faults from
        the next mass-storage switch-on, except a kernel-held read rate, which changes at
        once (who holds the rate is decided at plug time); a change of `refuse_auth`
        restarts the protocol session (hello and authentication needed again);
        `hostile_names` is fixed by the spec.
        """
        volume = self.storage.volume
        paced = faults.read_rate_mb_s is not None and volume is None
        if (faults.file_faults or paced) and not fuse_available():
            raise FuseUnavailable("file-layer faults need /dev/fuse and fusermount3")
        dataclasses.replace(self.spec, faults=faults)  # SpecError if it names missing files
        if volume is not None:  # a kernel-throttled recorder takes a new rate at once
            volume.set_rate(0 if faults.read_rate_mb_s is None
                            else round(faults.read_rate_mb_s * 1e6))
        self.link.set_faults(faults)
        refuse_changed = faults.refuse_auth != self._faults.refuse_auth
        self._faults = faults
        self.firmware.set_faults(faults)
        if refuse_changed and self._server is not None:
            self._server.endpoint = self._endpoint()
            self._auth_failures_seen = 0

    def inject(self, data: bytes) -> None:
        """Put raw bytes (line noise) on the serial line now."""
        if self._server is None:
            raise SimError("recorder is not plugged")
        self._server.inject(data)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> str:
        """Plug in: prepare the storage (first time: generate footage), serve the pty."""
        if self._pty is not None:
            raise SimError(f"recorder {self.spec.serial} is already plugged")
        f = self._faults
        by_kernel = await asyncio.to_thread(rate_by_kernel, f.read_rate_mb_s, f.read_rate_by)
        paced = f.read_rate_mb_s is not None and not by_kernel
        if (f.file_faults or paced) and not fuse_available():
            raise FuseUnavailable(
                f"recorder {self.spec.serial}: file-layer faults need /dev/fuse and fusermount3"
            )
        self.storage.use_volume(
            BlockVolume(self.dir, round(f.read_rate_mb_s * 1e6))
            if by_kernel and f.read_rate_mb_s is not None else None)
        self.exposure.reset()
        await asyncio.to_thread(self.storage.materialise)
        await asyncio.to_thread(self.firmware.load)
        self.firmware.reboot_requested = False
        self.unplugged.clear()
        self._pty = open_pty()
        endpoint = self._endpoint()
        self._auth_failures_seen = 0
        rate = self.spec.link_bytes_per_s
        self._server = DeviceServer(
            self._pty.master_fd, endpoint,
            reply_filter=self._reply_filter, request_filter=self.link.request_filter,
            pace_in=LinkPacer(rate), pace_out=LinkPacer(rate), after_replies=self._after_replies,
        )
        self._serve_task = asyncio.create_task(self._server.run())
        log.info("recorder %s on %s", self.spec.serial, self._pty.slave_path)
        self.plugged.set()
        return self._pty.slave_path

    async def stop(self) -> None:
        """Unplug: storage disappears, then the serial port closes. Safe to call twice."""
        if self._pty is None:
            return
        await self.exposure.hide()
        await asyncio.to_thread(self.storage.release)
        if self._server is not None:
            await self._server.aclose()
        if self._serve_task is not None:
            self._serve_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        self._pty.close()
        self._pty = self._server = self._serve_task = None
        self.firmware.state.mass_storage = False
        self.plugged.clear()
        self.unplugged.set()

    def _after_replies(self) -> None:
        """A Reboot's Ok is on the line: now the recorder leaves the bus."""
        if self.firmware.reboot_requested and self._reboot_task is None:
            self.firmware.reboot_requested = False
            self._reboot_task = asyncio.get_running_loop().create_task(self._reboot())

    async def _reboot(self) -> None:
        try:
            if self._pty is not None:
                await host_has_read(self._pty)
            if self._on_reboot is not None:
                self._on_reboot()
                return
            await self.stop()
            await asyncio.sleep(self.spec.boot_delay_s)
            await self.start()
        finally:
            self._reboot_task = None

    async def __aenter__(self) -> VirtualRecorder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _mass_storage_changed(self, on: bool) -> None:
        """Called by the firmware inside a SetMassStorage command."""
        self.firmware.invalidate_listing()
        self.exposure.switch(on)

    def _fault_unplug(self) -> None:
        if self._on_unplug is not None:
            self._on_unplug()
        else:
            asyncio.get_running_loop().create_task(self.stop())

    # --- link faults ----------------------------------------------------------------------------
    def _note_auth_failures(self) -> None:
        """The endpoint checks proofs itself; the recorder logs each failure it counted."""
        if self._server is None:
            return
        failures = self._server.endpoint.stats.auth_failures
        for _ in range(failures - self._auth_failures_seen):
            self.firmware.log_event(LogKind.AUTH_FAILURE, "wrong proof")
        self._auth_failures_seen = failures

    async def _reply_filter(self, frame: bytes) -> bytes | None:
        self._note_auth_failures()
        return await self.link.reply_filter(frame)


def fleet_secret_from_file(path: Path) -> bytes:
    """The fleet secret as the agent reads it (file contents, surrounding whitespace removed)."""
    data = path.read_bytes().strip()
    if not data:
        raise SimError(f"fleet secret file {path} is empty")
    return data
