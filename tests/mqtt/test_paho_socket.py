"""Contract test of the paho socket adapter (agent/mqtt/paho_socket.py) against the real
paho-mqtt and a real mosquitto: paho must do every read and write through the object in
its private `Client._sock`. If a paho release changes that, these tests say so."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt import paho_socket
from agent.mqtt.paho_socket import BufferedSocket, PahoIncompatible
from agent.mqtt.transport import PahoTransport

from .broker import Broker


def test_installed_paho_is_a_tested_release() -> None:
    # On failure: paho-mqtt was upgraded. Run this file; if the rest passes, add the
    # release to paho_socket.TESTED_PAHO.
    paho_socket.check_paho_version()


@pytest.mark.parametrize("version", ["3.0.0", "2.0.1", "1.6.1", "garbage"])
def test_untested_paho_releases_are_refused_by_name(version: str) -> None:
    with pytest.raises(PahoIncompatible, match="paho-mqtt"):
        paho_socket.check_paho_version(version)


def test_a_client_without_a_socket_is_refused() -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="unconnected")
    with pytest.raises(PahoIncompatible, match="_sock"):
        paho_socket.install(client, lambda: None)


class _CountingSocket(BufferedSocket):
    received = 0
    sent = 0

    def recv(self, n: int) -> bytes:
        data = super().recv(n)
        type(self).received += len(data)
        return data

    def send(self, data: bytes | bytearray) -> int:
        type(self).sent += len(data)
        return super().send(data)


async def test_paho_reads_and_writes_only_through_the_swapped_socket(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[BufferedSocket] = []
    original = paho_socket.BufferedSocket

    def counting(*args: Any) -> BufferedSocket:
        sock = _CountingSocket(*args)
        made.append(sock)
        return sock

    monkeypatch.setattr(paho_socket, "BufferedSocket", counting)
    _CountingSocket.received = _CountingSocket.sent = 0
    transport = PahoTransport(broker.settings("dock-A"), "contract-dock-A")
    await transport.connect()
    try:
        assert len(made) == 1 and isinstance(made[0], original)
        topic = broker.settings("dock-A").topic_prefix + "/dock-A/cmd/contract"  # ACL: own cmd/
        await transport.subscribe(topic, qos=1)
        payloads = [f"message {i}".encode() for i in range(200)]
        await asyncio.gather(*(transport.publish(topic, p) for p in payloads))
        got = [await asyncio.wait_for(transport.next_message(), 60) for _ in payloads]
        assert [m.payload for m in got] == payloads
        # every byte paho exchanged went through the adapter: 200 PUBLISH out and in
        assert _CountingSocket.sent > sum(len(p) for p in payloads)
        assert _CountingSocket.received > sum(len(p) for p in payloads)
    finally:
        await transport.disconnect()
    assert not transport.connected


async def test_publishes_leave_at_once_without_nagle(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes are coalesced per loop turn already; Nagle's algorithm would hold a small
    publish back behind the broker's delayed ACK (tens of milliseconds)."""
    made: list[BufferedSocket] = []
    original = paho_socket.BufferedSocket

    def keeping(*args: Any) -> BufferedSocket:
        sock = original(*args)
        made.append(sock)
        return sock

    monkeypatch.setattr(paho_socket, "BufferedSocket", keeping)
    transport = PahoTransport(broker.settings("dock-A"), "nodelay-dock-A")
    await transport.connect()
    try:
        assert len(made) == 1
        assert made[0].raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        topic = broker.settings("dock-A").topic_prefix + "/dock-A/cmd/contract"
        await transport.subscribe(topic, qos=1)
        await transport.publish(topic, b"state")
        got = await asyncio.wait_for(transport.next_message(), 60)
        assert got.payload == b"state"
    finally:
        await transport.disconnect()
