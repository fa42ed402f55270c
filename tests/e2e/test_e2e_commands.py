"""Commands from the central service through the broker (TLS, per-identity ACLs) into the
running agent: each is carried out once, recorded in the ledger, and answered; bad ones
are answered with the reason and change nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.mqtt.errors import PublishRejected
from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .checks import all_ledger_delivered, check_ledger_delivered
from .conftest import DOCK_ID, RigFactory
from .harness import Rig, until

ALICE = OfficerRecord("3001001", "Sun Li", "U03", "Unit 3")


def spec(serial: str, seed: int, officer: OfficerRecord | None = ALICE) -> RecorderSpec:
    return RecorderSpec(serial, officer=officer, battery_percent=95,
                        footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=seed))


class Commands:
    def __init__(self, central: Central, rig: Rig) -> None:
        self.central = central
        self.rig = rig

    def replies(self, cmd_id: str | None, name: str) -> list[Any]:
        return [b for b in self.central.on(f"/reply/{name}") if b and b.get("id") == cmd_id]

    async def send(self, name: str, cmd_id: str | None, args: Any = None, *,
                   raw: bytes | None = None, count: int = 1) -> Any:
        body = {"id": cmd_id, "args": args or {}}
        await self.central.command(DOCK_ID, name, body, raw=raw)
        await self.central.wait_for(lambda: len(self.replies(cmd_id, name)) >= count,
                                    timeout=60)
        return self.replies(cmd_id, name)[count - 1]


def ledger_size(rig: Rig) -> int:
    return int(rig.query("SELECT count(*) FROM ledger")[0][0])


async def test_commands_end_to_end(make_rig: RigFactory, broker: Broker,
                                   central: Central) -> None:
    rig = make_rig(broker.settings(DOCK_ID))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(b and b.get("state") == "online" for b in central.on("/status")),
                "agent online", agent=rig.agent)
    cmd = Commands(central, rig)
    r1 = await rig.plug("1", spec("BWC30001", 31))
    await rig.wait_released("BWC30001")

    # -- assign-officer to a docked recorder: written, read back, recorded
    reply = await cmd.send("assign-officer", "c-assign-1", {
        "serial": "BWC30001", "officer_no": "3001002", "officer_name": "Gao Yan",
        "unit_no": "U03", "unit_name": "Unit 3"})
    assert reply["ok"] and reply["result"]["applied"] is True, reply
    assigned = [r for r in rig.ledger("BWC30001") if r["kind"] == "officer_assigned"]
    assert len(assigned) == 1 and assigned[0]["officer"] == "3001002"
    assert json.loads(assigned[0]["data"])["before"]["officer_no"] == "3001001"
    assert r1.state.officer is not None and r1.state.officer.officer_no == "3001002"
    status = await rig.dockctl_json("status")
    assert status["bays"][0]["officer_no"] == "3001002"

    # -- assign-officer to a recorder that is not here: pending, applied at its docking
    reply = await cmd.send("assign-officer", "c-assign-2", {
        "serial": "BWC30002", "officer_no": "3001003", "officer_name": "He Jun"})
    assert reply["ok"] and reply["result"]["applied"] is False and reply["result"]["pending"]
    assert not rig.ledger("BWC30002")
    r2 = await rig.plug("2", spec("BWC30002", 32, officer=None))
    await rig.wait_released("BWC30002")
    kinds = [r["kind"] for r in rig.ledger("BWC30002")]
    # written once its footage was stored: that footage was recorded while unassigned,
    # and stays so in custody; the recorder goes out with the new officer
    assert kinds.index("officer_assigned") > max(
        i for i, k in enumerate(kinds) if k == "offloaded"), kinds
    assert r2.state.officer is not None and r2.state.officer.officer_no == "3001003"
    assert {r["officer"] for r in rig.ledger("BWC30002") if r["kind"] == "offloaded"} == {
        None}

    # -- set-hold by scope (recorder), then by officer; clear-hold releases exactly those
    reply = await cmd.send("set-hold", "c-hold-1", {
        "hold_id": "case-117", "reason": "complaint 117", "scope": {"serial": "BWC30001"}})
    assert reply["ok"] and reply["result"]["files_held"] == 2, reply
    holds = rig.query("SELECT file_id FROM evidence_holds WHERE cleared_us IS NULL")
    ids = {r.id for r in rig.stored("BWC30001")}
    assert {h[0] for h in holds} == ids
    assert sum(r["kind"] == "hold_set" for r in rig.ledger()) == 2
    reply = await cmd.send("set-hold", "c-hold-2", {
        "hold_id": "case-118", "reason": "dispute", "scope": {"serial": "BWC30002"}})
    assert reply["ok"] and reply["result"]["files_held"] == 2, reply
    reply = await cmd.send("clear-hold", "c-clear-1", {"hold_id": "case-117",
                                                       "reason": "case closed"})
    assert reply["ok"] and reply["result"]["files_released"] == 2, reply
    active = rig.query("SELECT file_id FROM evidence_holds WHERE cleared_us IS NULL")
    assert {h[0] for h in active} == {r.id for r in rig.stored("BWC30002")}
    assert sum(r["kind"] == "hold_cleared" for r in rig.ledger()) == 2

    # a hold whose scope matches nothing yet is kept for files offloaded later
    reply = await cmd.send("set-hold", "c-hold-3", {
        "hold_id": "case-119", "reason": "r", "scope": {"serial": "BWC39999"}})
    assert reply["ok"] and reply["result"]["files_held"] == 0, reply
    assert rig.query("SELECT hold_id FROM hold_scopes WHERE cleared_us IS NULL"
                     " AND hold_id = 'case-119'")

    # -- refusals change nothing
    before = ledger_size(rig)
    reply = await cmd.send("clear-hold", "c-clear-2", {"hold_id": "case-117", "reason": "x"})
    assert not reply["ok"] and reply["error"]["code"] == "rejected"
    reply = await cmd.send("assign-officer", "c-assign-3", {"serial": "BWC30001"})
    assert not reply["ok"] and reply["error"]["code"] == "invalid-args"
    assert "officer_no" in reply["error"]["message"]
    reply = await cmd.send("verify", None, raw=b"{not json")
    assert not reply["ok"] and reply["error"]["code"] == "malformed"
    assert "not JSON" in reply["error"]["message"]
    reply = await cmd.send("format-recorder", "c-unknown", {"serial": "BWC30001"})
    assert not reply["ok"] and reply["error"]["code"] == "unknown-command"
    assert "format-recorder" in reply["error"]["message"]
    assert ledger_size(rig) == before
    assert r1.state.officer is not None and r1.state.officer.officer_no == "3001002"

    # -- a repeated command id: the same reply, not run again
    first = cmd.replies("c-hold-2", "set-hold")[0]
    again = await cmd.send("set-hold", "c-hold-2", {
        "hold_id": "case-118", "reason": "dispute", "scope": {"serial": "BWC30002"}},
        count=2)
    assert again == first
    assert ledger_size(rig) == before
    again = await cmd.send("assign-officer", "c-assign-1", {
        "serial": "BWC30001", "officer_no": "3001002"}, count=2)
    assert again == cmd.replies("c-assign-1", "assign-officer")[0]
    assert ledger_size(rig) == before

    # -- verify and readiness
    reply = await cmd.send("verify", "c-verify-1", {"deep": True})
    assert reply["ok"] and reply["result"]["ok"] is True, reply
    assert reply["result"]["files_checked"] == 4 and reply["result"]["deep"] is True
    reply = await cmd.send("readiness", "c-ready-1")
    assert reply["ok"]
    verdicts = {r["serial"]: r["verdict"] for r in reply["result"]["recorders"]}
    assert verdicts == {"BWC30001": "READY", "BWC30002": "READY"}

    # -- MQTT 5 request/response: the reply goes to the given response topic, correlated
    target = f"dock/v1/{DOCK_ID}/reply/central-7"
    await central.command(DOCK_ID, "readiness", {"id": "c-ready-2", "args": {}},
                          response_topic=target, correlation=b"req-7")
    await central.wait_for(lambda: any(m.topic == target for m in central.messages))
    (answer,) = [m for m in central.messages if m.topic == target]
    assert answer.correlation_data == b"req-7" and answer.body["id"] == "c-ready-2"

    # -- rebirth: every retained state is published again
    births = len(central.on("/recorder/BWC30001/state"))
    reply = await cmd.send("rebirth", "c-rebirth-1")
    assert reply["ok"] and reply["result"] == {"republished": True}
    await central.wait_for(lambda: len(central.on("/recorder/BWC30001/state")) > births)

    # -- the ACL: another dock's identity cannot command this dock
    other = await Central(broker.settings("dock-other")).start()
    try:
        with pytest.raises(PublishRejected):
            await other.command(DOCK_ID, "set-hold", {"id": "c-rogue", "args": {
                "hold_id": "rogue", "reason": "x", "scope": {"serial": "BWC30001"}}})
    finally:
        await other.stop()
    assert ledger_size(rig) == before

    # -- retained state follows the officer change; every event reached the central side
    await until(lambda: any(b and (b.get("officer") or {}).get("officer_no") == "3001002"
                            for b in central.on("/recorder/BWC30001/state")),
                "recorder state with the new officer", agent=rig.agent)
    await until(lambda: all_ledger_delivered(rig, central), "ledger delivered", agent=rig.agent)
    check_ledger_delivered(rig, central)
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err
