"""Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames."""

from __future__ import annotations

from firmware_bridge.errors import FrameError


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    start = 0
    n = len(data)
    while True:
        zero = data.find(b"\x00", start, min(start + 254, n))
        if zero < 0:
            block = data[start : min(start + 254, n)]
            out.append(len(block) + 1)
            out += block
            start += len(block)
            if len(block) == 254 and start < n:
                continue  # full block without a zero: no implicit zero follows
            if len(block) < 254 or start >= n:
                break
        else:
            out.append(zero - start + 1)
            out += data[start:zero]
            start = zero + 1
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode; FrameError on any malformed input (including a 0x00)."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("COBS: zero byte inside a frame")
        end = i + code
        if end > n:
            raise FrameError("COBS: block runs past the end of the frame")
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError("COBS: zero byte inside a frame")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)
