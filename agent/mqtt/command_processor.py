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
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.mqtt import payloads, strictjson
from agent.mqtt.errors import CommandRejected, PayloadInvalid
from agent.mqtt.topics import TopicError, Topics, check_level
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

# Executed command ids (with their replies) are remembered for at least REMEMBER_DAYS and at
# least the newest REMEMBER_COMMANDS, whichever keeps more: a repeat inside that window is
# answered from memory and never runs again. A command sent longer ago than the window
# (its `sent_at`) is refused as stale, so a replay can never outlive its id's memory.
REMEMBER_DAYS = 30
REMEMBER_S = REMEMBER_DAYS * 86400.0
REMEMBER_COMMANDS = 1000

# The evidence lifecycle (tag, export, preserve, audit): one action, `lifecycle(name, args)`.
LIFECYCLE_COMMANDS = ("tag", "export", "preserve", "audit")
# Recorder firmware (agent.firmware): one action, `firmware(name, args)`.
FIRMWARE_COMMANDS = ("set-firmware-policy", "stage-firmware")
COMMANDS = ("rebirth", "readiness", "assign-officer", "set-hold", "clear-hold", "verify",
            "resend", "ack-upload", *LIFECYCLE_COMMANDS, *FIRMWARE_COMMANDS)


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

    async def ack_upload(self, files: list[str]) -> dict[str, Any]:
        """The central service confirms it holds these uploaded files (BLAKE3 or key)."""
        ...

    async def readiness_report(self) -> dict[str, Any]: ...

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]: ...

    async def firmware(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]: ...

    async def rebirth(self) -> None:
        """Refresh what the agent knows; the reporter republishes all state afterwards."""
        ...


def _remember(conn: sqlite3.Connection, cmd_id: str, name: str, reply: str, now: float) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO mqtt_commands (command_id, name, reply, received_at)"
        " VALUES (?, ?, ?, ?)",
        (cmd_id, name, reply, now),
    )
    conn.execute(
        "DELETE FROM mqtt_commands WHERE received_at < ? AND command_id NOT IN"
        " (SELECT command_id FROM mqtt_commands ORDER BY received_at DESC LIMIT ?)",
        (now - REMEMBER_S, REMEMBER_COMMANDS),
    )


def _is_command_id(value: object) -> bool:
    """An id worth echoing in a refusal (the schema's rule; anything else is answered as
    id null rather than echoing attacker-chosen text)."""
    return isinstance(value, str) and 0 < len(value) <= 128 and all(
        c.isascii() and (c.isalnum() or c in "._:-") for c in value)


MAX_MESSAGE = 400


