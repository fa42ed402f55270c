"""Pre-shift readiness (regulation 000 §7): is this recorder fit to take out now?

Pure rules over facts the docking session gathered. READY only when every criterion
holds; otherwise NOT_READY naming every failing criterion, or CHARGING when the battery
is the only thing missing and it is charging (with an ETA from the observed charge rate).
Unknown facts (a storage-only recorder has no battery reading) fail their criterion with
a reason that says the fact is unknown, never silently pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from agent.compliance.firmware import firmware_problem
from agent.settings import ReadinessSettings

GB = 1_000_000_000


class Verdict(StrEnum):
    READY = "READY"
    NOT_READY = "NOT_READY"
    CHARGING = "CHARGING"


@dataclass(frozen=True, slots=True)
class BatterySample:
    time_s: float  # any monotonic-ish clock, same base for all samples
    percent: float


@dataclass(frozen=True)
class RecorderFacts:
    battery_percent: float | None = None
    charging: bool = False
    battery_failed: bool = False
    battery_samples: Sequence[BatterySample] = ()
    free_bytes: int | None = None
    clock_checked: bool = False
    clock_drift_ms: float | None = None  # after any correction
    offload_complete: bool = False
    files_pending: int = 0
    firmware: str | None = None
    model: str | None = None
    learned_charge_rate_per_s: float | None = None  # from this pack's earlier charging
    officer_no: str | None = None
    open_faults: Sequence[str] = ()  # fault codes


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Readiness:
    verdict: Verdict
    reasons: list[Reason] = field(default_factory=list)
    eta_s: float | None = None  # CHARGING only: estimated seconds until READY

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "eta_s": None if self.eta_s is None else round(self.eta_s),
        }


def required_free_bytes(settings: ReadinessSettings) -> int:
    """Free storage needed, from GB or from hours of recording at the configured bitrate."""
    needed = 0.0
    if settings.min_free_gb is not None:
        needed = max(needed, settings.min_free_gb * GB)
    if settings.min_free_hours is not None:
        needed = max(needed, settings.min_free_hours * 3600 * settings.bitrate_mbps * 1e6 / 8)
    return int(needed)


def charge_rate_per_s(samples: Sequence[BatterySample], window_s: float = 900.0) -> float | None:
    """Least-squares slope (percent per second) over the recent window; None if unknowable."""
    if len(samples) < 2:
        return None
    latest = samples[-1].time_s
    recent = [s for s in samples if latest - s.time_s <= window_s]
    if len(recent) < 2:
        return None
    n = len(recent)
    mean_t = sum(s.time_s for s in recent) / n
    mean_p = sum(s.percent for s in recent) / n
    var = sum((s.time_s - mean_t) ** 2 for s in recent)
    if var <= 0:
        return None
    return sum((s.time_s - mean_t) * (s.percent - mean_p) for s in recent) / var


def learned_charge_rate_per_s(samples: Sequence[tuple[float, float, bool]],
                              max_gap_s: float = 1800.0) -> float | None:
    """This pack's charge rate from its history: percent gained per second over
    consecutive samples that were both charging, no more than `max_gap_s` apart."""
    gained = seconds = 0.0
    for (t0, p0, c0), (t1, p1, c1) in itertools.pairwise(samples):
        if c0 and c1 and 0 < t1 - t0 <= max_gap_s and p1 > p0:
            gained += p1 - p0
            seconds += t1 - t0
    return gained / seconds if seconds > 0 else None


def evaluate(facts: RecorderFacts, settings: ReadinessSettings, tolerance_ms: int) -> Readiness:
    reasons: list[Reason] = []
    battery_short = False

    if facts.battery_failed:
        reasons.append(Reason("battery_failed", "battery reports a failure"))
    elif facts.battery_percent is None:
        reasons.append(Reason("battery_unknown", "battery level could not be read"))
    elif facts.battery_percent < settings.min_battery_percent:
        battery_short = True
        reasons.append(Reason(
            "battery_low",
            f"battery {facts.battery_percent:.0f}% < {settings.min_battery_percent}%",
        ))

    need = required_free_bytes(settings)
    if facts.free_bytes is None:
        reasons.append(Reason("storage_unknown", "free storage could not be read"))
    elif facts.free_bytes < need:
        reasons.append(Reason(
            "storage_low", f"free storage {facts.free_bytes / GB:.1f} GB < {need / GB:.1f} GB"
        ))

    if not facts.clock_checked or facts.clock_drift_ms is None:
        reasons.append(Reason("clock_unchecked", "recorder clock was not checked"))
    elif abs(facts.clock_drift_ms) > tolerance_ms:
        reasons.append(Reason(
            "clock_drift",
            f"clock off by {facts.clock_drift_ms / 1000:+.1f} s"
            f" (tolerance {tolerance_ms / 1000:g} s)",
        ))

    if not facts.offload_complete:
        pending = f"{facts.files_pending} file(s)" if facts.files_pending else "footage"
        reasons.append(Reason("offload_pending", f"{pending} not yet offloaded and committed"))

    firmware = firmware_problem(settings, facts.model, facts.firmware)
    if firmware is not None:
        reasons.append(Reason("firmware_not_allowed", firmware))

    if settings.require_officer and not facts.officer_no:
        reasons.append(Reason("no_officer", "no officer assigned"))

    for code in facts.open_faults:
        reasons.append(Reason("open_fault", f"open fault: {code}"))

    if not reasons:
        return Readiness(Verdict.READY)
    only_battery = battery_short and len(reasons) == 1
    if only_battery and facts.charging:
        assert facts.battery_percent is not None
        rate = charge_rate_per_s(facts.battery_samples)
        if rate is None or rate <= 0:
            rate = facts.learned_charge_rate_per_s
        eta = None
        if rate is not None and rate > 0:
            eta = (settings.min_battery_percent - facts.battery_percent) / rate
        return Readiness(Verdict.CHARGING, reasons, eta)
    return Readiness(Verdict.NOT_READY, reasons)
