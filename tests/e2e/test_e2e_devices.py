"""dock-sim's recorders reach the agent through the real device pipeline: the allowlist
refuses a device it does not name, the tracker pairs each recorder's storage with its
serial port, and a recorder is only reported gone after the debounce window."""

from __future__ import annotations

import json

from agent.store.faults import FaultCode
from hw_sim.spec import FootageSpec, RecorderSpec

from .conftest import RigFactory
from .harness import check_no_orphans, check_stored_exactly, expected, render_toml


async def test_unlisted_device_is_refused_and_listed_ones_dock(make_rig: RigFactory) -> None:
    rig = make_rig(None, bays=3)
    sections = rig.sections()
    sections["devices"]["allow"] = [{"vid": "1209", "pid": "d0c5", "serial_pattern": "BWC[0-9]{5}"}]
    rig.config.write_text(render_toml(sections))
    stranger = RecorderSpec("BWC61009", usb_vid="dead", usb_pid="beef",
                            footage=FootageSpec(count=1, size_bytes=64 * 1024, seed=61))
    wrong_serial = RecorderSpec("XYZ61002",
                                footage=FootageSpec(count=1, size_bytes=64 * 1024, seed=62))
    good = [RecorderSpec(f"BWC6100{i}", footage=FootageSpec(count=2, size_bytes=256 * 1024,
                                                            seed=60 + i)) for i in (1, 3)]
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", stranger)
    await rig.plug("2", good[0])
    await rig.plug("3", good[1])
    for spec in good:  # storage found and paired with the right serial port: offloaded
        await rig.wait_released(spec.serial)
        check_stored_exactly(rig, spec, await expected(spec))

    await rig.wait_ledger(lambda rows: any(r["kind"] == "device_rejected" for r in rows),
                          "the unlisted device is recorded as rejected")
    (rejected,) = [json.loads(r["data"]) for r in rig.ledger()
                   if r["kind"] == "device_rejected"]
    assert rejected["vid_pid"] == "dead:beef" and rejected["usb_serial"] == stranger.serial
    assert "not in the recorder allowlist" in rejected["reason"]
    assert rig.ledger(stranger.serial) == []  # never docked, never talked to, never read
    assert rig.stored(stranger.serial) == []
    faults = rig.query("SELECT code, bay FROM faults WHERE detail LIKE ?", ("%dead:beef%",))
    assert [(f["code"], f["bay"]) for f in faults] == [(FaultCode.DEVICE_REJECTED, "1")]

    # The serial pattern is checked too: same USB ids, a serial the allowlist refuses.
    await rig.unplug("1")
    await rig.plug("1", wrong_serial)
    await rig.wait_ledger(lambda rows: sum(r["kind"] == "device_rejected" for r in rows) == 2,
                          "the recorder with a refused serial is rejected")
    last = json.loads([r for r in rig.ledger() if r["kind"] == "device_rejected"][-1]["data"])
    assert "serial pattern" in last["reason"] and last["usb_serial"] == "XYZ61002"
    status = await rig.dockctl_json("status")
    assert {b["serial"] for b in status["bays"]} == {s.serial for s in good}
    check_no_orphans(rig)
