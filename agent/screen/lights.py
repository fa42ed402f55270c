"""Bay lights: one light per bay, driven over GPIO with gpiozero (off by default).

The pattern is pure code from the board (`pattern_of`); `BayLights` only switches LEDs
when a bay's pattern changes. Readable from across the room:

- off: no recorder in the bay
- steady: READY and footage safe — take it
- slow blink: checking, copying or updating firmware — do not remove
- short flashes: charging (footage safe, battery not yet enough)
- fast blink: NOT READY, a failed session or footage left behind — look at the screen
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.screen.board import Bay


class Pattern(enum.Enum):
    OFF = "off"
    STEADY = "steady"
    BUSY = "busy"
    CHARGING = "charging"
    ATTENTION = "attention"


# (on seconds, off seconds) of each blinking pattern
BLINK: dict[Pattern, tuple[float, float]] = {
    Pattern.BUSY: (1.0, 1.0),
    Pattern.CHARGING: (0.3, 2.7),
    Pattern.ATTENTION: (0.15, 0.15),
}


def pattern_of(bay: Bay | None) -> Pattern:
    if bay is None:
        return Pattern.OFF
    if bay.phase in ("checking", "offloading", "updating"):
        return Pattern.BUSY
    if bay.phase != "safe" or bay.verdict == "NOT_READY":
        return Pattern.ATTENTION
    return Pattern.STEADY if bay.verdict == "READY" else Pattern.CHARGING


class Led(Protocol):
    def on(self) -> None: ...
    def off(self) -> None: ...
    def blink(self, on_time: float, off_time: float) -> None: ...
    def close(self) -> None: ...


class LightsError(Exception):
    """The bay lights cannot be driven as configured."""


class BayLights:
    def __init__(self, leds: Mapping[str, Led]) -> None:
        self.leds = dict(leds)
        self.shown: dict[str, Pattern] = {}

    @classmethod
    def open(cls, pins: Mapping[str, int], pin_factory: Any = None) -> BayLights:
        """gpiozero LEDs on the given BCM pins (`pin_factory`: gpiozero's, e.g. its
        MockFactory in tests; None: the default for this machine)."""
        try:
            from gpiozero import LED
        except ImportError as exc:
            raise LightsError("bay lights need gpiozero (pip install 'dock-agent[lights]')"
                              ) from exc
        leds: dict[str, Led] = {}
        try:
            for bay, pin in pins.items():
                leds[bay] = LED(pin, pin_factory=pin_factory)
        except Exception as exc:  # gpiozero raises many kinds: no GPIO, pin in use, ...
            for led in leds.values():
                led.close()
            raise LightsError(f"cannot drive GPIO pin {pin} for bay {bay}: {exc}") from exc
        return cls(leds)

    def show(self, bays: Sequence[Bay]) -> None:
        by_label = {b.bay: b for b in bays}
        for label, led in self.leds.items():
            pattern = pattern_of(by_label.get(label))
            if self.shown.get(label) == pattern:
                continue
            self.shown[label] = pattern
            if pattern is Pattern.OFF:
                led.off()
            elif pattern is Pattern.STEADY:
                led.on()
            else:
                led.blink(*BLINK[pattern])

    def close(self) -> None:
        for led in self.leds.values():
            led.off()
            led.close()
