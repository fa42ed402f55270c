"""MQTT transport: paho-mqtt driven from the asyncio loop, behind a small interface.

paho's own network thread is never started. The blocking part of connecting (TCP connect,
TLS handshake, reading certificate files) runs in a worker thread; afterwards the socket is
watched with `loop.add_reader`/`add_writer` and `loop_read`/`loop_write`/`loop_misc` are
called on the loop, so every paho callback runs on the loop and is bridged into futures.
A fresh paho client is made per connection: paho keeps its session in memory only, and
delivery guarantees come from the durable outbox, not from paho re-sending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import select
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, read_input_file
from agent.mqtt.errors import ConnectFailed, ConnectionLost, MqttError, PublishRejected
from agent.settings import MqttSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
READ_BURST = 256


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


@dataclass(slots=True)
class _Queued:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Properties | None
    fut: asyncio.Future[None]


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


class _BufferedSocket:
    """Wraps paho's socket: reads in large chunks and coalesces writes.

    paho reads a packet a few bytes per recv() and writes each packet with its own send();
    at thousands of publishes per second the syscalls dominate. Writes are buffered and
    flushed once per loop iteration; reads are served from one large recv().
    """

    def __init__(self, sock: Any, schedule_flush: Callable[[], None]) -> None:
        self.raw = sock
        self._schedule = schedule_flush
        self._rbuf = bytearray()
        self.wbuf = bytearray()

    def recv(self, n: int) -> bytes:
        if not self._rbuf:
            data = self.raw.recv(65536)
            if not data:
                return b""
            self._rbuf += data
        out = bytes(self._rbuf[:n])
        del self._rbuf[:n]
        return out

    def pending(self) -> int:
        extra = self.raw.pending() if isinstance(self.raw, ssl.SSLSocket) else 0
        return len(self._rbuf) + extra

    def send(self, data: bytes | bytearray) -> int:
        if not self.wbuf:
            self._schedule()
        self.wbuf += data
        return len(data)

    def flush(self) -> bool:
        """Write what the socket takes; False when it would block (wait for writable)."""
        while self.wbuf:
            try:
                n = self.raw.send(self.wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            del self.wbuf[:n]
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.flush()  # e.g. a DISCONNECT paho queued just before closing
        self.raw.close()

    def fileno(self) -> int:
        return int(self.raw.fileno())

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)


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
        self._settings = settings
        self._session_expiry_s = session_expiry_s
        self._client_id = client_id
        self._window = window
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._sock: _BufferedSocket | None = None
        self._flush_scheduled = False
        self._writer_on = False
        self._pending: dict[int, tuple[asyncio.Future[None], int]] = {}  # mid -> (fut, qos)
        self._queued: collections.deque[_Queued] = collections.deque()
        self._inflight = 0  # QoS 1 publishes awaiting PUBACK
        self._limit = window
        self._drain_scheduled = False
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
        try:
            client = await asyncio.to_thread(self._connect_blocking, will)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._closed.set()
            raise ConnectFailed(
                f"cannot connect to {self._settings.host}:{self._settings.port}: {exc}"
            ) from exc
        self._client = client
        raw = client.socket()
        if raw is None:
            self._closed.set()
            raise ConnectFailed("connection closed during handshake")
        self._sock = _BufferedSocket(raw, self._schedule_flush)
        client._sock = self._sock  # see _BufferedSocket
        self._flush_scheduled = False
        loop.add_reader(raw, self._on_readable)
        self._update_writer()
        self._misc_task = loop.create_task(self._misc())
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            self._force_close()
            raise ConnectFailed("no CONNACK from broker") from exc
        except ConnectFailed:
            self._force_close()
            raise
        except MqttError as exc:  # e.g. TLS 1.3: a refused client certificate shows up here
            self._force_close()
            raise ConnectFailed(f"connection closed before CONNACK: {exc}") from exc

    def _connect_blocking(self, will: Will | None) -> paho.Client:
        """Runs in a worker thread: nothing here touches the event loop directly."""
        s = self._settings
        v5 = self.is_v5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else self._session_expiry_s == 0,
            reconnect_on_failure=False,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_register_write
        # paho scans all in-flight messages on every PUBACK when it enforces a limit itself;
        # the window is enforced here instead (see publish()).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
            )
        if s.username is not None:
            password = _read_password(s.password_file) if s.password_file else None
            client.username_pw_set(s.username, password)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.connect_timeout = 10.0
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry_s
            client.connect(s.host, s.port, keepalive=s.keepalive_s,
                           clean_start=self._session_expiry_s == 0, properties=props)
        else:
            client.connect(s.host, s.port, keepalive=s.keepalive_s)
        return client

    # --- paho callbacks (all on the loop, except register_write during connect) -------

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        fut = self._connack
        if rc.is_failure:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectFailed(f"broker refused connection: {rc}"))
            return
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        if isinstance(receive_max, int) and receive_max > 0:
            # Exceeding the broker's Receive Maximum makes it drop the connection.
            self._limit = min(self._window, receive_max)
        else:
            self._limit = self._window
        self._connected = True
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self._disconnecting:
            log.info("mqtt disconnected cleanly")
        else:
            log.info("mqtt disconnected: %s", rc)
        self._mark_closed(ConnectionLost(f"connection lost: {rc}"))

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        fut, qos = entry
        if qos > 0:
            self._inflight -= 1
            if self._queued and not self._drain_scheduled and self._loop is not None:
                self._drain_scheduled = True  # not from inside paho's callback
                self._loop.call_soon(self._send_queued)
        if fut.done():
            return
        if rc.is_failure:
            fut.set_exception(PublishRejected(f"broker rejected publish: {rc}"))
        else:
            fut.set_result(None)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        fut = self._subs.pop(mid, None)
        if fut is None or fut.done():
            return
        bad = [str(rc) for rc in rcs if rc.is_failure]
        if bad:
            fut.set_exception(MqttError(f"subscription refused: {', '.join(bad)}"))
        else:
            fut.set_result(None)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        self._messages.put_nowait(
            Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                response_topic=response_topic if isinstance(response_topic, str) else None,
                correlation_data=bytes(correlation) if correlation is not None else None,
            )
        )

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._unwatch(sock)

    def _on_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if _on_loop_thread(loop):
            self._update_writer()
        else:
            loop.call_soon_threadsafe(self._update_writer)

    # --- socket plumbing ---------------------------------------------------------------

    def _update_writer(self) -> None:
        client, loop, sock = self._client, self._loop, self._sock
        if client is None or loop is None or sock is None:
            return
        want = client.want_write() or bool(sock.wbuf)
        if want and not self._writer_on:
            loop.add_writer(sock.raw, self._on_writable)
            self._writer_on = True
        elif not want and self._writer_on:
            loop.remove_writer(sock.raw)
            self._writer_on = False

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        sock = self._sock
        if sock is None:
            return
        try:
            sock.flush()
        except OSError as exc:
            self._force_close(ConnectionLost(f"send failed: {exc}"))
            return
        self._update_writer()

    def _on_readable(self) -> None:
        client = self._client
        # paho's loop_read handles about one packet per call; read on while data is waiting
        # (bounded, so a flood cannot starve the rest of the loop).
        for _ in range(READ_BURST):
            if client is None or self._client is not client:
                return
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            sock = client.socket()
            if sock is None:
                return
            if isinstance(sock, _BufferedSocket) and sock.pending() > 0:
                continue  # buffered (or TLS-decrypted) bytes the socket no longer signals
            if not select.select([sock], [], [], 0)[0]:
                return
        if self._loop is not None and self._client is client:
            self._loop.call_soon(self._on_readable)  # burst used up: continue next turn

    def _on_writable(self) -> None:
        client = self._client
        if client is not None:
            client.loop_write()  # hands paho's queued packets to the buffer
            self._flush()

    async def _misc(self) -> None:
        while not self._closed.is_set():
            await asyncio.sleep(1.0)
            client = self._client
            if client is None:
                return
            if client.loop_misc() == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                self._mark_closed(ConnectionLost("keepalive timeout"))

    def _unwatch(self, sock: Any) -> None:
        loop = self._loop
        if loop is None or sock is None or sock is not self._sock:
            return
        raw: Any = sock.raw if isinstance(sock, _BufferedSocket) else sock
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(raw)
        if self._writer_on:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(raw)
            self._writer_on = False
        self._sock = None

    def _mark_closed(self, exc: MqttError) -> None:
        self._connected = False
        self._unwatch(self._sock)
        waiting = [f for f, _ in self._pending.values()] + list(self._subs.values())
        waiting += [q.fut for q in self._queued]
        self._pending.clear()
        self._subs.clear()
        self._queued.clear()
        self._inflight = 0
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
        sock = self._sock
        self._mark_closed(exc or ConnectionLost("connection closed"))
        if client is not None:
            with contextlib.suppress(Exception):
                client.on_disconnect = None
                client.on_socket_close = None
                raw = client.socket()
                if raw is not None:
                    raw.close()
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                sock.raw.close()

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
        client = self._client
        if client is None or not self._connected:
            fut.set_exception(ConnectionLost("not connected"))
            return fut
        props: Properties | None = None
        if self.is_v5 and (correlation_data is not None or response_topic is not None):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if response_topic is not None:
                props.ResponseTopic = response_topic
        item = _Queued(topic, payload, qos, retain, props, fut)
        if qos > 0 and (self._inflight >= self._limit or self._queued):
            self._queued.append(item)  # sent in order as PUBACKs free the window
        else:
            self._send(client, item)
        return fut

    def _send(self, client: paho.Client, item: _Queued) -> None:
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
        client = self._client
        while client is not None and self._queued and self._inflight < self._limit:
            self._send(client, self._queued.popleft())

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
            await asyncio.wait_for(self._closed.wait(), 5.0)
        self._force_close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (tests; the broker sends the Will)."""
        self._force_close()


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _read_password(path: Path) -> str:
    # a private regular file (never a FIFO or a device): checked again at every connect
    try:
        data = read_input_file(path, "MQTT password file", max_bytes=MAX_SECRET_BYTES,
                               secret=True)
        return data.decode("utf-8").strip()
    except (InputFileError, UnicodeDecodeError) as exc:
        raise ConnectFailed(str(exc)) from None


__all__ = [
    "Message",
    "PahoTransport",
    "Transport",
    "Will",
]

