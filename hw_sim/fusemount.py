"""Mount and unmount the fault-injecting FUSE view (`hw_sim.faultfs`) from asyncio.

Every mount this process makes is remembered until it is unmounted, and an atexit hook
lazily unmounts leftovers, so a failing test or a crashed scenario leaves no stale mount.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from hw_sim.errors import FuseUnavailable, MountError

_live: dict[str, subprocess.Popen[bytes] | asyncio.subprocess.Process] = {}


def fuse_available() -> bool:
    """True when FUSE mounts can be made here (/dev/fuse and fusermount3 present)."""
    return Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None


def is_mounted(mountpoint: Path) -> bool:
    """True if something is mounted on `mountpoint` (from the mount table, so a dead or
    failing FUSE server, whose root cannot even be stat'ed, still counts)."""
    target = str(Path(mountpoint).absolute())
    try:
        with open("/proc/self/mounts", "rb") as fh:
            table = fh.read().decode("utf-8", "surrogateescape")
    except OSError:
        return os.path.ismount(mountpoint)
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 1 and _unescape(fields[1]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as octal."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def unmount_sync(mountpoint: Path) -> bool:
    """Unmount `mountpoint`, lazily when busy; True if it had to be lazy. Blocking."""
    if not is_mounted(mountpoint):
        return False
    done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
    if done.returncode == 0:
        return False
    subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, check=False)
    return True


@atexit.register
def _cleanup_leftovers() -> None:
    for mp, proc in list(_live.items()):
        with contextlib.suppress(Exception):
            unmount_sync(Path(mp))
        with contextlib.suppress(Exception):
            proc.kill()
    _live.clear()


class FaultMount:
    """One running faultfs process serving `backing` on `mountpoint`.

    `on_unplug()` is called when the unplug fault fires, `on_eio(name, offset)` each time an
    EIO fault fires (both on the event loop).
    """

    def __init__(
        self,
        backing: Path,
        mountpoint: Path,
        *,
        eio: list[tuple[bytes, int]] | None = None,
        eio_count: int | None = None,
        unplug: tuple[bytes, int] | None = None,
        growing: list[bytes] | None = None,
        grow_step: int = 65536,
        unlistable: list[str] | None = None,
        unstatable: list[str] | None = None,
        rate: float | None = None,
        on_unplug: Callable[[], None] | None = None,
        on_eio: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self._config = {
            "backing": str(backing),
            "mountpoint": str(mountpoint),
            "eio": [(n.hex(), off) for n, off in eio or []],
            "eio_count": eio_count,
            "unplug": (unplug[0].hex(), unplug[1]) if unplug else None,
            "growing": [n.hex() for n in growing or []],
            "grow_step": grow_step,
            "unlistable": list(unlistable or []),
            "unstatable": list(unstatable or []),
            "rate": rate,  # bytes/s the storage delivers at most (None: unlimited)
        }
        self._on_unplug = on_unplug
        self._on_eio = on_eio
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, mount_wait_s: float = 60.0) -> None:
        """Mount, and return once the server is serving (its "ready" notice): before that
        libfuse has not yet installed the handler that unmounts when the simulator dies."""
        if not fuse_available():
            raise FuseUnavailable("file-layer faults need /dev/fuse and fusermount3 (apt fuse3)")
        await asyncio.to_thread(self.mountpoint.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(unmount_sync, self.mountpoint)  # stale from a killed run
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hw_sim.faultfs", json.dumps(self._config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _live[str(self.mountpoint)] = self._proc
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read_notices(ready))
        waiter = asyncio.create_task(ready.wait())
        exited = asyncio.create_task(self._proc.wait())
        try:
            await asyncio.wait([waiter, exited], timeout=mount_wait_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            exited.cancel()
        if not ready.is_set() or not await asyncio.to_thread(is_mounted, self.mountpoint):
            err = b""
            if self._proc.stderr is not None and self._proc.returncode is not None:
                err = await self._proc.stderr.read()
            await self.stop()
            raise MountError(f"faultfs did not mount on {self.mountpoint}: {err.decode()!r}")

    async def _read_notices(self, ready: asyncio.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            words = line.split()
            if words == [b"ready"]:
                ready.set()
            elif words == [b"unplug"] and self._on_unplug is not None:
                self._on_unplug()
            elif len(words) == 3 and words[0] == b"eio" and self._on_eio is not None:
                self._on_eio(bytes.fromhex(words[1].decode()), int(words[2]))

    async def stop(self) -> None:
        """Unmount (lazily when busy) and reap the process. Safe to call twice."""
        proc, self._proc = self._proc, None
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._reader = None
        if proc is None:
            # Already reaped (the server may have gone with an injected unplug): the kernel
            # can still hold the mount, so release it all the same.
            await asyncio.to_thread(unmount_sync, self.mountpoint)
            return
        try:
            lazy = await asyncio.to_thread(unmount_sync, self.mountpoint)
            # After a lazy unmount the server would live on until the last open file is
            # closed; a vanished device fails those reads instead, so do not wait long.
            try:
                async with asyncio.timeout(0.5 if lazy else 5.0):
                    await proc.wait()
            except TimeoutError:
                # It may exit on its own meanwhile (a loaded machine is slow, not wrong).
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            _live.pop(str(self.mountpoint), None)
