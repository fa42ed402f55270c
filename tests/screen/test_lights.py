"""Bay lights over gpiozero, on gpiozero's own mock pins."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from agent.screen.board import build
from agent.screen.lights import BayLights, LightsError, Pattern, pattern_of

from .test_board import entry, status


def test_patterns_follow_the_board() -> None:
    board = build(status(
        entry("1", "R", "READY"),
        entry("2", "C", "CHARGING"),
        entry("3", "N", "NOT_READY"),
        entry("4", "O", "NOT_READY", state="offloading", result={}),
        entry("5", "K", "READY", result={"outcome": "partial", "failed": 1}),
    ), {})
    assert [pattern_of(b) for b in board.bays] == [
        Pattern.STEADY, Pattern.CHARGING, Pattern.ATTENTION, Pattern.BUSY, Pattern.ATTENTION]
    assert pattern_of(None) is Pattern.OFF


def test_leds_on_mock_pins() -> None:
    factory = MockFactory()
    lights = BayLights.open({"1": 17, "2": 27, "3": 22}, pin_factory=factory)
    try:
        lights.show(build(status(entry("1", "R", "READY"),
                                 entry("3", "N", "NOT_READY")), {}).bays)
        assert factory.pin(17).state is True  # steady
        assert factory.pin(27).state is False  # empty bay
        assert lights.shown == {"1": Pattern.STEADY, "2": Pattern.OFF, "3": Pattern.ATTENTION}
        lights.show(build(status(), {}).bays)  # every recorder taken: all dark
        assert [factory.pin(p).state for p in (17, 27, 22)] == [False, False, False]
    finally:
        lights.close()


def test_pin_in_use_is_a_clear_error() -> None:
    factory = MockFactory()
    lights = BayLights.open({"1": 17}, pin_factory=factory)
    try:
        with pytest.raises(LightsError, match="pin 17 for bay 2"):
            BayLights.open({"2": 17}, pin_factory=factory)
    finally:
        lights.close()
