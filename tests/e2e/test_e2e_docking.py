"""A shift change end to end: four recorders dock, their footage is stored bit for bit with
custody, dockctl and MQTT tell the truth about them; an agent restart with the recorders
still docked finds everything already stored; hostile and failing storage is reported,
and only regular files inside the recorder's storage are taken."""

from __future__ import annotations

import json

from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .checks import all_ledger_delivered, check_ledger_delivered, retained_state, status_bodies
from .conftest import RigFactory
from .harness import (
    check_no_orphans,
    check_stored_exactly,
    expected,
    hash_file,
    recorder_files,
    until,
)


def officer(no: str, name: str) -> OfficerRecord:
    return OfficerRecord(officer_no=no, officer_name=name, unit_no="U01",
                         unit_name="Inspection 1")


def shift_specs() -> list[RecorderSpec]:
    return [
        RecorderSpec("BWC10001", officer=officer("1001001", "Li Wei"), battery_percent=96,
                     footage=FootageSpec(count=3, size_bytes=2 * MIB, seed=11)),
        RecorderSpec("BWC10002", officer=officer("1001002", "Zhang Min"), battery_percent=88,
                     clock_offset_s=-42.5, clock_drift_ppm=50.0,
                     footage=FootageSpec(count=2, size_bytes=3 * MIB, seed=12)),
        RecorderSpec("BWC10003", officer=officer("1001003", "Chen Jie"), battery_percent=35,
                     footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=13)),
        RecorderSpec("BWC10004", officer=None, battery_percent=90,
                     footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=14)),
    ]


def custody_kinds(kinds: list[str]) -> list[str]:
    return [k for k in kinds if k not in ("fault", "fault_cleared")]


