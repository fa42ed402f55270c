from pathlib import Path

import pytest

from agent.health import system
from agent.health.rules import (
    DAY_S,
    OffloadRate,
    health_issues,
    projected_days_until_full,
)
from agent.health.system import SystemReadings
from agent.settings import HealthSettings

MEMINFO = "MemTotal:        3884108 kB\nMemFree:          123 kB\nMemAvailable:    2000000 kB\n"


def readings(**over: object) -> SystemReadings:
    base: dict[str, object] = dict(
        store_total_bytes=1000, store_free_bytes=500, cpu_temp_c=50.0, load=(0.1, 0.1, 0.1),
        mem_total_bytes=1, mem_available_bytes=1, uptime_s=1.0,
        throttling_now=(), throttling_since_boot=(),
    )
    base.update(over)
    return SystemReadings(**base)  # type: ignore[arg-type]


def test_parse_meminfo_uptime_temperature() -> None:
    assert system.parse_meminfo(MEMINFO) == (3884108 * 1024, 2000000 * 1024)
    assert system.parse_uptime("12345.67 2345.00\n") == pytest.approx(12345.67)
    assert system.parse_uptime("") is None
    assert system.parse_millicelsius("48312\n") == pytest.approx(48.312)
    assert system.parse_millicelsius("garbage") is None


@pytest.mark.parametrize(
    ("word", "now", "ever"),
    [
        ("0x0", (), ()),
        ("0x50005", ("under_voltage", "throttled"), ("under_voltage", "throttled")),
        ("0x50000", (), ("under_voltage", "throttled")),
        ("throttled=0x8", ("soft_temperature_limit",), ()),  # vcgencmd style is not the sysfs one
    ],
)
def test_parse_pi_throttled(word: str, now: tuple[str, ...], ever: tuple[str, ...]) -> None:
    parsed = system.parse_throttled(word)
    if word.startswith("throttled="):
        assert parsed is None
    else:
        assert parsed == (now, ever)


def test_read_on_this_machine(tmp_path: Path) -> None:
    r = system.read(tmp_path)
    assert r.store_total_bytes > 0 and 0 <= r.store_free_percent <= 100
    assert r.mem_total_bytes and r.uptime_s


def test_offload_rate_projection() -> None:
    rate = OffloadRate(window_s=7 * DAY_S)
    rate.observe_start(0)
    assert rate.bytes_per_day(1800) is None  # under an hour: too little to project
    rate.add(3600, 10_000)
    rate.add(DAY_S, 10_000)
    assert rate.bytes_per_day(DAY_S) == pytest.approx(20_000)
    assert projected_days_until_full(100_000, rate.bytes_per_day(DAY_S)) == pytest.approx(5)
    # Events older than the window no longer count.
    assert rate.bytes_per_day(7.5 * DAY_S) == pytest.approx(10_000 / 7)
    assert projected_days_until_full(1, 0.0) is None


def test_health_issues_thresholds() -> None:
    s = HealthSettings(store_free_warn_percent=10, cpu_temp_warn_c=80)
    ok = health_issues(readings(), s, clock_synchronised=True, broker_connected=True,
                       outbox_oldest_age_s=None)
    assert ok == []
    bad = health_issues(
        readings(store_free_bytes=50, cpu_temp_c=85.0, throttling_now=("under_voltage",)),
        s, clock_synchronised=False, broker_connected=False, outbox_oldest_age_s=7 * 3600,
    )
    assert [i.code for i in bad] == [
        "store_space_low", "cpu_hot", "throttled", "dock_clock_unsynchronised",
        "reporting_backlog",
    ]
    # A short outage is not a fault.
    short = health_issues(readings(), s, clock_synchronised=True, broker_connected=False,
                          outbox_oldest_age_s=60)
    assert short == []
