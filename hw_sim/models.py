"""Pure models of a recorder's clock and battery; the caller passes the true time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeviceClock:
    """A free-running clock: an offset from true time and a rate error (ppm)."""

    anchor_true_s: float  # true UTC (s) at the anchor
    anchor_device_s: float  # device time (s) at the anchor
    drift_ppm: float = 0.0

    @classmethod
    def starting(cls, true_now_s: float, offset_s: float, drift_ppm: float) -> DeviceClock:
        return cls(true_now_s, true_now_s + offset_s, drift_ppm)

    def device_s(self, true_now_s: float) -> float:
        return self.anchor_device_s + (true_now_s - self.anchor_true_s) * (
            1.0 + self.drift_ppm * 1e-6
        )

    def now_ms(self, true_now_s: float) -> int:
        return round(self.device_s(true_now_s) * 1000)

    def set_ms(self, utc_ms: int, true_now_s: float) -> None:
        """Setting the time re-anchors the clock; the rate error remains."""
        self.anchor_true_s = true_now_s
        self.anchor_device_s = utc_ms / 1000


@dataclass(frozen=True, slots=True)
class BatteryReading:
    percent: int
    millivolts: int
    charging: bool
    temperature_c: float
    cycle_count: int
    health_percent: int


@dataclass
class BatteryModel:
    """Charges linearly while docked; a failing battery neither charges nor holds health."""

    start_percent: float
    start_s: float  # true time the recorder was docked
    charge_percent_per_min: float = 1.0
    cycles: int = 120
    failing: bool = False

    def reading(self, true_now_s: float) -> BatteryReading:
        minutes = max(0.0, true_now_s - self.start_s) / 60.0
        if self.failing:
            pct = max(0.0, self.start_percent - 0.5 * minutes)  # drains even on the charger
            health, temp, charging = 38, 52.5, False
        else:
            pct = min(100.0, self.start_percent + self.charge_percent_per_min * minutes)
            health, temp, charging = max(50, 100 - self.cycles // 25), 31.0, pct < 100.0
        percent = int(pct)
        return BatteryReading(
            percent=percent,
            millivolts=3400 + 8 * percent,
            charging=charging,
            temperature_c=temp,
            cycle_count=self.cycles,
            health_percent=health,
        )
