"""Firmware and readiness through the real agent, its control socket and a real broker: a
recorder whose firmware is being written never reads as READY (dockctl, the MQTT state, the
dock screen's board and bay light), and one rule says which firmware is allowed, whether
the allowlist comes from the config or from the central service."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.screen import board, lights
from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import FootageSpec, RecorderSpec
from tests.e2e.conftest import DOCK_ID
from tests.e2e.harness import Rig, render_toml, until
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import FirmwareRigFactory
from .fwrig import MODEL, package, wait_bytes, wait_kind
from .test_firmware_mqtt import command

OFFICER = OfficerRecord("6301001", "Tang Hui", "U06", "Unit 6")
UPDATING = "firmware_updating"


def recorder(serial: str, firmware: str, *, seed: int, link: int = 1_000_000) -> RecorderSpec:
    return RecorderSpec(serial, officer=OFFICER, firmware=firmware, battery_percent=95,
                        footage=FootageSpec(count=1, size_bytes=128 * 1024, seed=seed),
                        link_bytes_per_s=link, boot_delay_s=0.5)


async def readiness_of(rig: Rig, serial: str) -> dict[str, Any]:
    report = await rig.dockctl_json("readiness", expect=(0, 1))
    (row,) = [r for r in report["recorders"] if r["serial"] == serial]
    return dict(row)


async def bay_of(rig: Rig, serial: str) -> dict[str, Any]:
    status = await rig.dockctl_json("status")
    (bay,) = [b for b in status["bays"] if b.get("serial") == serial]
    return dict(bay)


def last_state(central: Central, serial: str) -> dict[str, Any] | None:
    states = [s for s in central.on(f"recorder/{serial}/state") if s and s.get("docked")]
    return states[-1] if states else None


async def test_a_recorder_being_updated_never_reads_ready(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central,
        tmp_path: Path) -> None:
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID)
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    code, _, err = await rig.dockctl("firmware", "add", str(package(tmp_path, 4 << 20)))
    assert code == 0, err
    # a slow link: the 4 MiB transfer takes about 16 s, however fast the machine
    spec = recorder("BWC63001", "1.0.0", seed=631, link=250_000)
    await rig.plug("1", spec)
    await wait_bytes(rig, spec.serial, 1)

    # mid-transfer: the session is `released` (footage safe), but nothing says "take it"
    row = await readiness_of(rig, spec.serial)
    assert row["verdict"] == "NOT_READY", row
    assert row["reasons"][0] == {"code": UPDATING,
                                 "message": "firmware update in progress — do not unplug"}, row
    bay = await bay_of(rig, spec.serial)
    assert bay["state"] == "released" and bay["firmware_update"]["state"] in (
        "updating", "transferring"), bay
    shown = board.build(await rig.dockctl_json("status"), {})
    (card,) = [b for b in shown.bays if b.serial == spec.serial]
    assert (card.phase, card.verdict) == ("updating", "NOT_READY"), card
    assert lights.pattern_of(card) is lights.Pattern.BUSY
    await central.wait_for(lambda: any(
        s and s.get("state") == "released" and s["readiness"]["verdict"] == "NOT_READY"
        and UPDATING in {r["code"] for r in s["readiness"]["reasons"]}
        for s in central.on(f"recorder/{spec.serial}/state")), timeout=120)
    assert not any(
        s and s.get("docked") and s["readiness"]["verdict"] == "READY"
        and (s.get("firmware_update") or {}).get("state") in ("updating", "transferring")
        for s in central.on(f"recorder/{spec.serial}/state")), "READY while updating"

    # done: the recorder comes back on the new version, READY again
    await wait_kind(rig, "firmware_completed", spec.serial)
    await rig.wait_released(spec.serial, sessions=2)
    row = await readiness_of(rig, spec.serial)
    assert row["verdict"] == "READY", row
    assert central.invalid == [], central.invalid
    assert rig.agent.terminate() == 0


async def test_a_refused_update_no_longer_reads_as_updating(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = make_fw_rig()
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    code, _, err = await rig.dockctl("firmware", "add", str(package(tmp_path, 256 * 1024)))
    assert code == 0, err
    # the recorder trusts no key the package is signed with: it refuses at begin
    spec = replace(recorder("BWC63002", "1.0.0", seed=632), firmware_keys=("ab" * 32,))
    await rig.plug("1", spec)
    await wait_kind(rig, "firmware_failed", spec.serial)

    async def settled() -> bool:
        return bool((await bay_of(rig, spec.serial))["firmware_update"]["state"] == "blocked")

    await until(settled, "the failed update settled", agent=rig.agent)
    bay = await bay_of(rig, spec.serial)
    assert "failed" in bay["firmware_update"]["reason"], bay
    row = await readiness_of(rig, spec.serial)
    assert UPDATING not in {r["code"] for r in row["reasons"]}, row
    assert rig.agent.terminate() == 0


@pytest.mark.parametrize("source", ["config", "central"])
async def test_config_and_central_allowlists_judge_alike(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central,
        source: str) -> None:
    """The identify-time fault, readiness, the `firmware_update` field and its MQTT state
    give one answer, from a config allowlist or a central one: 1.1.0 is on a list naming
    "1.1" (dotted decimals, 1.1 is 1.1.0), 1.0.0 is not."""
    allowlist = ["1.1", "1.2"]
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID,
                      firmware={"targets": {}})
    if source == "config":
        sections = rig.sections()
        sections["readiness"] = {"firmware_allowlist": {MODEL: allowlist}}
        rig.config.write_text(render_toml(sections))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online" for s in central.on("/status")),
                "agent online", agent=rig.agent)
    if source == "central":
        reply = await command(central, "set-firmware-policy", "fw-al-1",
                              {"model": MODEL, "allowlist": allowlist})
        assert reply["ok"], reply
    good, bad = recorder("BWC63011", "1.1.0", seed=633), recorder("BWC63012", "1.0.0", seed=634)
    await rig.plug("1", good)
    await rig.plug("2", bad)
    for spec in (good, bad):
        await rig.wait_released(spec.serial)

    # the fault is raised at identification, before any footage is copied, from either list
    kinds = rig.kinds(bad.serial)
    assert "fault" in kinds and "offloaded" in kinds, kinds
    faults = await rig.dockctl_json("faults", "--recorder", bad.serial)
    (fault,) = [f for f in faults if f["code"] == "firmware_not_allowed"]
    assert fault["cleared_us"] is None and "1.0.0" in fault["reason"], fault
    first_offload = min(r["seq"] for r in rig.ledger(bad.serial) if r["kind"] == "offloaded")
    assert fault["ledger_seq"] < first_offload, (fault, first_offload)
    assert not [f for f in await rig.dockctl_json("faults", "--recorder", good.serial)
                if f["code"] == "firmware_not_allowed"]

    # readiness, the firmware view and the wire agree
    good_row, bad_row = await readiness_of(rig, good.serial), await readiness_of(rig, bad.serial)
    assert good_row["verdict"] == "READY", good_row
    assert bad_row["verdict"] == "NOT_READY" and "firmware_not_allowed" in {
        r["code"] for r in bad_row["reasons"]}, bad_row
    status = await rig.dockctl_json("firmware", "status", expect=(0, 1))  # 1: not allowed
    allowed = {r["serial"]: r["allowed"] for r in status["recorders"]}
    assert allowed == {good.serial: True, bad.serial: False}, status["recorders"]

    def on_the_wire() -> bool:
        g, b = last_state(central, good.serial), last_state(central, bad.serial)
        return (g is not None and b is not None
                and g["firmware_update"]["allowed"] is True
                and g["readiness"]["verdict"] == "READY"
                and b["firmware_update"]["allowed"] is False
                and "firmware_not_allowed" in {r["code"] for r in b["readiness"]["reasons"]})

    await until(on_the_wire, "MQTT states agree", agent=rig.agent)
    assert central.invalid == [], central.invalid
    assert rig.agent.terminate() == 0
