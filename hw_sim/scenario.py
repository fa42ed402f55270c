"""Scenario files: recorders with their specs and faults, and a plug/unplug timeline (TOML).

    [dock]
    bays = ["1", "2", "3", "4"]            # or a count: bays = 4
    repeat_s = 300                           # optional: replay the timeline every 300 s

    [[recorder]]
    serial = "BWC00001"
    battery_percent = 80
    clock_offset_s = -42.5
    officer = { officer_no = "1001001", officer_name = "Li Wei", unit_no = "U01" }
    footage = { count = 5, size_mib = 64, seed = 7 }
    faults = { clock_set = "error", eio_at = [[0, 1048576]] }

    [[timeline]]
    at = 0.0                                 # seconds from the start
    action = "plug"                          # plug | unplug | faults
    bay = "1"
    serial = "BWC00001"                      # plug only
    # action = "faults" replaces the faults of the recorder in the bay:
    # faults = { garble_byte_prob = 0.01 }
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_bridge.errors import FieldError
from firmware_bridge.messages import LogKind, OfficerRecord
from hw_sim.errors import BayError, SpecError
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec

if typing.TYPE_CHECKING:
    from hw_sim.dock import VirtualDock

log = logging.getLogger(__name__)

SCENARIOS_DIR = Path(__file__).parent / "scenarios"  # shipped scenarios, e.g. demo.toml


@dataclass(frozen=True)
class TimelineEvent:
    at_s: float
    action: str  # plug | unplug | faults
    bay: str
    serial: str | None = None
    faults: Faults | None = None  # action "faults": the recorder's new faults


@dataclass(frozen=True)
class Scenario:
    bays: list[str]
    recorders: dict[str, RecorderSpec]
    timeline: list[TimelineEvent]
    repeat_s: float | None = None  # replay the timeline with this period


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _footage(where: str, t: dict[str, Any]) -> FootageSpec:
    t = dict(t)
    _check_keys(where, t, _names(FootageSpec) | {"size_mib"})
    if "size_mib" in t:
        t["size_bytes"] = int(t.pop("size_mib") * MIB)
    if "sizes" in t:
        t["sizes"] = tuple(int(s) for s in t["sizes"])
    return FootageSpec(**t)


def _faults(where: str, t: dict[str, Any]) -> Faults:
    t = dict(t)
    _check_keys(where, t, _names(Faults))
    if "silent_commands" in t:
        t["silent_commands"] = frozenset(t["silent_commands"])
    if "eio_at" in t:
        t["eio_at"] = tuple((int(i), int(off)) for i, off in t["eio_at"])
    if "unplug_at" in t:
        i, off = t["unplug_at"]
        t["unplug_at"] = (int(i), int(off))
    if "growing" in t:
        t["growing"] = tuple(int(i) for i in t["growing"])
    if "listed_times" in t:
        t["listed_times"] = tuple((int(i), int(a), int(b)) for i, a, b in t["listed_times"])
    for key in ("unlistable_dirs", "unstatable"):
        if key in t:
            t[key] = tuple(str(p) for p in t[key])
    return Faults(**t)


def recorder_from_table(where: str, t: dict[str, Any]) -> RecorderSpec:
    t = dict(t)
    _check_keys(where, t, _names(RecorderSpec))
    if "officer" in t:
        o = t["officer"]
        _check_keys(f"{where}.officer", o, {"officer_no", "officer_name", "unit_no", "unit_name"})
        try:
            t["officer"] = OfficerRecord(
                o.get("officer_no", ""), o.get("officer_name", ""),
                o.get("unit_no", ""), o.get("unit_name", ""),
            )
        except FieldError as e:
            raise SpecError(f"{where}.officer: {e}") from None
    if "footage" in t:
        t["footage"] = _footage(f"{where}.footage", t["footage"])
    if "faults" in t:
        t["faults"] = _faults(f"{where}.faults", t["faults"])
    if "field_log" in t:
        t["field_log"] = _field_log(f"{where}.field_log", t["field_log"])
    if "firmware_keys" in t:
        t["firmware_keys"] = tuple(str(k) for k in t["firmware_keys"])
    return RecorderSpec(**t)


def _field_log(where: str, items: Any) -> tuple[tuple[int, str, float], ...]:
    """`[["low_battery", "9%", 3600], ...]`: event kind (LogKind name or number), detail,
    seconds before the plug."""
    out = []
    for i, item in enumerate(items if isinstance(items, list) else [None]):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)
                and isinstance(item[2], int | float)):
            raise SpecError(f"{where}[{i}]: expected [kind, detail, seconds_before_plug]")
        kind = item[0]
        if isinstance(kind, str):
            try:
                kind = LogKind[kind.upper()]
            except KeyError:
                raise SpecError(f"{where}[{i}]: unknown event kind {item[0]!r}") from None
        if not isinstance(kind, int) or not 0 <= kind <= 0xFFFF:
            raise SpecError(f"{where}[{i}]: event kind must be a name or 0..65535")
        out.append((int(kind), item[1], float(item[2])))
    return tuple(out)


def parse_scenario(data: dict[str, Any]) -> Scenario:
    try:
        _check_keys("scenario", data, {"dock", "recorder", "timeline"})
        dock = data.get("dock", {})
        _check_keys("dock", dock, {"bays", "repeat_s"})
        repeat_s = dock.get("repeat_s")
        if repeat_s is not None and float(repeat_s) <= 0:
            raise SpecError("dock.repeat_s must be positive")
        bays_raw = dock.get("bays", 4)
        bays = ([str(i) for i in range(1, int(bays_raw) + 1)] if isinstance(bays_raw, int)
                else [str(b) for b in bays_raw])
        recorders: dict[str, RecorderSpec] = {}
        for n, t in enumerate(data.get("recorder", [])):
            spec = recorder_from_table(f"recorder[{n}]", t)
            if spec.serial in recorders:
                raise SpecError(f"recorder[{n}]: serial {spec.serial} defined twice")
            recorders[spec.serial] = spec
        timeline: list[TimelineEvent] = []
        for n, t in enumerate(data.get("timeline", [])):
            where = f"timeline[{n}]"
            _check_keys(where, t, {"at", "action", "bay", "serial", "faults"})
            action, bay = t.get("action"), str(t.get("bay", ""))
            if action not in ("plug", "unplug", "faults"):
                raise SpecError(f"{where}: action must be plug, unplug or faults, not {action!r}")
            faults = None
            if action == "faults":
                if not isinstance(t.get("faults"), dict):
                    raise SpecError(f"{where}: action faults needs a faults table")
                faults = _faults(f"{where}.faults", t["faults"])
            if bay not in bays:
                raise SpecError(f"{where}: no bay {bay!r}")
            serial = t.get("serial")
            if action == "plug" and serial not in recorders:
                raise SpecError(f"{where}: plug needs the serial of a [[recorder]], got {serial!r}")
            timeline.append(TimelineEvent(float(t.get("at", 0.0)), action, bay, serial, faults))
    except (TypeError, ValueError, AttributeError) as e:
        raise SpecError(f"invalid scenario: {e}") from None
    timeline.sort(key=lambda e: e.at_s)
    if repeat_s is not None and timeline and timeline[-1].at_s >= float(repeat_s):
        raise SpecError("dock.repeat_s must be longer than the last timeline entry")
    return Scenario(bays, recorders, timeline,
                    float(repeat_s) if repeat_s is not None else None)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; SpecError names the offending entry."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SpecError(f"cannot read scenario {path}: {e}") from None
    return parse_scenario(data)


async def run_timeline(dock: VirtualDock, scenario: Scenario, workdir: Path | None = None) -> None:
    """Play the timeline on `dock` (times relative to the call); forever if it repeats.

    A step that cannot happen (plug into an occupied bay, unplug an empty one) is logged
    and skipped: the dock state may have changed underneath (a fault unplugged a recorder).
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while True:
        for ev in scenario.timeline:
            delay = t0 + ev.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                if ev.action == "plug":
                    assert ev.serial is not None
                    await dock.plug(ev.bay, scenario.recorders[ev.serial], workdir)
                elif ev.action == "unplug":
                    await dock.unplug(ev.bay)
                else:
                    assert ev.faults is not None
                    dock.set_faults(ev.bay, ev.faults)
            except (BayError, SpecError) as e:
                log.warning("timeline at %.1f s: %s", ev.at_s, e)
        if scenario.repeat_s is None:
            return
        t0 += scenario.repeat_s
        await asyncio.sleep(max(0.0, t0 - loop.time()))
