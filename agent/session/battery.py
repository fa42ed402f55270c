"""Battery health verdict from one battery reading (pure).

Thresholds (documented so the unit can justify a fault record under 000 §12 / 004 §11):
- health below 60 % of design capacity: the pack no longer lasts a shift;
- temperature outside 0..45 °C while docked: Li-ion must not be charged there, and a
  pack that hot on a dock is failing or shorted;
- cell voltage below 3000 mV: deeply discharged, likely damaged;
A reading with no reasons is healthy. Charge level itself is readiness, not a fault.
"""

from __future__ import annotations

from agent.docking_state import BatteryFacts
from agent.session.recorder_link import BatteryLike

MIN_HEALTH_PERCENT = 60
MIN_TEMPERATURE_C = 0.0
MAX_TEMPERATURE_C = 45.0
MIN_MILLIVOLTS = 3000


def battery_problems(b: BatteryLike) -> list[str]:
    """Why this battery is failing, one reason per failed criterion; empty when healthy."""
    reasons: list[str] = []
    if b.health_percent < MIN_HEALTH_PERCENT:
        reasons.append(
            f"battery health {b.health_percent}% is below {MIN_HEALTH_PERCENT}%"
            f" ({b.cycle_count} cycles)"
        )
    if not MIN_TEMPERATURE_C <= b.temperature_c <= MAX_TEMPERATURE_C:
        reasons.append(
            f"battery temperature {b.temperature_c:g} °C is outside"
            f" {MIN_TEMPERATURE_C:g}..{MAX_TEMPERATURE_C:g} °C"
        )
    if b.millivolts < MIN_MILLIVOLTS:
        reasons.append(f"battery voltage {b.millivolts} mV is below {MIN_MILLIVOLTS} mV")
    return reasons


def battery_facts(b: BatteryLike) -> BatteryFacts:
    return BatteryFacts(percent=b.percent, millivolts=b.millivolts, charging=b.charging,
                        temperature_c=b.temperature_c, cycle_count=b.cycle_count,
                        health_percent=b.health_percent)
