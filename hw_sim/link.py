"""The virtual recorder's serial line: its speed and the faults injected on it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from firmware_bridge.codec import Frame, FrameDecoder
from firmware_bridge.messages import Request
from hw_sim.spec import Faults


class LinkPacer:
    """One direction of a serial link of ``bytes_per_s``: each send waits until the wire
    would have carried it (bytes queue behind earlier ones; 0 = unthrottled)."""

    def __init__(self, bytes_per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.bytes_per_s = bytes_per_s
        self._clock = clock
        self._free_at = 0.0

    async def __call__(self, n: int) -> None:
        if self.bytes_per_s <= 0:
            return
        now = self._clock()
        self._free_at = max(now, self._free_at) + n / self.bytes_per_s
        delay = self._free_at - now
        if delay > 0.001:  # shorter waits add up in _free_at and are slept together
            await asyncio.sleep(delay)


class LinkFaults:
    """Request/reply filters of a DeviceServer that inject the link faults of `Faults`."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._garble_left = faults.garble_replies
        self._requests = FrameDecoder()
        self._pending: dict[int, str] = {}  # request id -> command name
        self.replies_suppressed = 0
        self.replies_garbled = 0
        self.list_pages_sent = 0  # listing replies seen by the link faults (answered or not)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._garble_left = faults.garble_replies

    def _per_command(self) -> bool:
        f = self.faults
        return bool(f.silent_commands or f.list_page_delay_s > 0
                    or f.list_stall_after_pages is not None)

    def request_filter(self, data: bytes) -> bytes:
        """Learn which command each request id is, for the per-command faults."""
        if self._per_command():
            for item in self._requests.feed(data):
                if isinstance(item, Frame) and isinstance(item.message, Request):
                    self._pending[item.request_id] = item.message.COMMAND
            if len(self._pending) > 4096:  # ids of replies that were never matched
                self._pending.clear()
        return data

    async def reply_filter(self, frame: bytes) -> bytes | None:
        f = self.faults
        if self._per_command():
            for item in FrameDecoder().feed(frame):
                if not await self._command_reply(self._pending.pop(item.request_id, None)):
                    self.replies_suppressed += 1
                    return None
        if f.reply_delay_s > 0:
            await asyncio.sleep(f.reply_delay_s)
        return self._damage(frame)

    async def _command_reply(self, command: str | None) -> bool:
        """False to suppress the reply to `command`; may delay it."""
        f = self.faults
        if command in f.silent_commands:
            return False
        if command == "list_recordings":
            self.list_pages_sent += 1
            stall = f.list_stall_after_pages
            if stall is not None and self.list_pages_sent > stall:
                return False
            if f.list_page_delay_s > 0:
                await asyncio.sleep(f.list_page_delay_s)
        return True

    def _damage(self, frame: bytes) -> bytes:
        f, out = self.faults, frame
        if self._garble_left > 0 and len(out) > 4:
            self._garble_left -= 1
            self.replies_garbled += 1
            i = len(out) // 2
            out = out[:i] + bytes([out[i] ^ 0x5A or 0x01]) + out[i + 1 :]
        if f.drop_byte_prob > 0 or f.garble_byte_prob > 0:
            rng = self._rng
            buf = bytearray()
            for b in out:
                if rng.random() < f.drop_byte_prob:
                    continue
                if rng.random() < f.garble_byte_prob:
                    b ^= 1 << rng.randrange(8)
                buf.append(b)
            out = bytes(buf)
        return out