async def test_shift_change_end_to_end(make_rig: RigFactory, broker: Broker,
                                       central: Central) -> None:
    rig = make_rig(broker.settings("dock-e2e"))
    specs = shift_specs()
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    for bay, spec in enumerate(specs, start=1):
        await rig.plug(str(bay), spec)
    for spec in specs:
        await rig.wait_released(spec.serial)

    # -- the store: every file bit for bit, exactly once, with its custody record
    for spec in specs:
        check_stored_exactly(rig, spec, await expected(spec))
    check_no_orphans(rig)

    # -- the ledger: the custody sequence per recorder
    for spec in specs:
        kinds = custody_kinds(rig.kinds(spec.serial))
        n = len(spec.footage.file_sizes)
        clock = "clock_set" if spec.clock_offset_s else "clock_checked"
        assert kinds[:3] == ["docked", "identified", clock], kinds
        # then per file: stored, then verified (a verify may overlap the next file's copy)
        assert sorted(kinds[3:]) == ["offloaded"] * n + ["verified"] * n, kinds
        for i in range(4, len(kinds) + 1):
            done = kinds[3:i]
            assert done.count("verified") <= done.count("offloaded"), kinds
    clock_set = [r for r in rig.ledger("BWC10002") if r["kind"] == "clock_set"]
    assert len(clock_set) == 1
    facts = json.loads(clock_set[0]["data"])
    assert facts["drift_before_ms"] < -40_000 and facts["set_ok"] is True
    assert abs(facts["drift_after_ms"]) <= 1000
    # custody records name the recorder's officer; the one without gets none
    offloaded = rig.query("SELECT recorder, officer FROM ledger WHERE kind = 'offloaded'")
    officers = {r["recorder"]: r["officer"] for r in offloaded}
    assert officers == {"BWC10001": "1001001", "BWC10002": "1001002",
                        "BWC10003": "1001003", "BWC10004": None}

    # -- dockctl verify --deep re-hashes the store and checks the signed chain
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err
    assert "OK" in out and "0 problem" in out
    summary = await rig.dockctl_json("verify", "--deep")
    assert summary["ok"] and summary["files_checked"] == sum(
        len(s.footage.file_sizes) for s in specs)

    # -- readiness: right verdicts and reasons; exit 1 because not all are ready
    code, out, err = await rig.dockctl("readiness", "--json")
    assert code == 1, err
    report = {r["serial"]: r for r in json.loads(out)["recorders"]}
    assert report["BWC10001"]["verdict"] == "READY" and report["BWC10001"]["reasons"] == []
    assert report["BWC10002"]["verdict"] == "READY", report["BWC10002"]
    assert report["BWC10003"]["verdict"] == "CHARGING"
    assert [r["code"] for r in report["BWC10003"]["reasons"]] == ["battery_low"]
    assert report["BWC10004"]["verdict"] == "NOT_READY"
    assert [r["code"] for r in report["BWC10004"]["reasons"]] == ["no_officer"]
    code, out, _ = await rig.dockctl("readiness")  # the table names the reasons too
    assert code == 1 and "no officer assigned" in out and "battery 35% < 60%" in out

    # -- status lists the bays
    status = await rig.dockctl_json("status")
    bays = {b["bay"]: b for b in status["bays"]}
    assert {b: bays[b]["serial"] for b in bays} == {
        "1": "BWC10001", "2": "BWC10002", "3": "BWC10003", "4": "BWC10004"}
    assert all(b["state"] == "released" for b in bays.values())
    assert status["dock_id"] == "dock-e2e" and status["broker_connected"] is True

    # -- faults: only the recorder nobody was assigned to; ledger by device
    assert [(f["recorder"], f["code"]) for f in await rig.dockctl_json("faults")] == [
        ("BWC10004", "officer_unassigned")]
    entries = await rig.dockctl_json("ledger", "--device", "BWC10002")
    assert [e["kind"] for e in entries] == custody_kinds(rig.kinds("BWC10002"))
    assert all(e["recorder"] == "BWC10002" for e in entries)

    # -- MQTT: status birth, retained recorder births, every ledger entry in order
    await until(lambda: all_ledger_delivered(rig, central), "ledger delivered", agent=rig.agent)
    await until(lambda: all(any(b and b.get("docked") and b.get("state") == "released"
                                for b in retained_state(central, s.serial)) for s in specs),
                "recorder births", agent=rig.agent)
    assert any(b and b["state"] == "online" for b in status_bodies(central))
    check_ledger_delivered(rig, central)

    # -- the ops team's fleet view, from the broker alone (retained state)
    m = broker.settings("central")
    fleet = await rig.dockctl_json(
        "fleet", "--broker", f"127.0.0.1:{broker.port}", "--tls", "--ca-file", str(m.ca_file),
        "--cert-file", str(m.cert_file), "--key-file", str(m.key_file), "--once", "--wait", "2")
    (dock,) = fleet["docks"]
    assert dock["dock_id"] == "dock-e2e" and dock["online"] is True
    seen = {r["serial"]: r for r in dock["recorders"]}
    assert {s: (r["bay"], r["officer"], r["readiness"]) for s, r in seen.items()} == {
        "BWC10001": ("1", "1001001", "READY"), "BWC10002": ("2", "1001002", "READY"),
        "BWC10003": ("3", "1001003", "CHARGING"), "BWC10004": ("4", "", "NOT_READY")}
    assert seen["BWC10004"]["reasons"] == ["no officer assigned"]
    assert not any(r["stale"] for r in seen.values())

    # -- undock: custody check-out in the ledger, death on MQTT
    await rig.unplug("1")
    await rig.wait_ledger(lambda rows: any(r["kind"] == "undocked" and
                                           r["recorder"] == "BWC10001" for r in rows),
                          "BWC10001 undocked")
    await until(lambda: any(b and b.get("docked") is False
                            for b in retained_state(central, "BWC10001")),
                "recorder death", agent=rig.agent)
    await until(lambda: all_ledger_delivered(rig, central), "undock delivered", agent=rig.agent)
    check_ledger_delivered(rig, central)
    undocked = [r for r in rig.ledger("BWC10001") if r["kind"] == "undocked"]
    assert len(undocked) == 1 and json.loads(undocked[0]["data"])["reason"] == "unplugged"

    # -- a faulty recorder: a fault record that dockctl faults shows
    bad = RecorderSpec("BWC10005", officer=officer("1001005", "Wang Fang"), battery_percent=70,
                       footage=FootageSpec(count=1, size_bytes=1 * MIB, seed=15),
                       clock_offset_s=30.0,
                       faults=Faults(battery_failing=True, clock_set="error"))
    await rig.plug("1", bad)
    await rig.wait_released(bad.serial)
    faults = await rig.dockctl_json("faults", "--recorder", "BWC10005")
    codes = {f["code"] for f in faults}
    assert {"battery_failed", "clock_not_set"} <= codes, faults
    assert all(f["recorder"] == "BWC10005" and f["officer"] == "1001005" for f in faults)
    report = json.loads((await rig.dockctl("readiness", "--json"))[1])
    row = next(r for r in report["recorders"] if r["serial"] == "BWC10005")
    assert row["verdict"] == "NOT_READY"
    assert {"clock_drift", "open_fault"} <= {r["code"] for r in row["reasons"]}, row
    await until(lambda: all_ledger_delivered(rig, central), "faults delivered", agent=rig.agent)
    check_ledger_delivered(rig, central)
    assert rig.agent.terminate() == 0