def _bounded(message: str) -> str:
    """An error message as sent: printable, and short whatever the offending value was."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in message[:MAX_MESSAGE * 2])
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def _short(name: str) -> str:
    return _bounded(repr(name[:64]) + ("..." if len(name) > 64 else ""))


MAX_CORRELATION = 256  # bytes; a request id, not a payload


@dataclass(frozen=True, slots=True)
class Route:
    """Where the reply to one command goes, and the envelope problem that refuses it."""

    topic: str
    correlation_data: bytes | None
    problem: str | None


def reply_route(topics: Topics, name: str, response_topic: str | None,
                correlation_data: bytes | None) -> Route:
    """The reply goes to the MQTT 5 response topic when that is a single level below this
    dock's own reply namespace (the only place its ACL lets it write replies), else to
    `reply/<name>`. A response topic elsewhere (another dock, a wildcard, the central's own
    topics) or oversized correlation data refuses the command, answered on the default."""
    try:
        default = topics.reply(name)
    except TopicError:
        default = topics.reply("invalid")
    problem: str | None = None
    if correlation_data is not None and len(correlation_data) > MAX_CORRELATION:
        problem = (f"correlation data of {len(correlation_data)} bytes exceeds"
                   f" {MAX_CORRELATION} bytes")
        correlation_data = None
    if response_topic is None:
        return Route(default, correlation_data, problem)
    if not _own_reply_topic(topics, response_topic):
        return Route(default, correlation_data,
                     f"response topic {_short(response_topic)} is not a topic of this dock's"
                     f" reply namespace {topics.reply_prefix}<name>")
    return Route(response_topic, correlation_data, problem)


def _stale(sent_at: object, now: float) -> str | None:
    """Why a command sent at `sent_at` (RFC 3339, optional) is too old to run, if it is."""
    if not isinstance(sent_at, str):
        return None
    try:
        when = dt.datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
    except ValueError:
        return None  # not a date the dock can judge; the id memory still applies
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        age = now - when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    if age > REMEMBER_S:
        return (f"command sent at {_bounded(sent_at)} is older than the {REMEMBER_DAYS}-day"
                " window in which this dock remembers command ids; send it again with a new id")
    return None


def _own_reply_topic(topics: Topics, topic: str) -> bool:
    if not topic.startswith(topics.reply_prefix):
        return False
    try:
        check_level(topic[len(topics.reply_prefix):], "response topic")
    except TopicError:
        return False
    return True


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
        *,
        resend: Callable[[int, int], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._db = db
        self._resend = resend
        self._dock_id = dock_id
        self._actions = actions
        self._republish = republish
        self._clock = clock
        self._running: dict[str, asyncio.Future[bytes]] = {}

    async def handle(self, name: str, raw: bytes, *, refuse: str | None = None) -> bytes:
        """The reply to one command. `refuse`: an envelope problem found by the caller (e.g. a
        response topic outside this dock's reply namespace); the command is then answered
        `malformed` without running."""
        cmd_id: str | None = None
        try:
            body = strictjson.loads(raw)
        except strictjson.JsonRejected as exc:
            return self._error(None, name, "malformed", f"payload refused: {exc}")
        if isinstance(body, dict) and _is_command_id(body.get("id")):
            cmd_id = body["id"]
        if refuse is not None:
            return self._error(cmd_id, name, "malformed", refuse)
        if name not in COMMANDS:
            return self._error(cmd_id, name, "unknown-command",
                               f"unknown command {_short(name)}; known: {', '.join(COMMANDS)}")
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
        stale = _stale(body.get("sent_at"), self._clock())
        if stale is not None:
            return self._error(cmd_id, name, "rejected", stale)
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
            elif name == "resend":
                result = await self._resend_range(int(args["from_seq"]), int(args["to_seq"]))
            elif name == "ack-upload":
                result = await a.ack_upload([str(f) for f in args["files"]])
            elif name in LIFECYCLE_COMMANDS:
                result = await a.lifecycle(name, args)
            elif name in FIRMWARE_COMMANDS:
                result = await a.firmware(name, args)
            else:  # verify
                result = await a.run_verify(bool(args.get("deep", False)))
        except CommandRejected as exc:
            return self._error(cmd_id, name, "rejected", str(exc))
        except Exception:
            # The cause goes to the dock's log, not to the wire: an exception text is no
            # contract and may name internals.
            log.exception("command %s %s failed", name, cmd_id)
            return self._error(cmd_id, name, "failed",
                               f"the dock could not carry out {name}; the cause is in its log")
        return payloads.encode(
            payloads.reply_ok(self._dock_id, cmd_id, name, result, self._clock())
        )

    async def _resend_range(self, first: int, last: int) -> dict[str, Any]:
        if self._resend is None:
            raise CommandRejected("this dock cannot re-send events")
        return await self._resend(first, last)

    def _error(self, cmd_id: str | None, name: str, code: str, message: str) -> bytes:
        message = _bounded(message)
        log.warning("command %s %s refused (%s): %s", _short(name), cmd_id, code, message)
        return payloads.encode(
            payloads.reply_error(self._dock_id, cmd_id, name, code, message, self._clock())
        )
