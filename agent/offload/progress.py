"""Cheap per-recorder progress: counters bumped by copy threads, read by the loop."""

from __future__ import annotations

import time

from agent.domain import DockingContext
from agent.offload.summary import OffloadProgress


class ProgressTracker:
    """Plain integer counters (a single `+=` from one writer thread at a time is safe)."""

    def __init__(self, ctx: DockingContext, bytes_total: int, files_total: int) -> None:
        self.ctx = ctx
        self.bytes_total = bytes_total
        self.files_total = files_total
        self.bytes_done = 0
        self.copied = 0  # bytes copied in this session, for the rate
        self.files_done = 0
        self.current: bytes | None = None
        self._t0 = time.monotonic()

    def add_copied(self, n: int) -> None:
        self.bytes_done += n
        self.copied += n

    def add_resumed(self, n: int) -> None:
        self.bytes_done += n

    def snapshot(self) -> OffloadProgress:
        elapsed = time.monotonic() - self._t0
        rate = self.copied / elapsed if elapsed > 0 else 0.0
        left = max(0, self.bytes_total - self.bytes_done)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        ident = self.ctx.identity
        return OffloadProgress(
            ident.serial, self.ctx.session_id, self.ctx.bay, self.bytes_done, self.bytes_total,
            self.files_done, self.files_total, rate, eta, self.current,
        )
