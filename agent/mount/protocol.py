"""The helper's wire format: one JSON object per line, each way, one request per line.

    {"op": "mount", "devnode": "/dev/sda1", "name": "BWC10234-3f2a..."}
    {"op": "unmount", "name": "BWC10234-3f2a...", "lazy": false}
    -> {"ok": true, "path": "/run/dock-agent-mount/media/BWC10234-3f2a..."}
    -> {"ok": false, "code": "untagged", "error": "..."}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.mount.errors import ProtocolError

MAX_LINE = 4096


@dataclass(frozen=True, slots=True)
class MountRequest:
    devnode: str
    name: str


@dataclass(frozen=True, slots=True)
class UnmountRequest:
    name: str
    lazy: bool = False


Request = MountRequest | UnmountRequest


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    path: str | None = None
    code: str | None = None
    error: str | None = None


def encode_request(request: Request) -> bytes:
    if isinstance(request, MountRequest):
        obj: dict[str, Any] = {"op": "mount", "devnode": request.devnode, "name": request.name}
    else:
        obj = {"op": "unmount", "name": request.name, "lazy": request.lazy}
    return json.dumps(obj).encode() + b"\n"


def _object(line: bytes, what: str) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"{what} longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return obj


def decode_request(line: bytes) -> Request:
    obj = _object(line, "request")
    op = obj.get("op")
    if op == "mount":
        if set(obj) != {"op", "devnode", "name"}:
            raise ProtocolError("mount takes exactly: devnode, name")
        devnode, name = obj["devnode"], obj["name"]
        if not isinstance(devnode, str) or not isinstance(name, str):
            raise ProtocolError("mount: devnode and name must be strings")
        return MountRequest(devnode, name)
    if op == "unmount":
        if not set(obj) <= {"op", "name", "lazy"} or "name" not in obj:
            raise ProtocolError("unmount takes: name and optionally lazy")
        name, lazy = obj["name"], obj.get("lazy", False)
        if not isinstance(name, str) or not isinstance(lazy, bool):
            raise ProtocolError("unmount: name must be a string and lazy a boolean")
        return UnmountRequest(name, lazy)
    raise ProtocolError(f"unknown op {op!r}: the helper only knows mount and unmount")


def encode_reply(reply: Reply) -> bytes:
    obj: dict[str, Any] = {"ok": reply.ok}
    for name in ("path", "code", "error"):
        value = getattr(reply, name)
        if value is not None:
            obj[name] = value
    return json.dumps(obj).encode() + b"\n"


def decode_reply(line: bytes) -> Reply:
    obj = _object(line, "reply")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("reply has no boolean 'ok'")
    fields = {k: obj.get(k) for k in ("path", "code", "error")}
    if any(v is not None and not isinstance(v, str) for v in fields.values()):
        raise ProtocolError("reply fields path, code, error must be strings")
    return Reply(ok, fields["path"], fields["code"], fields["error"])
