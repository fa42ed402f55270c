"""The local control socket `dockctl` talks to: newline-delimited JSON over a Unix socket.

No network listener: access is decided by the socket file's permissions (0660, owned by the
agent's user and group). A request is one JSON object `{"cmd": NAME, ...}`; the reply is one
JSON object with `ok` and either the result or `error`. Handlers are read-only views or
commands that enter the agent at the top like any other event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]

MAX_REQUEST = 64 * 1024
log = logging.getLogger(__name__)


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)

    async def serve(self) -> None:
        """Serve until cancelled; the socket file is removed on the way out."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o117)  # socket created 0660: no window where it is wider
        try:
            server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                await _send(writer, await self._dispatch(line))
        except (ConnectionError, BrokenPipeError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"malformed request: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": "request must be an object with a string 'cmd'"}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {request['cmd']!r} (known: {known})"}
        try:
            result = await handler(request)
        except Exception as exc:  # a failing view must not take the agent down
            log.exception("control command %s failed", request["cmd"])
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "result": dict(result)}


async def _send(writer: asyncio.StreamWriter, reply: Mapping[str, Any]) -> None:
    writer.write(json.dumps(reply, default=str).encode() + b"\n")
    await writer.drain()


class ControlClientError(Exception):
    """The agent could not be reached or refused the request."""


def request(path: Path, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Blocking one-shot request for dockctl (no event loop needed there)."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except FileNotFoundError as exc:
        raise ControlClientError(f"agent not running (no socket at {path})") from exc
    except ConnectionRefusedError as exc:
        raise ControlClientError(f"agent not running (socket {path} refuses connections)") from exc
    except PermissionError as exc:
        raise ControlClientError(
            f"permission denied on {path}: run as the dock-agent user or a member of its group"
        ) from exc
    except TimeoutError as exc:
        raise ControlClientError(f"agent did not answer within {timeout:g} s") from exc
    try:
        reply = json.loads(buf)
    except json.JSONDecodeError as exc:
        raise ControlClientError(f"agent sent a malformed reply: {exc}") from exc
    if not reply.get("ok"):
        raise ControlClientError(str(reply.get("error", "request failed")))
    result = reply.get("result", {})
    assert isinstance(result, dict)
    return result
