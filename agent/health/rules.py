"""Health rules: projected days until the evidence disk is full, and health faults.

Pure code. The agent feeds it readings and the recent offload volume; it answers what the
ops team should be told. Fault codes are stable strings (they appear in MQTT payloads).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.health.system import SystemReadings
from agent.settings import HealthSettings

DAY_S = 86400.0


class OffloadRate:
    """Bytes stored over a sliding window, for 'days until full' projections."""

    def __init__(self, window_s: float = 7 * DAY_S) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._first_seen: float | None = None

    def add(self, now: float, nbytes: int) -> None:
        if self._first_seen is None:
            self._first_seen = now
        self._events.append((now, nbytes))
        self._trim(now)

    def observe_start(self, now: float) -> None:
        if self._first_seen is None:
            self._first_seen = now

    def bytes_per_day(self, now: float) -> float | None:
        """None until at least an hour has been observed (too little to project from)."""
        self._trim(now)
        if self._first_seen is None:
            return None
        span = min(self.window_s, now - self._first_seen)
        if span < 3600:
            return None
        return sum(n for _, n in self._events) * DAY_S / span

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()


def projected_days_until_full(free_bytes: int, bytes_per_day: float | None) -> float | None:
    if bytes_per_day is None or bytes_per_day <= 0:
        return None
    return free_bytes / bytes_per_day


@dataclass(frozen=True, slots=True)
class HealthIssue:
    code: str
    reason: str


def health_issues(
    readings: SystemReadings,
    settings: HealthSettings,
    *,
    clock_synchronised: bool | None,
    broker_connected: bool | None,
    outbox_oldest_age_s: float | None,
    outbox_age_warn_s: float = 6 * 3600,
) -> list[HealthIssue]:
    issues: list[HealthIssue] = []
    if readings.store_free_percent < settings.store_free_warn_percent:
        issues.append(HealthIssue(
            "store_space_low",
            f"evidence disk {readings.store_free_percent:.1f}% free"
            f" (< {settings.store_free_warn_percent:g}%)",
        ))
    if readings.cpu_temp_c is not None and readings.cpu_temp_c > settings.cpu_temp_warn_c:
        issues.append(HealthIssue(
            "cpu_hot", f"CPU at {readings.cpu_temp_c:.0f} °C (> {settings.cpu_temp_warn_c:g} °C)"
        ))
    if readings.throttling_now:
        flags = ", ".join(readings.throttling_now)
        issues.append(HealthIssue("throttled", f"power/thermal: {flags}"))
    if clock_synchronised is False:
        issues.append(HealthIssue("dock_clock_unsynchronised", "dock clock is not synchronised"))
    if (
        broker_connected is False
        and outbox_oldest_age_s is not None
        and outbox_oldest_age_s > outbox_age_warn_s
    ):
        issues.append(HealthIssue(
            "reporting_backlog",
            f"broker unreachable; oldest unsent event {outbox_oldest_age_s / 3600:.1f} h old",
        ))
    return issues
