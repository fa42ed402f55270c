"""The central side in tests: a real MQTT client with the `central` identity that records
everything under the prefix, validates every payload against its schema, and sends commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.mqtt.errors import ConnectionLost
from agent.mqtt.transport import Message, PahoTransport
from agent.mqtt.validation import schema_for_topic, validate
from agent.settings import MqttSettings


@dataclass
class Received:
    topic: str
    body: Any  # parsed JSON, or None for an empty (clearing) payload
    retain: bool
    correlation_data: bytes | None


class Central:
    def __init__(self, settings: MqttSettings, prefix: str = "dock/v1",
                 subscribe: str | None = None) -> None:
        self.settings = settings
        self.prefix = prefix
        self.filter = subscribe or f"{prefix}/#"
        self.client_id = f"central-{uuid.uuid4().hex[:8]}"
        self.transport = self._new_transport()
        self.messages: list[Received] = []
        self.invalid: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def _new_transport(self) -> PahoTransport:
        # A persistent session: messages published while we are away wait at the broker.
        return PahoTransport(self.settings, self.client_id, session_expiry_s=3600)

    async def reconnect(self, timeout: float = 20.0) -> None:
        """After a broker restart: connect again to the same persistent session.

        Messages the old connection already received (and acknowledged) are still in its
        queue: the collector takes them all before the connection's end, never cancelled
        (they would be lost here, not at the broker)."""
        self.transport.abort()
        if self._task is not None:
            with contextlib.suppress(ConnectionLost, asyncio.CancelledError):
                async with asyncio.timeout(60):
                    await self._task
        self.transport = self._new_transport()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await self.transport.connect()
                break
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)
                self.transport = self._new_transport()
        await self.transport.subscribe(self.filter, qos=1)
        self._task = asyncio.create_task(self._collect())

    def unique_events(self, stream: str = "custody") -> list[Any]:
        """Events of `stream` in first-arrival order, duplicates (same event_id) removed."""
        seen: set[str] = set()
        out = []
        for body in self.on(f"/events/{stream}"):
            if body["event_id"] not in seen:
                seen.add(body["event_id"])
                out.append(body)
        return out

    async def start(self) -> Central:
        await self.transport.connect()
        await self.transport.subscribe(self.filter, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.transport.disconnect()

    async def _collect(self) -> None:
        while True:
            msg: Message = await self.transport.next_message()
            if "/cmd/" in msg.topic:
                continue  # our own commands
            body: Any = None
            if msg.payload:
                try:
                    body = json.loads(msg.payload)
                except ValueError as exc:
                    self.invalid.append(f"{msg.topic}: not JSON: {exc}")
                    continue
                levels = msg.topic[len(self.prefix) + 1:].split("/")[1:]
                name = schema_for_topic(levels)
                if name is None:
                    self.invalid.append(f"{msg.topic}: no schema")
                else:
                    try:
                        validate(name, body)
                    except Exception as exc:
                        self.invalid.append(f"{msg.topic}: {exc}")
            self.messages.append(Received(msg.topic, body, msg.retain, msg.correlation_data))
            self._changed.set()

    def on(self, suffix: str) -> list[Any]:
        """Bodies received on topics ending with `suffix`."""
        return [m.body for m in self.messages if m.topic.endswith(suffix)]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 90.0) -> None:
        async with asyncio.timeout(timeout):  # never wait_for: it can lose a cancellation
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def command(self, dock_id: str, name: str, body: Any, *,
                      response_topic: str | None = None,
                      correlation: bytes | None = None, raw: bytes | None = None,
                      retain: bool = False) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        await self.transport.publish(f"{self.prefix}/{dock_id}/cmd/{name}", payload,
                                     response_topic=response_topic,
                                     correlation_data=correlation, retain=retain)
