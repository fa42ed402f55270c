"""A central firmware policy change judges every docked recorder at once, through the real
agent and a real broker: the `firmware_not_allowed` fault is raised (and cleared when a
policy allows the firmware again) for recorders already docked, reaching dockctl and MQTT
like any fault, and a recorder mid-offload keeps offloading (the fault is a readiness fact)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec
from tests.e2e.conftest import DOCK_ID
from tests.e2e.harness import Rig, until
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import FirmwareRigFactory
from .fwrig import MODEL
from .test_firmware_mqtt import command
from .test_firmware_readiness import readiness_of

NOT_ALLOWED = "firmware_not_allowed"
OFFICER = OfficerRecord("6401001", "Lu Min", "U06", "Unit 6")
FILES = 3


def fault_events(central: Central, serial: str, kind: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in central.on("events/fault")
            if e and e["payload"]["kind"] == kind and e["payload"]["recorder"] == serial
            and e["payload"]["data"]["code"] == NOT_ALLOWED]


def has_event(central: Central, serial: str, kind: str) -> bool:
    return bool(fault_events(central, serial, kind))


def judged_not_allowed(central: Central, serial: str) -> bool:
    """The recorder's last MQTT state reads NOT_READY for its firmware."""
    return any(st and st.get("docked") and NOT_ALLOWED in {
        r["code"] for r in st["readiness"]["reasons"]}
        and st["firmware_update"]["allowed"] is False
        for st in central.on(f"recorder/{serial}/state"))


async def open_faults(rig: Rig, serial: str) -> list[dict[str, Any]]:
    faults = await rig.dockctl_json("faults", "--recorder", serial)
    return [f for f in faults if f["code"] == NOT_ALLOWED and f["cleared_us"] is None]


def seqs(rig: Rig, serial: str, kind: str) -> list[int]:
    return [int(r["seq"]) for r in rig.ledger(serial) if r["kind"] == kind]


@pytest.mark.skipif(not fuse_available(), reason="needs FUSE (a slow footage read)")
async def test_a_policy_change_judges_docked_recorders_now(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central) -> None:
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID,
                      firmware={"targets": {}})  # no update: only the allowlist matters
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online" for s in central.on("/status")),
                "agent online", agent=rig.agent)
    idle = RecorderSpec("BWC64001", officer=OFFICER, firmware="1.0.0",
                        footage=FootageSpec(count=1, size_bytes=64 * 1024, seed=641))
    # about 10 s per file, however fast the machine: the policy changes mid-offload
    busy = RecorderSpec("BWC64002", officer=OFFICER, firmware="1.0.0",
                        footage=FootageSpec(count=FILES, size_bytes=MIB, seed=642),
                        faults=Faults(read_rate_mb_s=0.1))
    await rig.plug("1", idle)
    await rig.wait_released(idle.serial)
    await rig.plug("2", busy)
    await until(lambda: bool(seqs(rig, busy.serial, "offloaded")), "first file offloaded",
                agent=rig.agent)
    assert await open_faults(rig, idle.serial) == []

    reply = await command(central, "set-firmware-policy", "fw-pc-1",
                          {"model": MODEL, "allowlist": ["1.1"]})
    assert reply["ok"], reply
    for spec in (idle, busy):  # judged now, not at the next docking
        (fault,) = await open_faults(rig, spec.serial)
        assert "1.0.0" in fault["reason"], fault
        serial = spec.serial
        await central.wait_for(partial(has_event, central, serial, "fault"))
        row = await readiness_of(rig, serial)
        assert NOT_ALLOWED in {r["code"] for r in row["reasons"]}, row
        await central.wait_for(partial(judged_not_allowed, central, serial))
    # raised while the busy recorder was still offloading, and the offload went on to the end
    (raised,) = [int(r["seq"]) for r in rig.ledger(busy.serial) if r["kind"] == "fault"
                 and NOT_ALLOWED in r["data"]]
    await rig.wait_released(busy.serial)
    offloaded = seqs(rig, busy.serial, "offloaded")
    assert len(offloaded) == FILES and min(offloaded) < raised < max(offloaded), (
        raised, offloaded)
    bay = await rig.dockctl_json("status")
    (state,) = [b["state"] for b in bay["bays"] if b.get("serial") == busy.serial]
    assert state == "released" and len(await rig.astored(busy.serial)) == FILES

    # another policy that still refuses 1.0.0 leaves the one open fault as it is
    reply = await command(central, "set-firmware-policy", "fw-pc-1b",
                          {"model": MODEL, "allowlist": ["1.2"]})
    assert reply["ok"], reply
    for spec in (idle, busy):
        assert len(await open_faults(rig, spec.serial)) == 1
        assert sum(r["kind"] == "fault" and NOT_ALLOWED in r["data"]
                   for r in rig.ledger(spec.serial)) == 1

    # a policy allowing the firmware again clears the fault of every docked recorder
    reply = await command(central, "set-firmware-policy", "fw-pc-2",
                          {"model": MODEL, "allowlist": ["1.0", "1.1"]})
    assert reply["ok"], reply
    for spec in (idle, busy):
        assert await open_faults(rig, spec.serial) == []
        await central.wait_for(partial(has_event, central, spec.serial, "fault_cleared"))
        assert (await readiness_of(rig, spec.serial))["verdict"] == "READY"
    assert len(fault_events(central, idle.serial, "fault")) == 1  # raised once, not repeated
    assert central.invalid == [], central.invalid
    assert rig.agent.terminate() == 0


