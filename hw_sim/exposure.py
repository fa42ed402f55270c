"""How a virtual recorder's storage becomes readable to the host and goes away again.

Plain mode switches synchronously inside the SetMassStorage command (a rename). With
file-layer faults (FUSE), or storage on a throttled block device (`hw_sim.blockvolume`:
a read-only bind mount), it mounts and unmounts in tasks serialised by a lock, in command
order; hiding at unplug takes the same lock. A block device throttles reads in the kernel,
so a FUSE view over it paces nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from hw_sim.errors import SimError
from hw_sim.fusemount import FaultMount
from hw_sim.spec import Faults
from hw_sim.storage import RecorderStorage

log = logging.getLogger(__name__)

UNPLUG_FIRED = "unplug_fault_fired"  # marker: the unplug fault fires once per recorder dir


class StorageExposure:
    """`on_storage(path | None)` hears every change; `on_unplug_fault()` when the unplug
    fault fires; `on_eio(name, offset)` for each injected read error."""

    def __init__(
        self,
        storage: RecorderStorage,
        faults: Callable[[], Faults],
        on_storage: Callable[[Path | None], None] | None,
        on_unplug_fault: Callable[[], None],
        on_eio: Callable[[bytes, int], None],
    ) -> None:
        self.storage = storage
        self._faults = faults
        self._on_storage = on_storage
        self._on_unplug_fault = on_unplug_fault
        self._on_eio = on_eio
        self._mount: FaultMount | None = None
        self._fuse_mode = False
        self._lock = asyncio.Lock()
        self._switches: set[asyncio.Task[None]] = set()
        self.stopping = False  # queued switches do nothing once set
        self.exposed: Path | None = None

    @property
    def settled(self) -> bool:
        """No mount or unmount is queued or running."""
        return not self._switches

    def reset(self) -> None:
        self.stopping = self._fuse_mode = False

    def _fuse_faults_active(self) -> bool:
        f = self._faults()
        unplug = f.unplug_at is not None and not (self.storage.dir / UNPLUG_FIRED).exists()
        paced = f.read_rate_mb_s is not None and self.storage.volume is None
        return bool(f.eio_at or f.growing or unplug or f.unlistable_dirs or f.unstatable
                    or paced)

    def switch(self, on: bool) -> None:
        """Called inside a SetMassStorage command."""
        if on:
            self._fuse_mode = self._fuse_faults_active()
        if self._fuse_mode or self.storage.volume is not None:
            task = asyncio.get_running_loop().create_task(
                self._fuse_switch(on) if self._fuse_mode else self._volume_switch(on))
            self._switches.add(task)
            task.add_done_callback(self._switches.discard)
        elif on:
            self._announce(self.storage.expose_plain())
        else:
            self._announce(None)
            self.storage.hide_plain()

    async def hide(self) -> None:
        """Unplug: the storage goes away whatever mode it was in."""
        self.stopping = True
        async with self._lock:
            self._announce(None)
            mount, self._mount = self._mount, None
            if mount is not None:
                await mount.stop()
            elif self.storage.volume is not None:
                await asyncio.to_thread(self.storage.volume.hide)
            else:
                await asyncio.to_thread(self.storage.hide_plain)

    def _announce(self, path: Path | None) -> None:
        if path == self.exposed:
            return
        self.exposed = path
        if self._on_storage is not None:
            self._on_storage(path)

    async def _fuse_switch(self, on: bool) -> None:
        async with self._lock:
            if self.stopping:
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
                    log.exception("recorder %s: cannot mount its storage",
                                  self.storage.spec.serial)
                    self._mount = None
                    return
            self._announce(self.storage.media)

    async def _volume_switch(self, on: bool) -> None:
        volume = self.storage.volume
        async with self._lock:
            if self.stopping or volume is None:
                return
            if not on:
                self._announce(None)
                await asyncio.to_thread(volume.hide)
                return
            try:
                path = await asyncio.to_thread(volume.expose)
            except SimError:
                log.exception("recorder %s: cannot expose its storage", self.storage.spec.serial)
                return
            self._announce(path)

    def _fault_mount(self) -> FaultMount:
        f, st = self._faults(), self.storage
        files = [st.footage(i) for i in range(len(st.spec.footage.file_sizes))]
        unplug = None
        if f.unplug_at is not None and not (st.dir / UNPLUG_FIRED).exists():
            unplug = (files[f.unplug_at[0]].name, f.unplug_at[1])
        return FaultMount(
            st.backing, st.media,
            eio=[(files[i].name, off) for i, off in f.eio_at], eio_count=f.eio_count,
            unplug=unplug, growing=[files[i].name for i in f.growing],
            grow_step=f.grow_step_bytes, unlistable=list(f.unlistable_dirs),
            unstatable=list(f.unstatable), on_unplug=self._fault_unplug, on_eio=self._on_eio,
            rate=(None if f.read_rate_mb_s is None or st.volume is not None
                  else f.read_rate_mb_s * 1e6),
        )

    def _fault_unplug(self) -> None:
        log.info("recorder %s: unplug fault fired", self.storage.spec.serial)
        with contextlib.suppress(OSError):
            (self.storage.dir / UNPLUG_FIRED).touch()
        self._on_unplug_fault()
