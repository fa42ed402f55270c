"""Battery fault thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.session.battery import battery_facts, battery_problems


@dataclass(frozen=True)
class Reading:
    percent: int = 80
    millivolts: int = 3900
    charging: bool = True
    temperature_c: float = 25.0
    cycle_count: int = 100
    health_percent: int = 95


def test_healthy_battery_has_no_problems() -> None:
    assert battery_problems(Reading()) == []
    assert battery_facts(Reading()).health_percent == 95


@pytest.mark.parametrize(
    ("reading", "needle"),
    [
        (Reading(health_percent=59), "health 59%"),
        (Reading(temperature_c=45.5), "temperature 45.5"),
        (Reading(temperature_c=-1), "temperature -1"),
        (Reading(millivolts=2999), "voltage 2999"),
    ],
)
def test_each_failed_criterion_is_named(reading: Reading, needle: str) -> None:
    problems = battery_problems(reading)
    assert len(problems) == 1 and needle in problems[0]


def test_edges_are_healthy_and_all_failures_reported() -> None:
    assert battery_problems(Reading(health_percent=60, temperature_c=45.0,
                                    millivolts=3000)) == []
    assert battery_problems(Reading(temperature_c=0.0)) == []
    assert len(battery_problems(Reading(health_percent=10, temperature_c=70,
                                        millivolts=2500))) == 3
