"""Recorder clock checks: drift maths and the set-or-refuse rule (pure).

Regulation 004 §10 needs recording times that match the case documents, so every docking
measures the recorder's drift against the dock clock, corrects it when it exceeds the
tolerance, and records drift before and after. A dock whose own clock is not synchronised
must never push its time into a recorder: it measures and reports instead.

Drift is measured like NTP does for one exchange: the device read its clock somewhere
between our send and our receive, so the best estimate of "our time at that instant" is
the midpoint, with an uncertainty of half the round trip. Of several samples the one with
the smallest round trip is the most precise.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class ClockError(Exception):
    """A drift could not be computed from the given samples."""


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One clock read: the device's time and the dock's wall time around the exchange."""

    device_utc_ms: int
    sent_ms: float  # dock wall clock when the request left, ms since the epoch
    received_ms: float  # dock wall clock when the reply arrived

    def __post_init__(self) -> None:
        if self.received_ms < self.sent_ms:
            raise ClockError(
                f"clock sample received ({self.received_ms}) before sent ({self.sent_ms}):"
                " the dock clock stepped during the exchange"
            )

    @property
    def rtt_ms(self) -> float:
        return self.received_ms - self.sent_ms

    @property
    def midpoint_ms(self) -> float:
        return (self.sent_ms + self.received_ms) / 2

    @property
    def drift_ms(self) -> float:
        """Device minus dock: positive when the recorder runs ahead."""
        return self.device_utc_ms - self.midpoint_ms


@dataclass(frozen=True, slots=True)
class DriftMeasurement:
    drift_ms: int  # rounded, device minus dock
    rtt_ms: float  # round trip of the chosen sample (uncertainty is half of it)
    samples: int

    def as_dict(self) -> dict[str, object]:
        return {"drift_ms": self.drift_ms, "rtt_ms": round(self.rtt_ms, 3),
                "samples": self.samples}


def best_sample(samples: Sequence[ClockSample]) -> ClockSample:
    """The sample with the smallest round trip; the earliest one on ties."""
    if not samples:
        raise ClockError("no clock samples")
    return min(samples, key=lambda s: s.rtt_ms)  # min() keeps the first of equal keys


def measure_drift(samples: Sequence[ClockSample]) -> DriftMeasurement:
    best = best_sample(samples)
    return DriftMeasurement(drift_ms=round(best.drift_ms), rtt_ms=best.rtt_ms,
                            samples=len(samples))


def within_tolerance(drift_ms: float, tolerance_ms: int) -> bool:
    """A drift of exactly the tolerance is still acceptable; only exceeding it is not."""
    return abs(drift_ms) <= tolerance_ms


class ClockAction(enum.Enum):
    OK = "ok"  # within tolerance, nothing to do
    SET = "set"  # set the recorder clock from the dock
    REFUSE_UNSYNCHRONISED = "refuse_unsynchronised"  # would set, but the dock is not synced


def decide(
    drift_ms: float, *, tolerance_ms: int, dock_synchronised: bool, require_dock_sync: bool
) -> ClockAction:
    if within_tolerance(drift_ms, tolerance_ms):
        return ClockAction.OK
    if require_dock_sync and not dock_synchronised:
        return ClockAction.REFUSE_UNSYNCHRONISED
    return ClockAction.SET


def set_target_ms(now_ms: float, expected_one_way_ms: float) -> int:
    """The time to send so the recorder is right when the command lands (half an RTT later)."""
    return round(now_ms + expected_one_way_ms)
