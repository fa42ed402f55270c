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
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from firmware_bridge.codec import Frame, FrameDecoder
from firmware_bridge.device import DeviceEndpoint, DeviceServer, PtyPair, open_pty
from firmware_bridge.messages import (
    AuthProve,
    AuthStart,
    DeleteRecording,
    GetBattery,
    GetClock,
    GetEventLog,
    GetIdentity,
    GetOfficer,
    GetStorage,
    HelloRequest,
    ListRecordings,
    LogKind,
    SetClock,
    SetMassStorage,
    SetOfficer,
)
from hw_sim.errors import FuseUnavailable, SimError
from hw_sim.firmware import RecorderFirmware, RecorderState
from hw_sim.fusemount import FaultMount, fuse_available
from hw_sim.spec import Faults, RecorderSpec
from hw_sim.storage import RecorderStorage

log = logging.getLogger(__name__)

DEFAULT_FLEET_SECRET = b"dock-sim default fleet secret"

COMMAND_NAMES: dict[type, str] = {
    HelloRequest: "hello", AuthStart: "auth", AuthProve: "auth", GetIdentity: "identity",
    GetOfficer: "get_officer", SetOfficer: "set_officer", GetClock: "get_clock",
    SetClock: "set_clock", GetBattery: "battery", GetStorage: "storage",
    SetMassStorage: "mass_storage", ListRecordings: "list_recordings",
    DeleteRecording: "delete_recording", GetEventLog: "event_log",
}
UNPLUG_FIRED = "unplug_fault_fired"  # marker: the unplug fault fires once per recorder dir