async def test_a_config_change_judges_docked_recorders_at_restart(
        make_fw_rig: FirmwareRigFactory) -> None:
    """The config is read at start: a restart with a new `allowed_firmware` judges the
    recorders still in their bays by it (the fault raised, and cleared again)."""
    rig = make_fw_rig(firmware={"targets": {}})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    spec = RecorderSpec("BWC64011", officer=OFFICER, firmware="1.0.0",
                        footage=FootageSpec(count=1, size_bytes=64 * 1024, seed=643))
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)
    assert await open_faults(rig, spec.serial) == []
    for sessions, allowed in ((2, ["1.1"]), (3, [])):  # refuses 1.0.0, then allows any
        assert rig.agent.terminate() == 0
        rig.readiness = {"allowed_firmware": allowed}
        rig.write_config()
        rig.start_agent()
        await rig.wait_agent_up()
        await rig.wait_released(spec.serial, sessions=sessions)
        faults = await open_faults(rig, spec.serial)
        assert len(faults) == (1 if allowed else 0), faults
        verdict = (await readiness_of(rig, spec.serial))["verdict"]
        assert (verdict == "READY") is not allowed, verdict
    assert rig.agent.terminate() == 0


def update_field(central: Central, serial: str) -> dict[str, Any] | None:
    """The `firmware_update` field of the recorder's last MQTT state."""
    states = [s for s in central.on(f"recorder/{serial}/state") if s and s.get("docked")]
    return states[-1].get("firmware_update") if states else None


async def firmware_row(rig: Rig, serial: str) -> dict[str, Any]:
    report = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in report["recorders"] if r["serial"] == serial]
    return dict(row)


async def test_a_policy_change_decides_the_firmware_update_again(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central) -> None:
    """The `firmware_update` decision of a docked recorder (state and reason) is made
    again by the one firmware rule when the central policy changes: no reason of the old
    policy stays on show until the next docking, on MQTT or in dockctl."""
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID)  # target 1.1.0
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online" for s in central.on("/status")),
                "agent online", agent=rig.agent)
    spec = RecorderSpec("BWC64021", officer=OFFICER, firmware="1.0.0",
                        footage=FootageSpec(count=1, size_bytes=64 * 1024, seed=644))
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)
    serial = spec.serial

    def field_is(state: str, reason: str) -> bool:
        field = update_field(central, serial)
        return field is not None and field["state"] == state and reason in str(field["reason"])

    await central.wait_for(partial(field_is, "blocked", "no staged package of 1.1.0"))
    row = await firmware_row(rig, serial)
    assert row["state"] == "blocked" and "no staged package" in row["reason"], row

    steps: list[tuple[dict[str, Any], str, str]] = [
        ({"model": MODEL, "target": "1.2", "allowlist": ["1.0"]}, "blocked",
         "target 1.2 is not allowed"),
        ({"model": MODEL, "target": "1.0.0"}, "current", "runs the target version 1.0.0"),
        ({"model": MODEL, "target": None, "allowlist": None}, "blocked",
         "no staged package of 1.1.0"),  # back to the config's target
    ]
    for n, (args, state, reason) in enumerate(steps):
        reply = await command(central, "set-firmware-policy", f"fw-pd-{n}", args)
        assert reply["ok"], reply
        await central.wait_for(partial(field_is, state, reason))
        row = await firmware_row(rig, serial)
        assert row["state"] == state and reason in row["reason"], (args, row)
    assert len(rig.ledger(serial)) and central.invalid == [], central.invalid
    assert rig.agent.terminate() == 0


async def test_a_central_policy_with_a_malformed_version_is_refused_and_the_old_kept(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central) -> None:
    """A central allowlist or target that is not a dotted decimal version is refused with
    a reply naming it (escaped); the policy in force stays as it was and nothing is
    ledgered as set."""
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID,
                      firmware={"targets": {}})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online" for s in central.on("/status")),
                "agent online", agent=rig.agent)
    reply = await command(central, "set-firmware-policy", "fw-ok", {
        "model": MODEL, "allowlist": ["1.0.0", "1.1"]})
    assert reply["ok"], reply
    before = (await rig.dockctl_json("firmware", "status"))["policies"]
    bad = ["1.2.x", "", "01.2", " 1.2", "1.2\n", "1.\x012", "1.2.3.4.5", "1.2 "]
    for n, version in enumerate(bad):
        for args in ({"model": MODEL, "allowlist": ["1.0.0", version]},
                     {"model": MODEL, "target": version}):
            field = "allowlist" if "allowlist" in args else "target"
            reply = await command(central, "set-firmware-policy", f"fw-bad-{n}-{field}", args)
            assert not reply["ok"], (args, reply)
            error = reply["error"]
            assert error["code"] in ("invalid-args", "rejected"), reply
            assert "\x01" not in error["message"], reply
            assert f"args/{field}" in error["message"] or field in error["message"], reply
            assert repr(version) in error["message"], reply
    after = await rig.dockctl_json("firmware", "status")
    assert after["policies"] == before, (before, after["policies"])
    assert sum(r["kind"] == "firmware_policy_set" for r in rig.ledger()) == 1
    assert rig.agent.terminate() == 0
