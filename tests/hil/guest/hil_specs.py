"""Recorder specs shared by the host (builds the FAT image) and the guest (serves the
firmware): both must derive the very same footage from the same few parameters."""

from __future__ import annotations

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import FootageSpec, RecorderSpec

START_MS = 1_795_000_000_000  # fixed, so host and guest generate identical footage
MIB = 1 << 20
FLEET_SECRET = b"hil fleet secret: dock-agent hardware-in-the-loop tests"
RECORDER_VID_PID = ("1d6b", "0104")
STICK_VID_PID = ("0781", "5567")  # a common USB flash drive: not a recorder


def recorder_spec(serial: str, sizes: list[int], *, seed: int = 1,
                  clock_offset_s: float = -42.5) -> RecorderSpec:
    return RecorderSpec(
        serial=serial,
        officer=OfficerRecord("1001001", "Li Wei", "U01", "Unit One"),
        footage=FootageSpec(sizes=tuple(sizes), seed=seed, start_ms=START_MS),
        clock_offset_s=clock_offset_s,
        battery_percent=97,
    )
