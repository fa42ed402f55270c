"""The dock-sim announcement socket: newline-delimited JSON over a Unix stream socket.

The simulator is the server, the agent (`agent.devices.sim_source`) the client. Every
message is one JSON object on one line with `"v": 2` and a `"type"`:
  state   sent first on every connection: the dock's wiring and every device present
          {"bays": [{"label", "id_path"}], "devices": [record, ...]}
  uevent  one device came or went: {"device": record}
A record is what udev reports of one device (see `hw_sim.uevents`):
{"props": {udev property: value, "ACTION": "add"|"remove"}, "usb": {its USB device's
properties} | null}. Clients ignore message types they do not know. See docs/simulator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSION = 2

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
