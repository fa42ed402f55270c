"""The CHARGING ETA of a pack that docks again comes from its own charging history when
there are no recent samples yet."""

from __future__ import annotations

from agent.compliance.readiness import (
    BatterySample,
    RecorderFacts,
    Verdict,
    evaluate,
    learned_charge_rate_per_s,
)
from agent.settings import ReadinessSettings

DAY = 86400.0


def test_learned_rate_uses_only_consecutive_charging_samples() -> None:
    yesterday = [(0.0, 20.0, True), (600.0, 30.0, True), (1200.0, 40.0, True),
                 (1300.0, 40.0, False), (5000.0, 35.0, False),  # off the dock: ignored
                 (9000.0, 35.0, True), (20000.0, 90.0, True)]  # a gap > 30 min: ignored
    rate = learned_charge_rate_per_s(yesterday)
    assert rate is not None and abs(rate - 20.0 / 1200.0) < 1e-9
    assert learned_charge_rate_per_s([(0.0, 50.0, False), (60.0, 51.0, False)]) is None


def test_eta_at_the_first_reading_from_yesterdays_charging() -> None:
    now = DAY + 3600.0
    facts = RecorderFacts(
        battery_percent=50.0, charging=True, battery_samples=[BatterySample(now, 50.0)],
        free_bytes=10**12, clock_checked=True, clock_drift_ms=0.0, offload_complete=True,
        officer_no="0042", learned_charge_rate_per_s=1.0 / 60.0)  # 1 % a minute
    r = evaluate(facts, ReadinessSettings(min_battery_percent=90), 1000)
    assert r.verdict is Verdict.CHARGING and r.eta_s is not None
    assert abs(r.eta_s - 40 * 60.0) < 1.0
