"""Dock health readings: evidence disk, CPU temperature, load, memory, uptime, Pi throttling.

Parsing is pure (text in, numbers out) so it is tested on captured file contents; `read()`
is the thin shell that reads /proc and /sys. It does a few small file reads and one
statvfs: cheap, but still run it in a worker thread from the event loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

THERMAL = Path("/sys/class/thermal")
# Raspberry Pi firmware exposes the throttling word here on Raspberry Pi OS kernels.
PI_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

_THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}


@dataclass(frozen=True)
class SystemReadings:
    store_total_bytes: int
    store_free_bytes: int
    cpu_temp_c: float | None
    load: tuple[float, float, float]
    mem_total_bytes: int | None
    mem_available_bytes: int | None
    uptime_s: float | None
    throttling_now: tuple[str, ...] | None  # None where the platform does not say
    throttling_since_boot: tuple[str, ...] | None

    @property
    def store_free_percent(self) -> float:
        if self.store_total_bytes <= 0:
            return 0.0
        return 100.0 * self.store_free_bytes / self.store_total_bytes


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values.get("MemTotal"), values.get("MemAvailable")


def parse_uptime(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def parse_millicelsius(text: str) -> float | None:
    try:
        return int(text.strip()) / 1000.0
    except ValueError:
        return None


def parse_throttled(text: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Decode the Pi firmware word: low bits are 'now', bits 16.. are 'since boot'."""
    try:
        word = int(text.strip(), 16)
    except ValueError:
        return None
    now = tuple(name for bit, name in _THROTTLE_BITS.items() if word & (1 << bit))
    ever = tuple(name for bit, name in _THROTTLE_BITS.items() if word & (1 << (bit + 16)))
    return now, ever


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def cpu_temperature() -> float | None:
    """The hottest thermal zone that reports a CPU-ish type, else the first zone."""
    best: float | None = None
    try:
        zones = sorted(THERMAL.glob("thermal_zone*"))
    except OSError:
        return None
    for zone in zones:
        raw = _read_text(zone / "temp")
        temp = parse_millicelsius(raw) if raw is not None else None
        if temp is not None and (best is None or temp > best):
            best = temp
    return best


def read(store_dir: Path) -> SystemReadings:
    st = os.statvfs(store_dir)
    mem_text = _read_text(Path("/proc/meminfo"))
    mem_total, mem_avail = parse_meminfo(mem_text) if mem_text else (None, None)
    up_text = _read_text(Path("/proc/uptime"))
    throttled_text = _read_text(PI_THROTTLED)
    throttled = parse_throttled(throttled_text) if throttled_text else None
    return SystemReadings(
        store_total_bytes=st.f_blocks * st.f_frsize,
        store_free_bytes=st.f_bavail * st.f_frsize,
        cpu_temp_c=cpu_temperature(),
        load=os.getloadavg(),
        mem_total_bytes=mem_total,
        mem_available_bytes=mem_avail,
        uptime_s=parse_uptime(up_text) if up_text else None,
        throttling_now=throttled[0] if throttled else None,
        throttling_since_boot=throttled[1] if throttled else None,
    )
