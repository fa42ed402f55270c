"""Fixtures for the device-detection tests: udev property sets of recorders, sticks, hubs.

The JSON files under fixtures/ are hand-built from the properties real devices report
(`udevadm info`), not captured from hardware; the hardware-in-the-loop suite exercises
real udev. `Fixture.plug()` / `.unplug()` turn one into the uevent sequence the kernel and
udev produce: parents before children on add, children first on remove.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord
from agent.settings import AllowedDevice, DeviceSettings

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Fixture:
    usb_devices: list[dict[str, str]]
    children: list[dict[str, str]]

    def parent_of(self, devpath: str) -> dict[str, str] | None:
        best: dict[str, str] | None = None
        for usb in self.usb_devices:
            if devpath.startswith(usb["DEVPATH"] + "/") and (
                best is None or len(usb["DEVPATH"]) > len(best["DEVPATH"])
            ):
                best = usb
        return best

    def child(self, devname: str) -> dict[str, str]:
        return next(c for c in self.children if c["DEVNAME"] == devname)

    def add(self, props: dict[str, str], action: str = "add") -> DeviceRecord:
        props = {**props, "ACTION": action}
        if props.get("DEVTYPE") == "usb_device":
            return DeviceRecord(props, props)
        return DeviceRecord(props, self.parent_of(props["DEVPATH"]))

    def remove(self, props: dict[str, str]) -> DeviceRecord:
        keep = ("SUBSYSTEM", "DEVPATH", "DEVNAME", "DEVTYPE", "MAJOR", "MINOR", "PRODUCT", "TYPE")
        return DeviceRecord({k: props[k] for k in keep if k in props} | {"ACTION": "remove"})

    def plug(self) -> list[DeviceRecord]:
        return [self.add(u) for u in self.usb_devices] + [self.add(c) for c in self.children]

    def unplug(self) -> list[DeviceRecord]:
        return [self.remove(c) for c in reversed(self.children)] + [
            self.remove(u) for u in reversed(self.usb_devices)
        ]


def load(name: str) -> Fixture:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    assert "Hand-built" in data["_note"]
    return Fixture(data["usb_devices"], data["children"])


def feed(tracker: DeviceTracker, records: list[DeviceRecord], now: float) -> list[Any]:
    events: list[Any] = []
    for record in records:
        events += tracker.handle(record, now)
    return events


RECORDERS = [
    AllowedDevice(vid="1d6b", pid="0104", serial_pattern=r"BWC\d{5}"),
    AllowedDevice(vid="0403", pid="6015", serial_pattern=r"BWC\d{5}"),
    AllowedDevice(vid="05E3", pid="0749", serial_pattern=r"BWC\d{5}"),
    AllowedDevice(vid="2e3c", pid="5740", storage_only=True),
]


def settings(**overrides: Any) -> DeviceSettings:
    base: dict[str, Any] = {"allow": RECORDERS, "allow_storage_only": True, "debounce_ms": 1500}
    return DeviceSettings(**(base | overrides))


@pytest.fixture
def tracker() -> DeviceTracker:
    return DeviceTracker(settings())
