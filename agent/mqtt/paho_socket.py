"""The one place that reaches into paho-mqtt's internals: its private `Client._sock`.

paho reads a packet a few bytes per recv() and writes each packet with its own send(); at
thousands of publishes per second the syscalls dominate. paho has no public hook for the
socket object it reads and writes, so after connecting we swap its private `_sock` for a
`BufferedSocket` (one large recv(), writes coalesced and flushed once per loop turn).

That only works while paho keeps every read and write going through `self._sock` and
returns it from `socket()`. `check_paho_version()` refuses a paho outside the versions
this was checked against, and `install()` checks the attribute is what `socket()` returns
before and after the swap; tests/mqtt/test_paho_socket.py is the contract test against the
real paho and a real broker. On a new paho: run that test, then widen `TESTED_PAHO`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt import __version__ as PAHO_VERSION

from agent.mqtt.errors import MqttError

# paho-mqtt releases whose Client keeps its socket in `_sock` (checked by the contract test)
TESTED_PAHO = ((2, 1), (2, 2))
PRIVATE_ATTRIBUTE = "_sock"

RawSocket = socket.socket | ssl.SSLSocket


class PahoIncompatible(MqttError):
    """The installed paho-mqtt is not one the socket adapter was checked against."""


def paho_version(text: str | None = None) -> tuple[int, int]:
    value = PAHO_VERSION if text is None else text
    parts = value.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise PahoIncompatible(f"cannot read paho-mqtt version {value!r}") from None


def check_paho_version(text: str | None = None) -> None:
    """Raise PahoIncompatible unless paho-mqtt's major.minor is in TESTED_PAHO."""
    found = paho_version(text)
    if found not in TESTED_PAHO:
        tested = ", ".join(f"{a}.{b}" for a, b in TESTED_PAHO)
        raise PahoIncompatible(
            f"paho-mqtt {found[0]}.{found[1]} is installed; the MQTT transport replaces "
            f"paho's private Client.{PRIVATE_ATTRIBUTE} and was checked against {tested} "
            "only (run tests/mqtt/test_paho_socket.py, then extend TESTED_PAHO)"
        )


class BufferedSocket:
    """Wraps paho's socket: reads in large chunks and coalesces writes.

    Writes are buffered and flushed once per loop iteration (`schedule_flush` is called on
    the first write into an empty buffer); reads are served from one large recv().
    """

    def __init__(self, sock: RawSocket, schedule_flush: Callable[[], None]) -> None:
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


def install(client: paho.Client, schedule_flush: Callable[[], None]) -> BufferedSocket:
    """Put a BufferedSocket between a connected paho client and its socket."""
    check_paho_version()
    raw = client.socket()
    current = getattr(client, PRIVATE_ATTRIBUTE, None)
    if raw is None or current is not raw or not isinstance(raw, socket.socket):
        raise PahoIncompatible(
            f"paho-mqtt {PAHO_VERSION}: Client.{PRIVATE_ATTRIBUTE} is not the "
            "connected socket that Client.socket() returns"
        )
    buffered = BufferedSocket(raw, schedule_flush)
    swapped: object
    setattr(client, PRIVATE_ATTRIBUTE, buffered)
    swapped = client.socket()
    if swapped is not buffered:
        setattr(client, PRIVATE_ATTRIBUTE, raw)
        raise PahoIncompatible(
            f"paho-mqtt {PAHO_VERSION}: Client.socket() does not return "
            f"Client.{PRIVATE_ATTRIBUTE}"
        )
    no_delay(raw)
    return buffered


def no_delay(sock: socket.socket) -> None:
    """Send each flush at once (TCP_NODELAY). Writes are already coalesced once per loop
    turn; Nagle's algorithm would hold a small publish (a recorder's new state) back while
    an earlier segment waits for the broker's delayed ACK, up to about 40 ms."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = [
    "TESTED_PAHO",
    "BufferedSocket",
    "PahoIncompatible",
    "check_paho_version",
    "install",
    "no_delay",
]
