"""The dock's own clock: is it synchronised (kernel probe, or a configured override)?

Shared by the docking sessions (which must never push an unsynchronised time into a
recorder) and by health (which reports the dock clock): one rule, one place, below both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from agent.settings import ClockSettings

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex from <sys/timex.h> (Linux); only `modes` and `status` are used."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def kernel_clock_synchronised() -> bool:
    """Whether the kernel considers the system clock synchronised (NTP/PTP discipline).

    Reads with adjtimex(modes=0), which changes nothing and needs no privilege. Any failure
    to ask counts as unsynchronised: the safe answer for a dock that would set clocks.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return False
    if rc < 0 or rc == _TIME_ERROR:
        return False
    return not (tx.status & _STA_UNSYNC)


def dock_clock_probe(
    settings: ClockSettings, kernel: Callable[[], bool] = kernel_clock_synchronised
) -> Callable[[], bool]:
    """The sync probe sessions use: the kernel's answer unless the config overrides it."""
    override = settings.assume_synchronised
    if override is not None:
        return lambda: override
    return kernel
