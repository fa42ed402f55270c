"""A recorder pulled out of its bay in the middle of a copy, then plugged back in: the
second docking completes the offload, custody shows one check-out and one check-in per
physical unplug, and no file is stored twice."""

from __future__ import annotations

import json

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import MIB, Faults, FootageSpec, RecorderSpec

from .conftest import RigFactory
from .harness import check_no_orphans, check_stored_exactly, expected, until

pytestmark = pytest.mark.skipif(not fuse_available(), reason="needs FUSE (/dev/fuse, fuse3)")


async def test_unplug_mid_copy_then_replug(make_rig: RigFactory) -> None:
    rig = make_rig(None, offload={"buffer_mib": 1, "fdatasync_every_mib": 8})
    sizes = (4 * MIB, 24 * MIB, 4 * MIB)
    spec = RecorderSpec("BWC40001", officer=OfficerRecord("4001001", "Ma Lin", "U04", "Unit 4"),
                        footage=FootageSpec(sizes=sizes, seed=41),
                        faults=Faults(unplug_at=(1, 13 * MIB)))
    want = await expected(spec)
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    assert rig.dock is not None
    await rig.plug("1", spec)

    # The recorder drops off the bus when the copy of file 1 reaches 13 MiB.
    await until(lambda: "1" not in rig.dock.recorders if rig.dock else False,
                "recorder unplugged by its fault", agent=rig.agent)
    await rig.wait_ledger(lambda rows: any(r["kind"] == "undocked" for r in rows),
                          "check-out recorded")
    first = rig.stored(spec.serial)
    assert [r.source_name for r in first] == [want[0].name], "only file 0 completed"
    (out,) = [json.loads(r["data"]) for r in rig.ledger(spec.serial) if r["kind"] == "undocked"]
    assert out["reason"] == "unplugged", out
    assert out["offload"] is None or out["offload"]["outcome"] != "complete", out

    # Plugged back in: the unplug fault has fired, the same files are presented again.
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial, sessions=2)
    check_stored_exactly(rig, spec, want)
    check_no_orphans(rig)
    status = await rig.dockctl_json("status")
    result = status["bays"][0]["offload_result"]
    assert result["outcome"] == "complete"
    assert (result["already_stored"], result["stored"]) == (1, 2), result

    await rig.unplug("1")
    await rig.wait_ledger(lambda rows: sum(r["kind"] == "undocked" for r in rows) == 2,
                          "second check-out")
    kinds = [r["kind"] for r in rig.ledger(spec.serial)
             if r["kind"] in ("docked", "undocked")]
    assert kinds == ["docked", "undocked", "docked", "undocked"]
    # An unplug is not a fault: nothing for the unit's work record.
    assert await rig.dockctl_json("faults", "--recorder", spec.serial) == []
    code, text, err = await rig.dockctl("verify", "--deep")
    assert code == 0, text + err
    assert rig.agent.terminate() == 0
