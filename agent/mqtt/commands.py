"""Commands from the central service: validation, idempotency and dispatch.

A command arrives on `<prefix>/<dock_id>/cmd/<name>` as `{"id": ..., "args": {...}}`.
Authorisation is the broker's topic ACL (only the central identity may write there, and
the dock subscribes only to its own command topics). Here each command is validated
against its schema, executed once per command id (replies are remembered durably, so a
repeat gets the same reply without re-running), and answered. A command that is malformed,
unknown or has bad arguments gets an error reply naming why and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from agent.mqtt import payloads
from agent.mqtt.errors import CommandRejected, PayloadInvalid
from agent.mqtt.validation import validate
from agent.store.db import Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_commands (
    command_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    reply       TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mqtt_commands_received ON mqtt_commands (received_at);
"""

REMEMBER_COMMANDS = 1000  # replies kept for repeats (newest first)

# The evidence lifecycle (tag, export, preserve, audit): one action, `lifecycle(name, args)`.
LIFECYCLE_COMMANDS = ("tag", "export", "preserve", "audit")
COMMANDS = ("rebirth", "readiness", "assign-officer", "set-hold", "clear-hold", "verify",
            *LIFECYCLE_COMMANDS)


class CommandActions(Protocol):
    """What the agent does for each command. Raise CommandRejected to refuse with a reason."""

    async def assign_officer(self, serial: str, record: Mapping[str, str]) -> dict[str, Any]:
        """record: officer_no and optional officer_name, unit_no, unit_name."""
        ...

    async def set_hold(
        self, hold_id: str, reason: str, scope: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]: ...

    async def run_verify(self, deep: bool) -> dict[str, Any]: ...

    async def readiness_report(self) -> dict[str, Any]: ...

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]: ...

    async def rebirth(self) -> None:
        """Refresh what the agent knows; the reporter republishes all state afterwards."""
        ...


class NoActions:
    """Actions for a reporter that carries out no commands (benchmarks, tools): each one
    answers with an empty result."""

    async def assign_officer(self, serial: str, record: Mapping[str, str]) -> dict[str, Any]:
        return {}

    async def set_hold(
        self, hold_id: str, reason: str, scope: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {}

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]:
        return {}

    async def run_verify(self, deep: bool) -> dict[str, Any]:
        return {}

    async def readiness_report(self) -> dict[str, Any]:
        return {}

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    async def rebirth(self) -> None:
        return None


def _remember(conn: sqlite3.Connection, cmd_id: str, name: str, reply: str, now: float) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO mqtt_commands (command_id, name, reply, received_at)"
        " VALUES (?, ?, ?, ?)",
        (cmd_id, name, reply, now),
    )
    conn.execute(
        "DELETE FROM mqtt_commands WHERE command_id NOT IN"
        " (SELECT command_id FROM mqtt_commands ORDER BY received_at DESC LIMIT ?)",
        (REMEMBER_COMMANDS,),
    )


def _recall(conn: sqlite3.Connection, cmd_id: str) -> str | None:
    row = conn.execute(
        "SELECT reply FROM mqtt_commands WHERE command_id = ?", (cmd_id,)
    ).fetchone()
    return None if row is None else str(row[0])


class CommandProcessor:
    """Turns one command message into one reply (bytes), running the action at most once."""

    def __init__(
        self,
        db: Database,
        dock_id: str,
        actions: CommandActions,
        republish: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._dock_id = dock_id
        self._actions = actions
        self._republish = republish
        self._clock = clock
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def handle(self, name: str, raw: bytes) -> bytes:
        cmd_id: str | None = None
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(None, name, "malformed", f"payload is not JSON: {exc}")
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            cmd_id = body["id"]
        if name not in COMMANDS:
            return self._error(cmd_id, name, "unknown-command",
                               f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        try:
            validate(f"command-{name}", body)
        except PayloadInvalid as exc:
            code = "malformed" if cmd_id is None else "invalid-args"
            return self._error(cmd_id, name, code, str(exc))
        assert cmd_id is not None  # the schema requires it
        key = cmd_id
        stored = await self._db.read(lambda c: _recall(c, key))
        if stored is not None:
            log.info("command %s %s repeated; sending the remembered reply", name, cmd_id)
            return stored.encode()
        running = self._running.get(cmd_id)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._running[cmd_id] = fut
        try:
            reply = await self._execute(cmd_id, name, body.get("args") or {})
            now = self._clock()
            await self._db.write(lambda c: _remember(c, key, name, reply.decode(), now))
        except BaseException:
            fut.cancel()  # a waiting repeat gives up too; the central side retries
            raise
        else:
            fut.set_result(reply)
        finally:
            del self._running[cmd_id]
        return reply

    async def _execute(self, cmd_id: str, name: str, args: dict[str, Any]) -> bytes:
        a = self._actions
        try:
            result: dict[str, Any]
            if name == "rebirth":
                await a.rebirth()
                await self._republish()
                result = {"republished": True}
            elif name == "readiness":
                result = await a.readiness_report()
            elif name == "assign-officer":
                fields = ("officer_no", "officer_name", "unit_no", "unit_name")
                record: dict[str, str] = {k: str(args[k]) for k in fields if k in args}
                result = await a.assign_officer(args["serial"], record)
            elif name == "set-hold":
                result = await a.set_hold(args["hold_id"], args["reason"], args["scope"])
            elif name == "clear-hold":
                result = await a.clear_hold(args["hold_id"], args["reason"])
            elif name in LIFECYCLE_COMMANDS:
                result = await a.lifecycle(name, args)
            else:  # verify
                result = await a.run_verify(bool(args.get("deep", False)))
        except CommandRejected as exc:
            return self._error(cmd_id, name, "rejected", str(exc))
        except Exception as exc:
            log.exception("command %s %s failed", name, cmd_id)
            return self._error(cmd_id, name, "failed", f"{type(exc).__name__}: {exc}")
        return payloads.encode(
            payloads.reply_ok(self._dock_id, cmd_id, name, result, self._clock())
        )

    def _error(self, cmd_id: str | None, name: str, code: str, message: str) -> bytes:
        log.warning("command %s %s refused (%s): %s", name, cmd_id, code, message)
        return payloads.encode(
            payloads.reply_error(self._dock_id, cmd_id, name, code, message, self._clock())
        )
