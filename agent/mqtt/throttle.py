"""Coalescing rate limit for offload progress: at most one message per interval per key,
and the latest value is always sent eventually (nothing newer is ever lost, older may be)."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Throttle(Generic[K, V]):
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[K, float] = {}
        self._pending: dict[K, V] = {}

    def offer(self, key: K, value: V, now: float, *, urgent: bool = False) -> V | None:
        """The value to send now, or None when it was parked until `next_due()`. An
        `urgent` value (a milestone) is sent now and starts a new interval."""
        last = self._last.get(key)
        if urgent or last is None or now - last >= self.interval_s:
            self._last[key] = now
            self._pending.pop(key, None)
            return value
        self._pending[key] = value
        return None

    def next_due(self) -> float | None:
        """When the earliest parked value may be sent."""
        if not self._pending:
            return None
        return min(self._last[k] + self.interval_s for k in self._pending)

    def take_due(self, now: float) -> list[tuple[K, V]]:
        due = [k for k in self._pending if now - self._last[k] >= self.interval_s]
        out = []
        for k in due:
            self._last[k] = now
            out.append((k, self._pending.pop(k)))
        return out

    def flush(self, key: K) -> V | None:
        """Forget `key`, returning its parked value (to send before a final message)."""
        self._last.pop(key, None)
        return self._pending.pop(key, None)
