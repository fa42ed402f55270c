"""MQTT transport: paho-mqtt driven from the asyncio loop, behind a small interface.

paho's own network thread is never started. The blocking part of connecting runs in a
worker thread (paho_connect.py); afterwards the socket is driven from the loop
(paho_pump.py), so every paho callback runs on the loop and is bridged into futures here.
Publishes go through a window of QoS 1 messages in flight (publish_window.py).
A fresh paho client is made per connection: paho keeps its session in memory only, and
delivery guarantees come from the durable outbox, not from paho re-sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import paho_socket
from agent.mqtt.errors import ConnectFailed, ConnectionLost, MqttError
from agent.mqtt.paho_connect import connect_client
from agent.mqtt.paho_pump import SocketPump
from agent.mqtt.publish_window import Outgoing, PublishWindow
from agent.settings import MqttSettings

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Message:
    """A received application message."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None  # MQTT 5 only
    correlation_data: bytes | None = None  # MQTT 5 only


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Transport(Protocol):
    """What the reporter and the fleet view need from an MQTT connection."""

    @property
    def connected(self) -> bool: ...

    @property
    def is_v5(self) -> bool: ...

    async def connect(self, will: Will | None = None) -> None: ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> asyncio.Future[None]: ...

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...

    async def next_message(self) -> Message: ...

    async def wait_closed(self) -> None: ...

    async def disconnect(self) -> None: ...


