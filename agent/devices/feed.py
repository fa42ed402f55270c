"""The one shell that drives a `DeviceTracker` on the event loop.

Device sources differ only in how records arrive (udev netlink, dock-sim's socket);
`TrackerFeed` does the rest for all of them: the current loop time for every record,
delivery of the tracker's events, and the timer that sends a debounced unplug when its
window has passed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable

from agent.devices.events import DeviceEvent
from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord

log = logging.getLogger(__name__)

Emit = Callable[[DeviceEvent], None]


class TrackerFeed:
    """Records in, events out, on the running loop; debounce deadlines as `call_at` timers."""

    def __init__(self, tracker: DeviceTracker, emit: Emit) -> None:
        self.tracker = tracker
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def handle(self, record: DeviceRecord) -> None:
        self._deliver(self.tracker.handle(record, self._loop.time()))

    def resync(self, present: list[DeviceRecord]) -> None:
        """`present` is everything there is now; whatever else the tracker knows is gone."""
        self._deliver(self.tracker.resync(present, self._loop.time()))

    def flush(self) -> None:
        """End every pending debounce window now (the origin itself is gone for good)."""
        self._deliver(self.tracker.tick(math.inf))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._deliver(self.tracker.tick(self._loop.time()))

    def _deliver(self, events: Iterable[DeviceEvent]) -> None:
        for event in events:
            log.debug("device event: %s", event)
            try:
                self._emit(event)
            except Exception:  # a broken consumer must not stop detection
                log.exception("device event consumer failed on %s", event)
        self.close()
        deadline = self.tracker.next_deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
