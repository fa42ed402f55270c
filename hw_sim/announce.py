"""The dock-sim announcement socket: newline-delimited JSON over a Unix stream socket.

The simulator is the server, the agent (`agent.devices.sim_source`) the client. Every
message is one JSON object on one line with `"v": 1` and a `"type"`:
  state            sent first on every connection: every plugged recorder
                   {"recorders": [{"bay", "serial", "tty", "storage": path|null}], "bays": [...]}
  plugged          {"bay", "serial", "tty"}          a recorder's serial port appeared
  storage          {"bay", "serial", "path"}         its storage is readable at path
  storage_removed  {"bay", "serial"}                 its storage is gone (locked or unplugged)
  unplugged        {"bay", "serial"}                 it left the bay
Clients ignore message types they do not know. See docs/simulator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSION = 1

Message = dict[str, Any]


def encode(msg_type: str, **fields: Any) -> bytes:
    return json.dumps({"v": VERSION, "type": msg_type, **fields}, sort_keys=True).encode() + b"\n"


class AnnounceServer:
    """Serves the announcement stream; `snapshot()` gives the `state` message's fields."""

    def __init__(self, socket_path: Path, snapshot: Callable[[], Message]) -> None:
        self.socket_path = socket_path
        self._snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket of an earlier run
        self._server = await asyncio.start_unix_server(self._on_client, path=str(self.socket_path))

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Snapshot and registration happen without an await in between, so a client sees
        # every change after its snapshot exactly once.
        writer.write(encode("state", **self._snapshot()))
        self._clients.add(writer)
        try:
            while await reader.read(4096):
                pass  # clients have nothing to say; read only to notice the close
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def broadcast(self, msg_type: str, **fields: Any) -> None:
        line = encode(msg_type, **fields)
        for w in list(self._clients):
            if w.is_closing():
                self._clients.discard(w)
            else:
                w.write(line)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._clients):
                w.close()
            self._clients.clear()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
