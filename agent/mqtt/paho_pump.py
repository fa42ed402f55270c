"""Drives a connected paho client from the asyncio loop instead of paho's network thread.

The socket is watched with `loop.add_reader`/`add_writer`; `loop_read`/`loop_write` run on
the loop, so every paho callback runs on the loop. Writes go into the BufferedSocket and
are flushed once per loop turn; the writer is watched only while something waits to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from agent.mqtt import paho_socket
from agent.mqtt.errors import ConnectionLost, MqttError

READ_BURST = 256


class SocketPump:
    def __init__(self, loop: asyncio.AbstractEventLoop, client: paho.Client,
                 on_error: Callable[[MqttError], None]) -> None:
        self._loop = loop
        self._client = client
        self._on_error = on_error
        self._flush_scheduled = False
        self._writer_on = False
        self._active = True
        self.sock = paho_socket.install(client, self._schedule_flush)
        loop.add_reader(self.sock.raw, self._on_readable)
        self.update_writer()

    def update_writer(self) -> None:
        if not self._active:
            return
        want = self._client.want_write() or bool(self.sock.wbuf)
        if want and not self._writer_on:
            self._loop.add_writer(self.sock.raw, self._on_writable)
            self._writer_on = True
        elif not want and self._writer_on:
            self._loop.remove_writer(self.sock.raw)
            self._writer_on = False

    def stop(self) -> None:
        """Stop watching the socket (closing it is paho's or the caller's business)."""
        if not self._active:
            return
        self._active = False
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.raw)
        if self._writer_on:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.sock.raw)
            self._writer_on = False

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._active:
            return
        try:
            self.sock.flush()
        except OSError as exc:
            self._on_error(ConnectionLost(f"send failed: {exc}"))
            return
        self.update_writer()

    def _on_readable(self) -> None:
        client = self._client
        # paho's loop_read handles about one packet per call; read on while data is waiting
        # (bounded, so a flood cannot starve the rest of the loop).
        for _ in range(READ_BURST):
            if not self._active:
                return
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            sock = client.socket()
            if sock is None:
                return
            if isinstance(sock, paho_socket.BufferedSocket) and sock.pending() > 0:
                continue  # buffered (or TLS-decrypted) bytes the socket no longer signals
            if not select.select([sock], [], [], 0)[0]:
                return
        if self._active:
            self._loop.call_soon(self._on_readable)  # burst used up: continue next turn

    def _on_writable(self) -> None:
        if self._active:
            self._client.loop_write()  # hands paho's queued packets to the buffer
            self._flush()
