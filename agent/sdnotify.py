"""A minimal systemd notification client (sd_notify protocol), standard library only.

The daemon calls `notify("READY=1")` once start-up is complete and `notify("WATCHDOG=1")`
at least every `watchdog_interval()` / 2 seconds. Outside systemd ($NOTIFY_SOCKET unset)
every call is a cheap no-op, so the same code runs in tests and the demo.
A datagram to a local socket never blocks for long; the socket is non-blocking anyway so
a stalled manager cannot stall the event loop.
"""

from __future__ import annotations

import os
import socket


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    if addr.startswith("@"):  # abstract namespace
        return "\0" + addr[1:]
    return addr


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "WATCHDOG=1", "STATUS=...") to systemd.

    Returns True if it was sent, False when not running under systemd or on error
    (a missed notification must never crash the agent; the watchdog catches real hangs).
    """
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds if systemd expects pings from this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
