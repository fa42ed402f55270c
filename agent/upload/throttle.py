"""Pacing of upload bytes so offloads from recorders always come first (thread-safe)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from agent.upload.errors import UploadStopped

RateFn = Callable[[], float | None]  # bytes per second; None: unlimited; 0: paused


class Throttle:
    def __init__(self, rate: RateFn, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._rate = rate
        self._stopped = stopped
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0
        self.paused_s = 0.0

    def check_stop(self) -> None:
        """Between two chunks of work that is not paced (hashing the stored file)."""
        if self._stopped():
            raise UploadStopped("the uploader is stopping")

    def __call__(self, n: int) -> None:
        while True:
            self.check_stop()
            rate = self._rate()
            if rate is None:
                return
            if rate > 0:
                break
            self._sleep(0.2)  # paused while recorders offload; re-check often
            self.paused_s += 0.2
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + n / rate
            wait = start - now
        if wait > 0:
            self._sleep(wait)
