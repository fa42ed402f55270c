"""Pre-shift readiness (regulation 000 §7): is this recorder fit to take out now?

Pure rules over facts the docking session gathered. READY only when every criterion
holds; otherwise NOT_READY naming every failing criterion, or CHARGING when the battery
is the only thing missing and it is charging (with an ETA from the observed charge rate).
Unknown facts (a storage-only recorder has no battery reading) fail their criterion with
a reason that says the fact is unknown, never silently pass. A recorder whose firmware is
being written or which is rebooting into it is never READY, whatever its session state
(`released`): pulled now, it could be left without working firmware.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from agent.compliance.firmware import firmware_problem
from agent.settings import ReadinessSettings

GB = 1_000_000_000
# States of the `firmware_update` field (agent.firmware.status) in which an update runs:
# decided and starting, transferring, committing or rebooting into the new image.
FIRMWARE_BUSY_STATES = frozenset({"updating", "transferring"})


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
    firmware_state: str | None = None  # the `firmware_update` field's state, if known

    @property
    def firmware_updating(self) -> bool:
        return self.firmware_state in FIRMWARE_BUSY_STATES


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


def _battery_reasons(facts: RecorderFacts, settings: ReadinessSettings) -> list[Reason]:
    if facts.battery_failed:
        return [Reason("battery_failed", "battery reports a failure")]
    if facts.battery_percent is None:
        return [Reason("battery_unknown", "battery level could not be read")]
    if facts.battery_percent < settings.min_battery_percent:
        return [Reason("battery_low",
                       f"battery {facts.battery_percent:.0f}% < {settings.min_battery_percent}%")]
    return []


def _storage_reasons(facts: RecorderFacts, settings: ReadinessSettings) -> list[Reason]:
    need = required_free_bytes(settings)
    if facts.free_bytes is None:
        return [Reason("storage_unknown", "free storage could not be read")]
    if facts.free_bytes < need:
        return [Reason("storage_low",
                       f"free storage {facts.free_bytes / GB:.1f} GB < {need / GB:.1f} GB")]
    return []


def _clock_reasons(facts: RecorderFacts, tolerance_ms: int) -> list[Reason]:
    if not facts.clock_checked or facts.clock_drift_ms is None:
        return [Reason("clock_unchecked", "recorder clock was not checked")]
    if abs(facts.clock_drift_ms) > tolerance_ms:
        return [Reason("clock_drift", f"clock off by {facts.clock_drift_ms / 1000:+.1f} s"
                                      f" (tolerance {tolerance_ms / 1000:g} s)")]
    return []


def _custody_reasons(facts: RecorderFacts, settings: ReadinessSettings) -> list[Reason]:
    reasons: list[Reason] = []
    if not facts.offload_complete:
        pending = f"{facts.files_pending} file(s)" if facts.files_pending else "footage"
        reasons.append(Reason("offload_pending", f"{pending} not yet offloaded and committed"))
    firmware = firmware_problem(settings, facts.model, facts.firmware)
    if firmware is not None:
        reasons.append(Reason("firmware_not_allowed", firmware))
    if settings.require_officer and not facts.officer_no:
        reasons.append(Reason("no_officer", "no officer assigned"))
    reasons.extend(Reason("open_fault", f"open fault: {code}") for code in facts.open_faults)
    return reasons


def _charging_eta(facts: RecorderFacts, settings: ReadinessSettings,
                  battery_percent: float) -> float | None:
    rate = charge_rate_per_s(facts.battery_samples)
    if rate is None or rate <= 0:
        rate = facts.learned_charge_rate_per_s
    if rate is None or rate <= 0:
        return None
    return (settings.min_battery_percent - battery_percent) / rate


def _firmware_update_reasons(facts: RecorderFacts) -> list[Reason]:
    if facts.firmware_updating:
        return [Reason("firmware_updating", "firmware update in progress — do not unplug")]
    return []


def evaluate(facts: RecorderFacts, settings: ReadinessSettings, tolerance_ms: int) -> Readiness:
    battery = _battery_reasons(facts, settings)
    reasons = [*_firmware_update_reasons(facts), *battery, *_storage_reasons(facts, settings),
               *_clock_reasons(facts, tolerance_ms), *_custody_reasons(facts, settings)]
    if not reasons:
        return Readiness(Verdict.READY)
    only_battery = len(reasons) == 1 and battery and battery[0].code == "battery_low"
    if only_battery and facts.charging and facts.battery_percent is not None:
        return Readiness(Verdict.CHARGING, reasons,
                         _charging_eta(facts, settings, facts.battery_percent))
    return Readiness(Verdict.NOT_READY, reasons)
