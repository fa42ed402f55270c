"""Publish flow control: at most `limit` QoS 1 publishes awaiting PUBACK, the rest queued.

paho scans all in-flight messages on every PUBACK when it enforces a limit itself, so its
own limits are switched off and the window is kept here, in order, per connection.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt.errors import ConnectionLost, MqttError, PublishRejected


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Properties | None
    fut: asyncio.Future[None]


class PublishWindow:
    """The publishes of one transport: in flight (by paho mid) and queued."""

    def __init__(self, window: int, call_soon: Callable[[Callable[[], None]], object]) -> None:
        self.window = window
        self.limit = window
        self._call_soon = call_soon
        self._pending: dict[int, tuple[asyncio.Future[None], int]] = {}  # mid -> (fut, qos)
        self._queued: collections.deque[Outgoing] = collections.deque()
        self._inflight = 0  # QoS 1 publishes awaiting PUBACK
        self._drain_scheduled = False
        self.client: paho.Client | None = None

    def open(self, client: paho.Client, receive_max: object) -> None:
        """A new connection; exceeding the broker's Receive Maximum makes it drop us."""
        self.client = client
        if isinstance(receive_max, int) and receive_max > 0:
            self.limit = min(self.window, receive_max)
        else:
            self.limit = self.window

    def submit(self, item: Outgoing) -> None:
        if item.qos > 0 and (self._inflight >= self.limit or self._queued):
            self._queued.append(item)  # sent in order as PUBACKs free the window
        elif self.client is not None:
            self._send(self.client, item)

    def _send(self, client: paho.Client, item: Outgoing) -> None:
        info = client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain,
                              properties=item.props)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            item.fut.set_exception(ConnectionLost("not connected"))
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            item.fut.set_exception(MqttError(f"publish failed: {paho.error_string(info.rc)}"))
        else:
            self._pending[info.mid] = (item.fut, item.qos)
            if item.qos > 0:
                self._inflight += 1

    def _send_queued(self) -> None:
        self._drain_scheduled = False
        client = self.client
        while client is not None and self._queued and self._inflight < self.limit:
            self._send(client, self._queued.popleft())

    def completed(self, mid: int, rc: ReasonCode) -> None:
        """paho's on_publish: PUBACK for QoS 1, written for QoS 0."""
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        fut, qos = entry
        if qos > 0:
            self._inflight -= 1
            if self._queued and not self._drain_scheduled:
                self._drain_scheduled = True  # not from inside paho's callback
                self._call_soon(self._send_queued)
        if fut.done():
            return
        if rc.is_failure:
            fut.set_exception(PublishRejected(f"broker rejected publish: {rc}"))
        else:
            fut.set_result(None)

    def close(self) -> list[asyncio.Future[None]]:
        """The connection is gone: every publish still waiting, to be failed by the caller."""
        waiting = [f for f, _ in self._pending.values()] + [q.fut for q in self._queued]
        self._pending.clear()
        self._queued.clear()
        self._inflight = 0
        self.client = None
        return waiting
