"""Rules the regulations set, seen from outside the agent: footage offloaded after the
storage deadline is flagged late (000 §13), and a dock whose own clock is not synchronised
never sets a recorder's clock (004 §10) but says so."""

from __future__ import annotations

import json
import time

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec

from .conftest import RigFactory
from .harness import check_stored_exactly, expected, render_toml

OFFICER = OfficerRecord("6001001", "Tang Hui", "U06", "Unit 6")
HOUR_MS = 3_600_000


async def test_late_offload_is_flagged(make_rig: RigFactory) -> None:
    rig = make_rig(None)  # deadline: 24 hours
    now_ms = int(time.time() * 1000)
    # Two recordings made three days ago, one made an hour ago.
    old = RecorderSpec("BWC60001", officer=OFFICER, footage=FootageSpec(
        count=2, size_bytes=1 * MIB, seed=61, start_ms=now_ms - 72 * HOUR_MS))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", old)
    await rig.wait_released(old.serial)
    check_stored_exactly(rig, old, await expected(old))
    offloaded = [json.loads(r["data"]) for r in rig.ledger(old.serial)
                 if r["kind"] == "offloaded"]
    assert [d["late"] for d in offloaded] == [True, True]
    assert all(d["late_by_s"] > 40 * 3600 for d in offloaded), offloaded
    rows = rig.query("SELECT late FROM evidence_files WHERE recorder_serial = ?", (old.serial,))
    assert [r[0] for r in rows] == [1, 1]
    status = await rig.dockctl_json("status")
    assert status["bays"][0]["offload_result"]["late"] == 2

    fresh = RecorderSpec("BWC60002", officer=OFFICER, footage=FootageSpec(
        count=1, size_bytes=1 * MIB, seed=62, start_ms=now_ms - HOUR_MS))
    await rig.plug("2", fresh)
    await rig.wait_released(fresh.serial)
    (d,) = [json.loads(r["data"]) for r in rig.ledger(fresh.serial) if r["kind"] == "offloaded"]
    assert d["late"] is False


async def test_unsynchronised_dock_never_sets_clocks(make_rig: RigFactory) -> None:
    rig = make_rig(None)
    sections = rig.sections()
    sections["clock"]["assume_synchronised"] = False
    rig.config.write_text(render_toml(sections))
    spec = RecorderSpec("BWC60003", officer=OFFICER, clock_offset_s=-90.0,
                        footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=63))
    await rig.start_dock()
    rec = await rig.plug("1", spec)
    rig.start_agent()
    await rig.wait_released(spec.serial)
    kinds = [r["kind"] for r in rig.ledger(spec.serial)]
    assert "clock_set" not in kinds and "clock_checked" in kinds
    (checked,) = [json.loads(r["data"]) for r in rig.ledger(spec.serial)
                  if r["kind"] == "clock_checked"]
    assert checked["action"] == "refuse_unsynchronised" and checked["drift_before_ms"] < -80_000
    # the recorder's clock was left alone
    assert rec.state.clock_sets == 0
    codes = {f["code"] for f in await rig.dockctl_json("faults", "--recorder", spec.serial)}
    assert "dock_clock_unsynchronised" in codes, codes
    report = await rig.dockctl_json("readiness", expect=(1,))
    (row,) = report["recorders"]
    assert row["verdict"] == "NOT_READY"
    assert "clock_drift" in {r["code"] for r in row["reasons"]}
    # the dock's own health reports it too
    await rig.wait_ledger(lambda rows: any(
        r["kind"] == "fault" and r["recorder"] is None and "unsynchronised" in r["data"]
        for r in rows), "dock health fault")
