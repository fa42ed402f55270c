"""How the agent gets a recorder's files into a directory it can read.

`HelperMounter` asks the privileged dock-mount helper to mount block storage read-only
(udev docks). `DirectoryMounter` serves the simulator, whose storage already is a
directory: it is used as it is. Read-only is then not enforced by a mount but by the agent
itself, which never opens recorder files for writing. `make_mounter` picks one from
`[mount] method`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Protocol

from agent.devices.events import BlockStorage, DirectoryStorage, StorageRef
from agent.mount.errors import HelperUnavailable, MountError, MountRefused
from agent.mount.naming import mount_name
from agent.mount.protocol import (
    MAX_LINE,
    MountRequest,
    Reply,
    Request,
    UnmountRequest,
    decode_reply,
    encode_request,
)
from agent.settings import MountSettings


class Mounter(Protocol):
    async def mount(self, key: str, storage: StorageRef) -> Path:
        """Make the recorder's storage readable; returns the directory holding its files."""
        ...

    async def unmount(self, key: str, *, lazy: bool = False) -> None:
        """Release it; `lazy` when the recorder was pulled and files may still be open."""
        ...


class HelperMounter:
    """Talks to the dock-mount helper over its Unix socket, one connection per request."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    async def mount(self, key: str, storage: StorageRef) -> Path:
        if not isinstance(storage, BlockStorage):
            raise MountError(
                f"recorder {key}: the mount helper mounts block devices, got a directory "
                "(a simulated dock needs [mount] method = \"directory\")"
            )
        request = MountRequest(storage.devnode, mount_name(key))
        try:
            reply = await self._call(request)
        except MountRefused as exc:
            if exc.code != "already_mounted":
                raise
            # Our mount point for this key holds another device: a mount left behind when
            # the agent stopped and the recorder was re-plugged since. Detach it, retry once.
            await self._call(UnmountRequest(request.name, lazy=True))
            reply = await self._call(request)
        if reply.path is None:
            raise MountError(f"recorder {key}: the mount helper returned no path")
        return Path(reply.path)

    async def unmount(self, key: str, *, lazy: bool = False) -> None:
        await self._call(UnmountRequest(mount_name(key), lazy))

    async def _call(self, request: Request) -> Reply:
        what = "mount" if isinstance(request, MountRequest) else "unmount"
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    reader, writer = await asyncio.open_unix_connection(
                        str(self.socket_path), limit=MAX_LINE + 1
                    )
                except OSError as exc:
                    raise HelperUnavailable(
                        f"cannot reach the mount helper at {self.socket_path}: {exc}"
                    ) from exc
                try:
                    writer.write(encode_request(request))
                    with contextlib.suppress(ConnectionError):  # refused: the reply says why
                        await writer.drain()
                    line = await reader.readline()
                except (OSError, ValueError) as exc:  # reset, or a runaway reply line
                    raise HelperUnavailable(
                        f"the mount helper closed the connection during {what}: {exc}"
                    ) from exc
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError as exc:
            raise HelperUnavailable(
                f"the mount helper at {self.socket_path} did not answer {what} "
                f"within {self.timeout_s:g} s"
            ) from exc
        if not line:
            raise HelperUnavailable(f"the mount helper closed the connection during {what}")
        reply = decode_reply(line)
        if not reply.ok:
            raise MountRefused(reply.code or "error", reply.error or f"{what} refused")
        return reply


class DirectoryMounter:
    """The simulator's stand-in for mounting: the storage is a directory already."""

    async def mount(self, key: str, storage: StorageRef) -> Path:
        if not isinstance(storage, DirectoryStorage):
            raise MountError(
                f"recorder {key}: block storage needs the mount helper "
                "([mount] method = \"helper\")"
            )
        path = Path(storage.path)
        if not await asyncio.to_thread(path.is_dir):
            raise MountRefused("not_a_directory", f"recorder {key}: {path} is not a directory")
        return path

    async def unmount(self, key: str, *, lazy: bool = False) -> None:
        return None


def make_mounter(settings: MountSettings) -> Mounter:
    if settings.method == "directory":
        return DirectoryMounter()
    return HelperMounter(settings.helper_socket)
