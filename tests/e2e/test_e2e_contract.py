"""The dock↔central contract, checked against real traffic.

The real agent (its own process, virtual recorders, a real mosquitto with TLS and ACLs)
goes through a full scenario: docking, clock set, a CHARGING recorder, a failing one with
two faults, a dock health fault raised and cleared, officer assignment over MQTT (to a
docked and to an absent recorder), holds, verify, readiness, rebirth, a gap-repair
resend, bad commands, a pull mid-copy and a replug, a clean stop and a crash. A real
subscriber captures every message. Then:

* every captured message validates against the schema its topic names in the contract
  registry (`agent.mqtt.contract.TOPICS`), and every registered topic was seen;
* every custody kind and fault kind was seen (except the few this scenario cannot produce,
  named below with the reason);
* the examples in docs/mqtt.md have exactly the shape of the captured messages
  (`tests/e2e/contract_docs.py`; DOCK_UPDATE_MQTT_DOCS=1 rewrites them from the capture);
* the fleet view, fed the captured traffic, tracks each open fault separately with its
  reason and closes exactly the cleared one;
* every offload published progress at once and a final summary; after the clean stop the
  retained recorder states say they are stale, and the stop logs no MQTT error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.mqtt import contract
from agent.mqtt.fleet import FleetModel
from agent.mqtt.validation import validate
from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec
from tests.firmware.fwrig import firmware_section, package  # signed packages
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from . import contract_docs
from .checks import all_ledger_delivered
from .conftest import DOCK_ID, RigFactory
from .harness import Rig, render_toml, until

PREFIX = f"dock/v1/{DOCK_ID}/"
NOT_EXERCISED = {
    "device_rejected": "needs a USB device that is not a recorder (udev; the HIL suite)",
    "export_failed": "needs an export target that fails mid-write (tests/e2e/test_e2e_lifecycle)",
    "preserved": "needs two target filesystems (tmpfs mounts; tests/e2e/test_e2e_lifecycle)",
    "purged": "needs the central side's acknowledgement of an upload",
    "checkpoint_policy": "written when the checkpoint interval changes (fixed in this agent)",
    "uploaded": "needs an S3 store ([upload] enabled; tests/upload)",
    "upload_acknowledged": "needs a file uploaded to an S3 store (tests/upload)",
    "entry_list": "needs more problem files on one recorder than a fault names (tests/offload)",
    **{k: "a firmware update of a docked recorder (tests/firmware)" for k in (
        "firmware_started", "firmware_resumed", "firmware_completed", "firmware_failed",
        "firmware_rolled_back")},
}


def officer(no: str, name: str) -> OfficerRecord:
    return OfficerRecord(no, name, "U07", "Inspection 7")


class Traffic:
    """What the central side sent and received, as (topic after the dock id, body)."""

    def __init__(self, central: Central, rig: Rig) -> None:
        self.central = central
        self.rig = rig
        self.sent: list[tuple[str, Any]] = []

    def captured(self) -> list[tuple[str, Any]]:
        got = [(m.topic.removeprefix(PREFIX), m.body) for m in self.central.messages
               if m.topic.startswith(PREFIX)]
        return got + self.sent

    def on(self, topic: str) -> list[Any]:
        return [b for t, b in self.captured() if t == topic]

    async def command(self, name: str, body: Any, *, raw: bytes | None = None,
                      valid: bool = True, document: bool = False) -> Any:
        """Send a command and wait for its reply. `valid` (or `document`: a valid command
        the dock refuses) puts it in the capture the doc examples come from."""
        if valid or document:
            validate(f"command-{name}", body)  # what we document is what we send
            self.sent.append((f"cmd/{name}", body))
        cmd_id = body.get("id") if isinstance(body, dict) else None
        await self.central.command(DOCK_ID, name, body, raw=raw)

        def replies() -> list[Any]:
            return [b for b in self.central.on(f"/reply/{name}") if b and b.get("id") == cmd_id]

        await self.central.wait_for(lambda: bool(replies()), timeout=60)
        return replies()[-1]


async def test_contract_on_real_traffic(make_rig: RigFactory, broker: Broker,
                                        central: Central, tmp_path: Path) -> None:
    pull = fuse_available()
    rig = make_rig(broker.settings(DOCK_ID), bays=5, offload={
        "wipe_after_offload": True, "buffer_mib": 1, "fdatasync_every_mib": 8})
    sections = rig.sections()
    sections["health"]["store_free_warn_percent"] = 100.0  # a dock fault from the start
    sections["access"] = {"approvers": {"U07": ["insp.wang"]}}
    share = tmp_path / "firmware-share"  # a package the central side stages by name
    share.mkdir()
    sections["firmware"] = firmware_section(tmp_path, import_dirs=[share], targets={})
    package(share, 64 * 1024, name="dsj-sim1-1.1.0.dfw")
    rig.config.write_text(render_toml(sections))
    traffic = Traffic(central, rig)

    docs = contract_docs  # the doc examples name these recorders
    a = RecorderSpec(docs.READY_SERIAL, officer=officer("7001001", "Li Wei"),
                     battery_percent=96, footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=71))
    b = RecorderSpec(docs.UNASSIGNED_SERIAL, officer=None, clock_offset_s=12.0,
                     battery_percent=90, footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=72))
    # CHARGING for the whole scenario: 40 % -> 60 % takes 20 minutes at this rate, so the
    # doc example never depends on how fast the machine docks it
    c = RecorderSpec(docs.CHARGING_SERIAL, officer=officer("7001003", "Chen Jie"),
                     battery_percent=40, charge_percent_per_min=1.0,
                     footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=73))
    d = RecorderSpec(docs.FAILING_SERIAL, officer=officer("7001004", "Zhao Lei"),
                     clock_offset_s=30.0, faults=Faults(battery_failing=True, clock_set="error"),
                     footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=74))
    e = RecorderSpec("BWC70005", officer=officer("7001005", "Sun Li"),
                     footage=FootageSpec(sizes=(2 * MIB, 12 * MIB), seed=75),
                     faults=Faults(unplug_at=(1, 9 * MIB)) if pull else Faults())

    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(s and s["state"] == "online" for s in traffic.on("status")),
                "agent online", agent=rig.agent)
    for bay, spec in enumerate((a, b, c, d), start=1):
        await rig.plug(str(bay), spec)
    for spec in (a, b, c, d):
        await rig.wait_released(spec.serial)

    # -- commands, good and bad
    reply = await traffic.command("assign-officer", {"id": "c-assign-1", "args": {
        "serial": b.serial, "officer_no": "7001002", "officer_name": "Zhang Min",
        "unit_no": "U07", "unit_name": "Inspection 7"}})
    assert reply["ok"] and reply["result"]["applied"] is True, reply
    reply = await traffic.command("assign-officer", {"id": "c-assign-2", "args": {
        "serial": "BWC7ABSE", "officer_no": "7001009", "officer_name": "He Jun"}})
    assert reply["ok"] and reply["result"]["pending"] is True, reply
    reply = await traffic.command("set-hold", {"id": "c-hold-1", "args": {
        "hold_id": "case-2026-117", "reason": "complaint 117",
        "scope": {"serial": a.serial, "from": "2020-01-01T00:00:00Z",
                  "to": "2099-01-01T00:00:00+08:00"}}})
    assert reply["ok"] and reply["result"]["files_held"] == 2, reply
    reply = await traffic.command("clear-hold", {"id": "c-clear-1", "args": {
        "hold_id": "case-2026-117", "reason": "case closed"}})
    assert reply["ok"], reply
    assert (await traffic.command("verify", {"id": "c-verify-1", "args": {"deep": True}}))["ok"]
    reply = await traffic.command("readiness", {"id": "c-ready-1"})
    assert {r["serial"] for r in reply["result"]["recorders"]} >= {a.serial, c.serial}
    assert (await traffic.command("rebirth", {"id": "c-rebirth-1"}))["ok"]

    # -- recorder firmware: a package staged from the dock's share, a model's policy
    reply = await traffic.command("stage-firmware", {"id": "c-fw-stage-1", "args": {
        "file": "dsj-sim1-1.1.0.dfw"}})
    assert reply["ok"] and reply["result"]["newly_staged"] is True, reply
    reply = await traffic.command("set-firmware-policy", {"id": "c-fw-policy-1", "args": {
        "model": "DSJ-SIM9", "target": "2.0.0", "allowlist": ["1.9.0", "2.0.0"]}})
    assert reply["ok"] and reply["result"]["target"] == "2.0.0", reply
    bad = await traffic.command("stage-firmware", {"id": "c-fw-stage-2", "args": {
        "file": "absent.dfw"}}, document=True)
    assert bad["error"]["code"] == "rejected" and "absent.dfw" in bad["error"]["message"]

    # -- the evidence lifecycle: tag, a view, an approved export, an audit run
    reply = await traffic.command("tag", {"id": "c-tag-1", "args": {
        "selection": {"recorder": a.serial, "from": "2020-01-01T00:00:00Z"},
        "tagged_by": "sgt.chen", "case_no": "2026-117", "cause": "traffic dispute",
        "labels": ["complaint"]}})
    assert reply["ok"] and reply["result"]["tagged"] == 2, reply
    file_id = str(reply["result"]["file_ids"][0])
    access = ("--requester", "det.liu", "--purpose", "case 2026-117 court bundle",
              "--approver", "insp.wang")
    assert len(await rig.dockctl_json("show", file_id, *access)) == 1
    usb = tmp_path / "export-usb"
    usb.mkdir()
    reply = await traffic.command("export", {"id": "c-export-1", "args": {
        "selection": {"files": [int(file_id)]}, "target": str(usb), "requester": "det.liu",
        "approver": "insp.wang", "purpose": "case 2026-117 court bundle"}})
    assert reply["ok"] and reply["result"]["state"] == "complete", reply
    same = tmp_path / "archive"
    same.mkdir()
    reply = await traffic.command("preserve", {"id": "c-preserve-1", "args": {
        "selection": {"files": [int(file_id)]}, "targets": [str(usb), str(same)],
        "requester": "rec.officer", "approver": "insp.wang",
        "purpose": "long-term preservation", "case_no": "2026-117",
        "case_name": "Wang v. Li"}})
    assert reply["error"]["code"] == "rejected", reply  # one filesystem: not two copies
    reply = await traffic.command("audit", {"id": "c-audit-1", "args": {"run": "slice"}})
    assert reply["ok"] and reply["result"]["run"]["problems"] == [], reply
    bad = await traffic.command("assign-officer", {"id": "c-bad-1", "args": {
        "serial": a.serial}}, valid=False)
    assert bad["error"]["code"] == "invalid-args" and "officer_no" in bad["error"]["message"]
    bad = await traffic.command("verify", {"id": None}, raw=b"{not json", valid=False)
    assert bad["error"]["code"] == "malformed" and bad["id"] is None
    bad = await traffic.command("self-destruct", {"id": "c-bad-3"}, valid=False)
    assert bad["error"]["code"] == "unknown-command"
    # no S3 store here: nothing was uploaded, so an acknowledgement matches nothing
    bad = await traffic.command("ack-upload", {"id": "c-ack-1", "args": {"files": [
        "9f2c4d1a0b7e3f5a6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"]}}, document=True)
    assert bad["error"]["code"] == "rejected" and "no uploaded file" in bad["error"]["message"]
    bad = await traffic.command("resend", {"id": "c-bad-4", "args": {
        "from_seq": 9, "to_seq": 3}}, valid=False)
    assert bad["error"]["code"] == "rejected"

    # -- gap repair: events the broker acknowledged come again, same event_id and seq
    await until(lambda: all_ledger_delivered(rig, central), "ledger delivered", agent=rig.agent)
    await until(lambda: not rig.query("SELECT 1 FROM outbox WHERE seq <= 5"),
                "seq 1-5 acknowledged", agent=rig.agent)
    reply = await traffic.command("resend", {"id": "c-resend-1", "args": {
        "from_seq": 1, "to_seq": 5}})
    assert reply["ok"] and reply["result"]["resent"] == [1, 2, 3, 4, 5], reply
    for seq in range(1, 6):
        ids = [ev["event_id"] for stream in ("custody", "fault", "health")
               for ev in traffic.on(f"events/{stream}") if ev["seq"] == seq]
        assert len(ids) == 2 and ids[0] == ids[1], (seq, ids)

    # -- a recorder pulled in the middle of a copy, then put back; one undocked for good
    await rig.plug("5", e)
    if pull:
        assert rig.dock is not None
        await until(lambda: "5" not in rig.dock.recorders if rig.dock else False,
                    "recorder pulled mid-copy", agent=rig.agent)
        await rig.wait_ledger(lambda rows: any(r["kind"] == "undocked" for r in rows),
                              "pull recorded")
        await rig.plug("5", e)
        await rig.wait_released(e.serial, sessions=2)
    else:
        await rig.wait_released(e.serial)
    await rig.unplug("2")
    await until(lambda: any(s and s["docked"] is False
                            for s in traffic.on(f"recorder/{b.serial}/state")),
                "death of the undocked recorder", agent=rig.agent)
    await until(lambda: bool(traffic.on("events/health")), "a health event", agent=rig.agent)
    await until(lambda: all_ledger_delivered(rig, central), "ledger delivered", agent=rig.agent)

    # -- clean stop: the retained states say they are stale, and nothing logs an error
    assert rig.agent.terminate() == 0
    await until(lambda: any(s and s.get("reason") == "shutdown" for s in traffic.on("status")),
                "offline status", agent=None)
    docked_now = (a, c, d, e)
    for spec in docked_now:
        await until(lambda: bool(traffic.on(f"recorder/{spec.serial}/state"))  # awaited at once
                    and traffic.on(f"recorder/{spec.serial}/state")[-1].get("stale") is True,
                    f"{spec.serial} stale after the stop")
    log = rig.agent.log_text()
    assert "Unspecified error" not in log and "mqtt disconnected:" not in log, log[-3000:]

    # -- second run: the dock fault clears; then a crash leaves the Will
    sections["health"]["store_free_warn_percent"] = 0.0
    rig.config.write_text(render_toml(sections))
    rig.start_agent()
    await rig.wait_ledger(lambda rows: any(r["kind"] == "fault_cleared" for r in rows),
                          "dock fault cleared")
    for spec in (a, c, d):  # still in their bays: docked again by the new run
        await rig.wait_released(spec.serial, sessions=2)
    await rig.wait_released(e.serial, sessions=3 if pull else 2)
    await until(lambda: all_ledger_delivered(rig, central), "ledger delivered", agent=rig.agent)
    rig.agent.kill9()
    await until(lambda: any(s and s.get("reason") == "connection-lost"
                            for s in traffic.on("status")), "the Will")

    check_capture(traffic, rig, pull, tmp_path)


def check_capture(traffic: Traffic, rig: Rig, pull: bool, media: Path) -> None:
    captured = traffic.captured()
    central = traffic.central
    # 1. every message valid against its schema; every registered topic seen
    assert central.invalid == [], central.invalid
    seen = {spec.pattern for spec in contract.TOPICS
            for topic, _ in captured if spec.matches(topic.split("/"))}
    assert seen == {spec.pattern for spec in contract.TOPICS}, (
        {spec.pattern for spec in contract.TOPICS} - seen)
    # 2. every kind
    kinds = {ev["payload"]["kind"] for s in ("custody", "fault")
             for ev in traffic.on(f"events/{s}")}
    assert kinds >= set(contract.CUSTODY_KINDS + contract.FAULT_ENTRY_KINDS) - set(
        NOT_EXERCISED), sorted(set(contract.CUSTODY_KINDS) - kinds)
    assert set(NOT_EXERCISED) <= set(contract.CUSTODY_KINDS)
    ledger = {r["seq"] for r in rig.ledger()}
    got = {ev["payload"]["seq"] for s in ("custody", "fault") for ev in traffic.on(f"events/{s}")}
    assert got == ledger
    # 3. progress at once and a final summary for every offload
    for serial in ("BWC70001", "BWC70002", "BWC70003", "BWC70004", "BWC70005"):
        phases = [p["phase"] for p in traffic.on(f"recorder/{serial}/progress")]
        assert "copying" in phases and phases[-1] == "finished", (serial, phases)
        assert phases.index("copying") < phases.index("finished")
    finished = [p for p in traffic.on("recorder/BWC70005/progress") if p["phase"] == "finished"]
    if pull:
        # the pulled offload ended with its own summary, and the replug resumed the pulled
        # file mid-way instead of copying it again
        assert finished[0]["result"]["outcome"] == "interrupted", finished
        assert any(f["result"].get("resumed_bytes", 0) > 0 for f in finished), finished
    # 4. the fleet view on the captured traffic
    model = FleetModel()
    for topic, body in captured:
        if not topic.startswith("cmd/"):
            model.apply(PREFIX + topic, b"" if body is None else json.dumps(body).encode())
    dock = model.snapshot()["docks"][0]
    faults = sorted((f["subject"], f["code"]) for f in dock["open_faults"])
    assert ("BWC70004", "battery_failed") in faults and ("BWC70004", "clock_not_set") in faults
    assert all(f["message"] for f in dock["open_faults"]), dock["open_faults"]
    assert not any(f["code"] == "health" for f in dock["open_faults"]), "cleared fault open"
    assert dock["missing_seqs"] == [] and dock["lost_seqs"] == []
    # 5. the doc's examples are the captured messages' shapes
    # the export targets are per-test directories; the doc shows them where a dock mounts
    check_doc_examples([(t, json.loads(json.dumps(b).replace(str(media), "/media")))
                        for t, b in captured])


def check_doc_examples(captured: list[tuple[str, Any]]) -> None:
    examples = contract_docs.pick_examples(captured)
    missing = {s.name for s in contract_docs.SLOTS} - set(examples)
    assert not missing, f"the scenario produced no message for doc examples {missing}"
    text = contract_docs.DOC.read_text()
    if os.environ.get("DOCK_UPDATE_MQTT_DOCS") == "1":
        text = contract_docs.rewrite(text, examples)
        contract_docs.DOC.write_text(text)
    blocks = contract_docs.doc_blocks(text)
    assert {slot for slot, _, _ in blocks} == {s.name for s in contract_docs.SLOTS}
    problems = []
    for slot, schema, body in blocks:
        validate(schema, body)
        problems += [f"{slot}: {p}" for p in contract_docs.mismatches(body, examples[slot])]
    assert problems == [], ("docs/mqtt.md examples differ from the traffic; regenerate with "
                            "DOCK_UPDATE_MQTT_DOCS=1", problems)


async def test_retained_state_keeps_the_offload_after_later_changes(
        make_rig: RigFactory, broker: Broker, central: Central) -> None:
    """Once the offload has ended, every state of the docking carries its final `offload`
    counters: a later change (here a battery poll every second) replaces the retained state
    without dropping them, so what a birth or the stale state shows never depends on
    whether the battery happened to be read since."""
    rig = make_rig(broker.settings(DOCK_ID), recorder_cfg={"battery_poll_s": 1.0})
    spec = RecorderSpec("BWC70011", officer=officer("7001011", "Ma Lin"),
                        footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=81))
    topic = f"/recorder/{spec.serial}/state"
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)

    def released() -> list[Any]:
        return [s for s in central.on(topic) if s and s.get("state") == "released"]

    await until(lambda: len(released()) >= 3, "states after two battery polls", agent=rig.agent)
    assert rig.agent.terminate() == 0
    await until(lambda: any(s and s.get("stale") for s in central.on(topic)), "stale state")
    for state in [*released(), *[s for s in central.on(topic) if s and s.get("stale")]]:
        assert state.get("offload", {}).get("files_done") == 2, state
    assert central.invalid == [], central.invalid
