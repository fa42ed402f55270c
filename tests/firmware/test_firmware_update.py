"""Firmware updates of docked simulated recorders through the real agent: only after the
footage is offloaded and verified, resumed from the recorder's durable offset after an
unplug or an agent kill -9, rolled back and reported when the new image fails, and never in
the way of another bay's offload."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.fwkeys import public_hex
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec
from tests.e2e.conftest import DOCK_ID
from tests.e2e.harness import Rig, until
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import FirmwareRigFactory
from .fwrig import MODEL, attempt, entries, package, wait_bytes, wait_kind
from .test_firmware_mqtt import command

OFFICER = OfficerRecord("6001001", "Wu Hao", "U06", "Unit 6")
LINK = 1_000_000  # bytes/s: close to a CDC-ACM link, so a transfer can be interrupted


def recorder(serial: str, *, seed: int, faults: Faults | None = None,
             footage: FootageSpec | None = None) -> RecorderSpec:
    return RecorderSpec(serial, officer=OFFICER, firmware="1.0.0",
                        footage=footage or FootageSpec(count=1, size_bytes=256 * 1024,
                                                       seed=seed),
                        faults=faults or Faults(), link_bytes_per_s=LINK, boot_delay_s=0.5)


async def staged_rig(make_fw_rig: FirmwareRigFactory, tmp_path: Path, size: int,
                     **firmware: object) -> Rig:
    rig = make_fw_rig(firmware=dict(firmware))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    code, _, err = await rig.dockctl("firmware", "add", str(package(tmp_path, size)))
    assert code == 0, err
    return rig


async def running_version(rig: Rig, serial: str) -> str:
    status = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in status["recorders"] if r["serial"] == serial]
    return str(row["running"])


async def test_update_after_verified_offload_completes_on_the_new_version(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, 2 * MIB)
    spec = recorder("BWC61001", seed=61)
    await rig.plug("1", spec)
    await wait_kind(rig, "firmware_completed", spec.serial)
    kinds = rig.kinds(spec.serial)
    # the update began only after this docking's footage was stored and verified
    assert kinds.index("firmware_started") > max(
        i for i, k in enumerate(kinds) if k in ("offloaded", "verified"))
    (done,) = entries(rig, "firmware_completed", spec.serial)
    assert (done["from_version"], done["to_version"], done["running_version"]) == (
        "1.0.0", "1.1.0", "1.1.0")
    assert "undocked" in kinds[kinds.index("firmware_started"):]  # it rebooted
    await until(lambda: attempt(rig, spec.serial)["state"] == "completed",  # type: ignore[index]
                "attempt completed", agent=rig.agent)
    await rig.wait_released(spec.serial, sessions=2)
    status = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in status["recorders"] if r["serial"] == spec.serial]
    assert (row["running"], row["state"], row["allowed"]) == ("1.1.0", "current", True)
    assert rig.agent.terminate() == 0


@pytest.mark.skipif(not fuse_available(), reason="needs FUSE (a failing footage read)")
async def test_no_update_while_footage_is_left_on_the_recorder(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, 256 * 1024)
    spec = recorder("BWC61002", seed=62, faults=Faults(eio_at=((0, 1000),)))
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)

    async def waiting() -> bool:
        status = await rig.dockctl_json("firmware", "status")
        rows = [r for r in status["recorders"] if r["serial"] == spec.serial]
        return bool(rows) and rows[0]["state"] == "waiting"

    await until(waiting, "firmware update waiting", agent=rig.agent)
    status = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in status["recorders"] if r["serial"] == spec.serial]
    assert "footage not yet offloaded and verified" in row["reason"]
    assert "firmware_started" not in rig.kinds(spec.serial)
    assert attempt(rig, spec.serial) is None
    assert rig.agent.terminate() == 0


async def test_unplug_at_random_offsets_resumes_and_ends_on_the_new_version(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    size = 6 * MIB
    rig = await staged_rig(make_fw_rig, tmp_path, size)
    spec = recorder("BWC61003", seed=63)
    rng = random.Random(63)
    cuts = sorted(rng.randrange(MIB // 2, size - MIB) for _ in range(2))
    await rig.plug("1", spec)
    for n, cut in enumerate(cuts, start=1):
        await wait_bytes(rig, spec.serial, cut)
        await rig.unplug("1")

        def undocked(rows: list[Any], n: int = n) -> bool:
            return bool(sum(r["kind"] == "undocked" and r["recorder"] == spec.serial
                            for r in rows) >= n)

        await rig.wait_ledger(undocked, f"unplug {n} recorded")
        await rig.plug("1", spec)
        await wait_kind(rig, "firmware_resumed", spec.serial, count=n)
    await wait_kind(rig, "firmware_completed", spec.serial)
    resumed = entries(rig, "firmware_resumed", spec.serial)
    # each resume continued from the recorder's durable offset, never from the start
    assert all(0 < r["offset"] < size for r in resumed), resumed
    assert len(entries(rig, "firmware_started", spec.serial)) == 1
    (done,) = entries(rig, "firmware_completed", spec.serial)
    assert done["running_version"] == "1.1.0" and done["resumes"] == 2
    assert await running_version(rig, spec.serial) in ("1.0.0", "1.1.0")
    await rig.wait_released(spec.serial, sessions=4)
    assert await running_version(rig, spec.serial) == "1.1.0"
    assert rig.agent.terminate() == 0


async def test_agent_kill9_mid_transfer_resumes(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    size = 5 * MIB
    rig = await staged_rig(make_fw_rig, tmp_path, size)
    spec = recorder("BWC61004", seed=64)
    await rig.plug("1", spec)
    await wait_bytes(rig, spec.serial, 2 * MIB)
    rig.agent.kill9()
    before = attempt(rig, spec.serial)
    assert before is not None and before["state"] == "transferring"
    rig.start_agent()  # the recorder is still in its bay: docked anew, offload, resume
    await wait_kind(rig, "firmware_completed", spec.serial)
    (resumed,) = entries(rig, "firmware_resumed", spec.serial)
    assert resumed["offset"] >= before["bytes_done"] > 0, (resumed, before)
    assert resumed["attempt"] == before["id"]
    (done,) = entries(rig, "firmware_completed", spec.serial)
    assert done["running_version"] == "1.1.0"
    assert rig.agent.terminate() == 0


@pytest.mark.parametrize("failure", ["self_test", "no_boot"])
async def test_failing_image_rolls_back_and_is_reported(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path, failure: str) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, MIB)
    spec = recorder("BWC61005", seed=65, faults=Faults(firmware_boot=failure))  # type: ignore[arg-type]
    await rig.plug("1", spec)
    await wait_kind(rig, "firmware_rolled_back", spec.serial)
    (rb,) = entries(rig, "firmware_rolled_back", spec.serial)
    assert rb["running_version"] == "1.0.0" and rb["to_version"] == "1.1.0"
    assert "rolled back to 1.0.0" in rb["reason"]
    faults = await rig.dockctl_json("faults", "--recorder", spec.serial)
    assert any(f["code"] == "firmware_rolled_back" and f["cleared_us"] is None for f in faults)
    await rig.wait_released(spec.serial, sessions=2)
    status = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in status["recorders"] if r["serial"] == spec.serial]
    assert row["state"] == "blocked" and "rolled back" in row["reason"], row
    assert len(entries(rig, "firmware_started", spec.serial)) == 1, "tried the bad image again"
    assert rig.agent.terminate() == 0


async def test_an_update_never_delays_an_offload_in_another_bay(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, 24 * MIB)
    updating = recorder("BWC61006", seed=66)
    await rig.plug("1", updating)
    await wait_bytes(rig, updating.serial, 1)
    other = RecorderSpec("BWC61007", officer=OFFICER, firmware="1.1.0",
                         footage=FootageSpec(count=3, size_bytes=MIB, seed=67))
    await rig.plug("2", other)
    await rig.wait_released(other.serial, timeout=120.0)
    # bay 2 docked, offloaded, verified and released while bay 1's transfer still ran
    a = attempt(rig, updating.serial)
    assert a is not None and a["state"] == "transferring" and a["bytes_done"] < a["size"], a
    assert len(rig.stored(other.serial)) == 3
    assert "firmware_completed" not in rig.kinds(updating.serial)
    assert rig.agent.terminate() == 0


async def test_running_version_below_min_from_is_refused_at_update(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, 256 * 1024)  # min_from 1.0.0
    spec = replace(recorder("BWC61008", seed=68), firmware="0.9.0")
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)

    async def refused() -> bool:
        faults = await rig.dockctl_json("faults", "--recorder", spec.serial)
        return any(f["code"] == "firmware_update_failed" for f in faults)

    await until(refused, "firmware_update_failed fault", agent=rig.agent)
    faults = await rig.dockctl_json("faults", "--recorder", spec.serial)
    (fault,) = [f for f in faults if f["code"] == "firmware_update_failed"]
    assert "needs at least 1.0.0" in fault["reason"] and fault["severity"] == "warning"
    status = await rig.dockctl_json("firmware", "status")
    (row,) = [r for r in status["recorders"] if r["serial"] == spec.serial]
    assert row["state"] == "blocked" and "intermediate version" in row["reason"]
    assert "firmware_started" not in rig.kinds(spec.serial)
    assert rig.agent.terminate() == 0


async def test_a_recorder_refusing_the_signature_fails_the_update_clearly(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = await staged_rig(make_fw_rig, tmp_path, 256 * 1024)
    stranger = public_hex(Ed25519PrivateKey.generate().public_key())
    spec = replace(recorder("BWC61009", seed=69), firmware_keys=(stranger,))
    await rig.plug("1", spec)
    await wait_kind(rig, "firmware_failed", spec.serial)
    (failed,) = entries(rig, "firmware_failed", spec.serial)
    assert "the recorder refused the update" in failed["reason"], failed
    faults = await rig.dockctl_json("faults", "--recorder", spec.serial)
    assert any(f["code"] == "firmware_update_failed" and f["severity"] == "error"
               for f in faults), faults
    assert await running_version(rig, spec.serial) == "1.0.0"
    assert rig.agent.terminate() == 0


@pytest.mark.parametrize(("readiness", "central_target", "installed"), [
    # the flat list forbids the target 1.1.0, set centrally
    ({"allowed_firmware": ["1.0.0"]}, True, False),
    ({"allowed_firmware": ["1.0", "1.1"]}, False, True),  # the flat list allows it
    ({"allowed_firmware": ["1.0.0"],  # the model's own list allows it, and decides
      "firmware_allowlist": {MODEL: ["1.0.0", "1.1.0"]}}, False, True),
], ids=["flat-forbids", "flat-allows", "model-list-allows"])
async def test_a_staged_image_is_installed_only_if_the_firmware_rule_allows_it(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central,
        tmp_path: Path, readiness: dict[str, Any], central_target: bool, installed: bool) -> None:
    """The update decision asks the same rule as readiness: `allowed_firmware` and the
    per-model allowlists alike. A target its own config refuses is refused by the config
    check, so the forbidden target comes from the central service."""
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID, readiness=readiness,
                      firmware={"targets": {}} if central_target else {})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online"
                            for s in central.on("/status")), "agent online",
                agent=rig.agent)
    code, _, err = await rig.dockctl("firmware", "add", str(package(tmp_path, 256 * 1024)))
    assert code == 0, err
    if central_target:  # one the dock's own allowed_firmware forbids: refused, nothing set
        reply = await command(central, "set-firmware-policy", "fw-rule-1",
                              {"model": MODEL, "target": "1.1.0"})
        assert not reply["ok"] and "allowed_firmware" in reply["error"]["message"], reply
        # with an allowlist of its own the central side decides; the flat list no longer
        reply = await command(central, "set-firmware-policy", "fw-rule-2",
                              {"model": MODEL, "target": "1.1.0", "allowlist": ["1.0.0"]})
        assert reply["ok"], reply
    spec = recorder("BWC61101", seed=611)
    await rig.plug("1", spec)
    if installed:
        await wait_kind(rig, "firmware_completed", spec.serial)
        (done,) = entries(rig, "firmware_completed", spec.serial)
        assert done["running_version"] == "1.1.0", done
        assert rig.agent.terminate() == 0
        return
    await rig.wait_released(spec.serial)

    async def settled() -> bool:
        status = await rig.dockctl_json("firmware", "status", expect=(0, 1))
        rows = [r for r in status["recorders"] if r["serial"] == spec.serial]
        return bool(rows) and rows[0]["state"] == "blocked"

    await until(settled, "the update decision", agent=rig.agent)
    status = await rig.dockctl_json("firmware", "status", expect=(0, 1))
    (row,) = [r for r in status["recorders"] if r["serial"] == spec.serial]
    assert "1.1.0 is not allowed" in row["reason"], row
    assert "firmware_started" not in rig.kinds(spec.serial)
    assert attempt(rig, spec.serial) is None
    assert rig.agent.terminate() == 0