class PahoTransport:
    """One MQTT connection at a time; `connect()` again after it closed."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        window: int = 256,
        session_expiry_s: int = 0,
    ) -> None:
        """`session_expiry_s` > 0 asks for a persistent broker session (consumers such as the
        fleet view or a central service); the dock itself always starts clean."""
        paho_socket.check_paho_version()
        self._settings = settings
        self._session_expiry_s = session_expiry_s
        self._client_id = client_id
        self._window = window
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._pump: SocketPump | None = None
        self._publishes: PublishWindow | None = None
        self._subs: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()
        self._closed.set()
        self._messages: asyncio.Queue[Message | None] = asyncio.Queue()
        self._misc_task: asyncio.Task[None] | None = None
        self._connected = False
        self._disconnecting = False  # we sent DISCONNECT: the close that follows is ours

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def is_v5(self) -> bool:
        return self._settings.protocol == "5"

    # --- connecting --------------------------------------------------------------------

    async def connect(self, will: Will | None = None) -> None:
        if not self._closed.is_set():
            raise MqttError("already connected")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closed.clear()
        self._disconnecting = False
        self._connack = loop.create_future()
        self._messages = asyncio.Queue()
        self._publishes = PublishWindow(self._window, loop.call_soon)
        last_will = None if will is None else (will.topic, will.payload, will.qos, will.retain)
        try:
            client = await asyncio.to_thread(
                connect_client, self._settings, self._client_id, self,
                session_expiry_s=self._session_expiry_s, will=last_will)
            self._client = client
            if client.socket() is None:
                raise ConnectFailed("connection closed during handshake")
            self._pump = SocketPump(loop, client, self._force_close)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._closed.set()
            raise ConnectFailed(
                f"cannot connect to {self._settings.host}:{self._settings.port}: {exc}"
            ) from exc
        except MqttError:
            self._force_close()
            raise
        self._misc_task = loop.create_task(self._misc())
        try:
            async with asyncio.timeout(CONNACK_TIMEOUT_S):
                await asyncio.shield(self._connack)
        except TimeoutError as exc:
            self._force_close()
            raise ConnectFailed("no CONNACK from broker") from exc
        except ConnectFailed:
            self._force_close()
            raise
        except MqttError as exc:  # e.g. TLS 1.3: a refused client certificate shows up here
            self._force_close()
            raise ConnectFailed(f"connection closed before CONNACK: {exc}") from exc

    # --- paho callbacks (all on the loop, except register_write during connect) -------

    def on_connect(
        self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        fut = self._connack
        if rc.is_failure:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectFailed(f"broker refused connection: {rc}"))
            return
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        if self._publishes is not None:
            self._publishes.open(client, receive_max)
        self._connected = True
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self._disconnecting:
            log.info("mqtt disconnected cleanly")
        else:
            log.info("mqtt disconnected: %s", rc)
        self._mark_closed(ConnectionLost(f"connection lost: {rc}"))

    def on_publish(
        self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self._publishes is not None:
            self._publishes.completed(mid, rc)

    def on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        fut = self._subs.pop(mid, None)
        bad = [str(rc) for rc in rcs if rc.is_failure]
        if fut is not None and not fut.done() and bad:
            fut.set_exception(MqttError(f"subscription refused: {', '.join(bad)}"))
        elif fut is not None and not fut.done():
            fut.set_result(None)

    def on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._messages.put_nowait(_received(msg))

    def on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        pump = self._pump
        if pump is not None and sock is pump.sock:
            pump.stop()
            self._pump = None

    def on_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # paho's client outlived the loop (garbage-collected later): nothing to drive
        if _on_loop_thread(loop):
            self._update_writer()
        else:
            loop.call_soon_threadsafe(self._update_writer)

    def _update_writer(self) -> None:
        if self._pump is not None:
            self._pump.update_writer()

    async def _misc(self) -> None:
        while not self._closed.is_set():
            await asyncio.sleep(1.0)
            client = self._client
            if client is None:
                return
            if client.loop_misc() == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                self._mark_closed(ConnectionLost("keepalive timeout"))

    # --- closing -------------------------------------------------------------------------

    def _mark_closed(self, exc: MqttError) -> None:
        self._connected = False
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        waiting = [] if self._publishes is None else self._publishes.close()
        waiting += list(self._subs.values())
        self._subs.clear()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(exc)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(exc)
        if not self._closed.is_set():
            self._closed.set()
            self._messages.put_nowait(None)
        self._client = None

    def _force_close(self, exc: MqttError | None = None) -> None:
        client = self._client
        pump = self._pump
        self._mark_closed(exc or ConnectionLost("connection closed"))
        if client is not None:
            with contextlib.suppress(Exception):
                client.on_disconnect = None
                client.on_socket_close = None
                raw = client.socket()
                if raw is not None:
                    raw.close()
        if pump is not None:
            with contextlib.suppress(OSError, ValueError):
                pump.sock.raw.close()

    # --- the interface -----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> asyncio.Future[None]:
        """Queue a publish; the future completes on PUBACK (QoS 1) or when written (QoS 0)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._client is None or not self._connected or self._publishes is None:
            fut.set_exception(ConnectionLost("not connected"))
            return fut
        props = _publish_properties(correlation_data, response_topic) if self.is_v5 else None
        self._publishes.submit(Outgoing(topic, payload, qos, retain, props, fut))
        return fut

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        client = self._client
        if client is None or not self._connected:
            raise ConnectionLost("not connected")
        rc, mid = client.subscribe(topic_filter, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe failed: {paho.error_string(rc)}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._subs[mid] = fut
        await fut

    async def next_message(self) -> Message:
        """The next received message; raises ConnectionLost once the connection closed."""
        msg = await self._messages.get()
        if msg is None:
            self._messages.put_nowait(None)  # keep later callers from blocking
            raise ConnectionLost("connection closed")
        return msg

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def disconnect(self) -> None:
        """Clean DISCONNECT (the broker then discards the Will)."""
        client = self._client
        if client is None:
            return
        self._disconnecting = True
        client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._closed.wait()
        self._force_close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (tests; the broker sends the Will)."""
        self._force_close()


def _received(msg: paho.MQTTMessage) -> Message:
    props = getattr(msg, "properties", None)
    response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
    correlation = getattr(props, "CorrelationData", None) if props is not None else None
    return Message(
        topic=msg.topic,
        payload=bytes(msg.payload),
        qos=msg.qos,
        retain=bool(msg.retain),
        response_topic=response_topic if isinstance(response_topic, str) else None,
        correlation_data=bytes(correlation) if correlation is not None else None,
    )


def _publish_properties(correlation_data: bytes | None,
                        response_topic: str | None) -> Properties | None:
    """MQTT 5 request/response properties of a publish (None when there are none)."""
    if correlation_data is None and response_topic is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if response_topic is not None:
        props.ResponseTopic = response_topic
    return props


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


__all__ = [
    "Message",
    "PahoTransport",
    "Transport",
    "Will",
]
