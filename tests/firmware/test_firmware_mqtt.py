"""Fleet control of firmware over a real broker (TLS, ACL): a central allowlist makes a
recorder outside it NOT_READY with a firmware_not_allowed fault; a package on the dock's
share is staged by name and becomes the model's target; the recorder is updated and its
state on MQTT follows (firmware_update field, custody events)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import FootageSpec, RecorderSpec
from tests.e2e.conftest import DOCK_ID
from tests.e2e.harness import until
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import FirmwareRigFactory
from .fwrig import MODEL, package, wait_kind

PREFIX = f"dock/v1/{DOCK_ID}/"


async def command(central: Central, name: str, cmd_id: str, args: dict[str, Any]) -> Any:
    await central.command(DOCK_ID, name, {"id": cmd_id, "args": args})

    def replies() -> list[Any]:
        return [b for b in central.on(f"/reply/{name}") if b and b.get("id") == cmd_id]

    await central.wait_for(lambda: bool(replies()), timeout=60)
    return replies()[-1]


async def test_central_policy_readiness_staging_and_update(
        make_fw_rig: FirmwareRigFactory, broker: Broker, central: Central,
        tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    rig = make_fw_rig(mqtt=broker.settings(DOCK_ID), dock_id=DOCK_ID,
                      firmware={"targets": {}, "import_dirs": [share]})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s.get("state") == "online" for s in central.on("/status")),
                "agent online", agent=rig.agent)
    reply = await command(central, "set-firmware-policy", "fw-1", {
        "model": MODEL, "allowlist": ["1.1.0"]})
    assert reply["ok"], reply
    spec = RecorderSpec("BWC62001", officer=OfficerRecord("6201001", "Qian Yu", "U06", "U6"),
                        firmware="1.0.0", footage=FootageSpec(count=1, size_bytes=65536, seed=6))
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)

    async def not_allowed() -> bool:
        report = await rig.dockctl_json("readiness", expect=(0, 1))
        return any(r["serial"] == spec.serial and r["verdict"] == "NOT_READY" and
                   "firmware_not_allowed" in {x["code"] for x in r["reasons"]}
                   for r in report["recorders"])

    await until(not_allowed, "NOT_READY: firmware not allowed", agent=rig.agent)
    faults = await rig.dockctl_json("faults", "--recorder", spec.serial)
    assert any(f["code"] == "firmware_not_allowed" and f["cleared_us"] is None for f in faults)
    states = central.on(f"recorder/{spec.serial}/state")
    await central.wait_for(lambda: any(
        s and (s.get("firmware_update") or {}).get("allowed") is False
        for s in central.on(f"recorder/{spec.serial}/state")))

    # the central side stages the package on the dock's share and makes it the target
    package(share, 512 * 1024, name="dsj-1.1.0.dfw")
    reply = await command(central, "stage-firmware", "fw-2", {"file": "dsj-1.1.0.dfw"})
    assert reply["ok"] and reply["result"]["version"] == "1.1.0", reply
    reply = await command(central, "set-firmware-policy", "fw-3", {
        "model": MODEL, "package": reply["result"]["blake3"], "allowlist": ["1.1.0"]})
    assert reply["ok"] and reply["result"]["target"] == "1.1.0", reply
    await rig.unplug("1")  # the next docking updates it
    await rig.plug("1", spec)
    await wait_kind(rig, "firmware_completed", spec.serial)
    await rig.wait_released(spec.serial, sessions=3)
    await central.wait_for(lambda: any(
        s and (s.get("firmware_update") or {}).get("state") == "current"
        and s["identity"]["firmware"] == "1.1.0"
        for s in central.on(f"recorder/{spec.serial}/state")))
    kinds = {e["payload"]["kind"] for e in central.on("events/custody")}
    assert {"firmware_policy_set", "firmware_staged", "firmware_started",
            "firmware_completed"} <= kinds, kinds
    assert central.invalid == [], central.invalid
    assert states  # the state was published all along
    assert rig.agent.terminate() == 0