async def test_restart_with_recorders_docked(make_rig: RigFactory) -> None:
    """A new agent process docks the recorders still in their bays again, copies nothing
    twice and gives the same readiness."""
    rig = make_rig(None)
    specs = shift_specs()[:3]
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    for bay, spec in enumerate(specs, start=1):
        await rig.plug(str(bay), spec)
    for spec in specs:
        await rig.wait_released(spec.serial)
    first = {s.serial: [r.relpath for r in rig.stored(s.serial)] for s in specs}
    before = {r["serial"]: r["verdict"] for r in json.loads(
        (await rig.dockctl("readiness", "--json"))[1])["recorders"]}

    assert rig.agent.terminate() == 0  # clean stop: sessions close with agent_stopped
    for spec in specs:
        undocked = [json.loads(r["data"]) for r in rig.ledger(spec.serial)
                    if r["kind"] == "undocked"]
        assert [u["reason"] for u in undocked] == ["agent_stopped"]
    # With the agent stopped, live views say so; history and integrity checks still work.
    code, _, err = await rig.dockctl("status")
    assert code == 3 and "agent not running" in err, err
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err
    entries = await rig.dockctl_json("ledger", "--device", "BWC10001")
    assert entries[-1]["kind"] == "undocked"

    rig.start_agent()
    await rig.wait_agent_up()
    for spec in specs:
        await rig.wait_released(spec.serial, sessions=2)
    for spec in specs:
        check_stored_exactly(rig, spec, await expected(spec))
        assert [r.relpath for r in rig.stored(spec.serial)] == first[spec.serial]
    check_no_orphans(rig)
    status = await rig.dockctl_json("status")
    for bay in status["bays"]:
        result = bay["offload_result"]
        n = len(next(s for s in specs if s.serial == bay["serial"]).footage.file_sizes)
        assert result["outcome"] == "complete"
        assert (result["stored"], result["already_stored"], result["bytes_copied"]) == (0, n, 0)
    code, out, _ = await rig.dockctl("readiness", "--json")
    after = {r["serial"]: r["verdict"] for r in json.loads(out)["recorders"]}
    assert after == before == {"BWC10001": "READY", "BWC10002": "READY",
                               "BWC10003": "CHARGING"}
    assert code == 1
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err


async def test_hostile_and_failing_storage(make_rig: RigFactory) -> None:
    """Hostile entries on a recorder are refused and reported, a file that cannot be read
    is reported and left on the recorder; the rest is stored; readiness says why not."""
    rig = make_rig(None, offload={"wipe_after_offload": True})
    hostile = RecorderSpec("BWC10006", officer=officer("1001006", "Xu Lei"),
                           footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=16),
                           faults=Faults(hostile_names=True))
    specs = [hostile]
    if fuse_available():
        specs.append(RecorderSpec(
            "BWC10007", officer=officer("1001007", "Guo Hua"),
            footage=FootageSpec(count=3, size_bytes=2 * MIB, seed=17),
            faults=Faults(eio_at=((1, 1 * MIB),))))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    recs = [await rig.plug(str(bay), s) for bay, s in enumerate(specs, start=1)]
    for s in specs:
        await rig.wait_released(s.serial)

    want = await expected(hostile)
    stored = {r.source_name: r for r in rig.stored(hostile.serial)}
    for e in want:  # the footage, bit for bit
        assert stored[e.name].blake3 == e.blake3_hex
        assert hash_file(rig.store_dir / stored[e.name].relpath) == e.blake3_hex
    # Odd but regular files are evidence too, stored under safe names inside the store;
    # links out of the storage, the FIFO and device nodes are refused and reported.
    for r in stored.values():
        path = (rig.store_dir / r.relpath).resolve()
        assert path.is_relative_to(rig.store_dir.resolve()) and path.is_file()
    assert not any(b"link_out" in n or b"rel_out" in n or b"fifo" in n or b"zero" in n
                   for n in stored)
    faults = await rig.dockctl_json("faults", "--recorder", hostile.serial)
    assert [f["code"] for f in faults] == ["hostile_content"], faults
    refused = {f["name"] for f in faults[0]["detail"]["files"]}
    assert {"DCIM/100BWC/link_out.MP4", "DCIM/100BWC/fifo.MP4"} <= refused, refused
    # what was stored left the recorder; what was refused is still there, untouched
    left = recorder_files(recs[0])
    assert not set(stored) & left
    assert b"DCIM/100BWC/fifo.MP4" in left
    report = {r["serial"]: r for r in (await rig.dockctl_json("readiness", expect=(1,)))[
        "recorders"]}
    assert report[hostile.serial]["verdict"] == "NOT_READY"
    assert {r["code"] for r in report[hostile.serial]["reasons"]} == {"open_fault"}

    if len(specs) > 1:
        failing = specs[1]
        good = [e for i, e in enumerate(await expected(failing)) if i != 1]
        rows = rig.stored(failing.serial)
        assert sorted(r.source_name for r in rows) == sorted(e.name for e in good)
        codes = [f["code"] for f in await rig.dockctl_json("faults", "--recorder",
                                                          failing.serial)]
        assert "read_error" in codes, codes
        assert recorder_files(recs[1]) == {(await expected(failing))[1].name}
        reasons = {r["code"] for r in report[failing.serial]["reasons"]}
        assert "offload_pending" in reasons and report[failing.serial]["verdict"] == "NOT_READY"
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err