class VirtualRecorder:
    """One simulated recorder (see module docstring).

    `on_storage(path | None)` is called when its storage becomes readable / goes away;
    `on_unplug()` when a fault makes it drop off the bus (default: it stops itself).
    """

    def __init__(
        self,
        spec: RecorderSpec,
        workdir: Path,
        *,
        secret: bytes = DEFAULT_FLEET_SECRET,
        on_storage: Callable[[Path | None], None] | None = None,
        on_unplug: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.dir = workdir / spec.serial
        self.storage = RecorderStorage(spec, self.dir)
        self.firmware = RecorderFirmware(spec, self.storage, self._mass_storage_changed)
        self._fleet_secret = secret
        self._on_storage = on_storage
        self._on_unplug = on_unplug
        self._pty: PtyPair | None = None
        self._server: DeviceServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._mount: FaultMount | None = None
        self._fuse_mode = False
        self._storage_lock = asyncio.Lock()
        self._switches: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._exposed: Path | None = None
        self._faults = spec.faults
        self._rng = random.Random(spec.faults.seed)
        self._garble_left = spec.faults.garble_replies
        self._requests = FrameDecoder()
        self._pending: dict[int, str] = {}  # request id -> command name
        self.unplugged = asyncio.Event()
        self.replies_suppressed = 0
        self.replies_garbled = 0
        self.list_pages_sent = 0  # listing replies seen by the link faults (answered or not)
        self._auth_failures_seen = 0

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
        return self._exposed

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

    def set_faults(self, faults: Faults) -> None:
        """Change the injected faults until unplug (a dock replug starts from the spec again).

        Link and device faults act at once (`garble_replies` counts afresh); file faults from
        the next mass-storage switch-on; a change of `refuse_auth` restarts the protocol
        session (hello and authentication needed again); `hostile_names` is fixed by the spec.
        """
        if faults.needs_fuse and not fuse_available():
            raise FuseUnavailable("file-layer faults need /dev/fuse and fusermount3")
        dataclasses.replace(self.spec, faults=faults)  # SpecError if it names missing files
        self._rng = random.Random(faults.seed)
        self._garble_left = faults.garble_replies
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
        if self._faults.needs_fuse and not fuse_available():
            raise FuseUnavailable(
                f"recorder {self.spec.serial}: file-layer faults need /dev/fuse and fusermount3"
            )
        self._stopping = self._fuse_mode = False
        await asyncio.to_thread(self.storage.materialise)
        await asyncio.to_thread(self.firmware.load)
        self.unplugged.clear()
        self._pty = open_pty()
        endpoint = self._endpoint()
        self._auth_failures_seen = 0
        self._server = DeviceServer(
            self._pty.master_fd, endpoint,
            reply_filter=self._reply_filter, request_filter=self._request_filter,
        )
        self._serve_task = asyncio.create_task(self._server.run())
        log.info("recorder %s on %s", self.spec.serial, self._pty.slave_path)
        return self._pty.slave_path

    async def stop(self) -> None:
        """Unplug: storage disappears, then the serial port closes. Safe to call twice."""
        if self._pty is None:
            return
        self._stopping = True  # queued storage switches do nothing now
        await self._hide_storage()
        if self._server is not None:
            await self._server.aclose()
        if self._serve_task is not None:
            self._serve_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        self._pty.close()
        self._pty = self._server = self._serve_task = None
        self.firmware.state.mass_storage = False
        self.unplugged.set()

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

    # --- storage exposure ----------------------------------------------------------------------
    # Plain mode switches synchronously inside the command (a rename). FUSE mode mounts and
    # unmounts in tasks serialised by a lock, in command order; stop() takes the same lock.
    def _fuse_faults_active(self) -> bool:
        f = self._faults
        unplug = f.unplug_at is not None and not (self.dir / UNPLUG_FIRED).exists()
        return bool(f.eio_at or f.growing or unplug or f.unlistable_dirs or f.unstatable)

    def _mass_storage_changed(self, on: bool) -> None:
        """Called by the firmware inside a SetMassStorage command."""
        self.firmware.invalidate_listing()
        if on:
            self._fuse_mode = self._fuse_faults_active()
        if self._fuse_mode:
            task = asyncio.get_running_loop().create_task(self._fuse_switch(on))
            self._switches.add(task)
            task.add_done_callback(self._switches.discard)
        elif on:
            self._announce(self.storage.expose_plain())
        else:
            self._announce(None)
            self.storage.hide_plain()

    def _announce(self, path: Path | None) -> None:
        if path == self._exposed:
            return
        self._exposed = path
        if self._on_storage is not None:
            self._on_storage(path)

    async def _fuse_switch(self, on: bool) -> None:
        async with self._storage_lock:
            if self._stopping:
                return
            if not on:
                self._announce(None)
                mount, self._mount = self._mount, None
                if mount is not None:
                    await mount.stop()
                return
            if self._mount is None:
                self._mount = self._fault_mount()
                try:
                    await self._mount.start()
                except SimError:
                    log.exception("recorder %s: cannot mount its storage", self.spec.serial)
                    self._mount = None
                    return
            self._announce(self.storage.media)

    def _fault_mount(self) -> FaultMount:
        f = self._faults
        files = [self.storage.footage(i) for i in range(len(self.spec.footage.file_sizes))]
        unplug = None
        if f.unplug_at is not None and not (self.dir / UNPLUG_FIRED).exists():
            unplug = (files[f.unplug_at[0]].name, f.unplug_at[1])
        return FaultMount(
            self.storage.backing, self.storage.media,
            eio=[(files[i].name, off) for i, off in f.eio_at], eio_count=f.eio_count,
            unplug=unplug, growing=[files[i].name for i in f.growing],
            grow_step=f.grow_step_bytes, unlistable=list(f.unlistable_dirs),
            unstatable=list(f.unstatable), on_unplug=self._fault_unplug,
            rate=None if f.read_rate_mb_s is None else f.read_rate_mb_s * 1e6,
            on_eio=self.firmware.storage_fault,
        )

    async def _hide_storage(self) -> None:
        async with self._storage_lock:
            self._announce(None)
            mount, self._mount = self._mount, None
            if mount is not None:
                await mount.stop()
            else:
                await asyncio.to_thread(self.storage.hide_plain)

    def _fault_unplug(self) -> None:
        log.info("recorder %s: unplug fault fired", self.spec.serial)
        with contextlib.suppress(OSError):
            (self.dir / UNPLUG_FIRED).touch()
        if self._on_unplug is not None:
            self._on_unplug()
        else:
            asyncio.get_running_loop().create_task(self.stop())

    # --- link faults ----------------------------------------------------------------------------
    def _request_filter(self, data: bytes) -> bytes:
        """Learn which command each request id is, for the per-command faults."""
        f = self._faults
        if f.silent_commands or f.list_page_delay_s > 0 or f.list_stall_after_pages is not None:
            for item in self._requests.feed(data):
                if isinstance(item, Frame):
                    self._pending[item.request_id] = COMMAND_NAMES.get(type(item.message), "?")
            if len(self._pending) > 4096:  # ids of replies that were never matched
                self._pending.clear()
        return data

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
        f = self._faults
        if f.silent_commands or f.list_page_delay_s > 0 or f.list_stall_after_pages is not None:
            for item in FrameDecoder().feed(frame):
                command = self._pending.pop(item.request_id, None)
                if command in f.silent_commands:
                    self.replies_suppressed += 1
                    return None
                if command == "list_recordings":
                    self.list_pages_sent += 1
                    stall = f.list_stall_after_pages
                    if stall is not None and self.list_pages_sent > stall:
                        self.replies_suppressed += 1
                        return None
                    if f.list_page_delay_s > 0:
                        await asyncio.sleep(f.list_page_delay_s)
        if f.reply_delay_s > 0:
            await asyncio.sleep(f.reply_delay_s)
        out = frame
        if self._garble_left > 0 and len(out) > 4:
            self._garble_left -= 1
            self.replies_garbled += 1
            i = len(out) // 2
            out = out[:i] + bytes([out[i] ^ 0x5A or 0x01]) + out[i + 1 :]
        if f.drop_byte_prob > 0 or f.garble_byte_prob > 0:
            rng = self._rng
            buf = bytearray()
            for b in out:
                if rng.random() < f.drop_byte_prob:
                    continue
                if rng.random() < f.garble_byte_prob:
                    b ^= 1 << rng.randrange(8)
                buf.append(b)
            out = bytes(buf)
        return out


def fleet_secret_from_file(path: Path) -> bytes:
    """The fleet secret as the agent reads it (file contents, surrounding whitespace removed)."""
    data = path.read_bytes().strip()
    if not data:
        raise SimError(f"fleet secret file {path} is empty")
    return data
