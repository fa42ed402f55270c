"""Deadlines for debounced removals, driven by an explicit clock.

A recorder that vanishes is only reported gone once it has stayed gone for the debounce
window: USB contacts bounce and recorders re-enumerate when their firmware switches
functions, and neither should end a docking session. This component only keeps the
deadlines; the caller decides what "came back" means and feeds `now` itself (pure, so
tests never sleep).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Debouncer(Generic[K]):
    """Pending removals keyed by K, each due `window` seconds after it was first held."""

    def __init__(self, window: float) -> None:
        if window < 0:
            raise ValueError("debounce window must not be negative")
        self.window = window
        self._due: dict[K, float] = {}

    def hold(self, key: K, now: float) -> float:
        """Start the window for `key` unless one is already running; returns its deadline."""
        return self._due.setdefault(key, now + self.window)

    def cancel(self, key: K) -> bool:
        """The thing came back: forget its deadline. True if one was pending."""
        return self._due.pop(key, None) is not None

    def pop_due(self, now: float) -> list[K]:
        """Keys whose window has passed at `now`, oldest deadline first, removed from the set."""
        due = sorted((t, i, k) for i, (k, t) in enumerate(self._due.items()) if t <= now)
        for _, _, key in due:
            del self._due[key]
        return [key for _, _, key in due]

    def next_deadline(self) -> float | None:
        return min(self._due.values(), default=None)
