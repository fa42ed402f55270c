"""Reconnect delays: exponential backoff with full jitter, bounded by the settings."""

from __future__ import annotations

import random


class Backoff:
    """Delay n is uniform in [min, min(max, min * 2**n)]; `reset()` after a good session."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * (2.0 ** min(self._attempt, 30)))
        self._attempt += 1
        return self._rng.uniform(self.min_s, ceiling)

    def reset(self) -> None:
        self._attempt = 0
