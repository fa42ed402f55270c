"""Docking sessions end to end: virtual recorders on real ptys, the real firmware bridge
client, real database, ledger, fault register, offloader and evidence store."""

from __future__ import annotations

import json
from typing import Any

from agent.session.state_machine import State
from hw_sim.spec import Faults

from .session_bench import OFFICER, Bench, Env, spec, wait_state


async def test_normal_path_records_custody_in_order(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000001", clock_offset_s=0.0))
    s = bench.session("SN000001")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert s.state is State.RELEASED, s.faults
    # first docking of this serial: the offloader verifies each stored file, after its
    # commit (one file's verify overlaps the next file's copy: either may commit first)
    kinds = env.kinds(s.session_id)
    assert kinds[:3] == ["docked", "identified", "clock_checked"]
    assert sorted(kinds[3:]) == ["offloaded", "offloaded", "verified", "verified"]
    per_file = [(e.kind, e.data["file_id"]) for e in env.entries(session_id=s.session_id)
                if e.kind in ("offloaded", "verified")]
    for file_id in {f for _, f in per_file}:
        assert [k for k, f in per_file if f == file_id] == ["offloaded", "verified"]
    ident = env.entries(session_id=s.session_id, kind="identified")[0]
    assert ident.recorder == "SN000001" and ident.officer == OFFICER.officer_no
    assert ident.data["officer_name"] == OFFICER.officer_name
    clock = env.entries(session_id=s.session_id, kind="clock_checked")[0].data
    assert abs(clock["drift_before_ms"]) <= 1000 and clock["action"] == "ok"
    assert len(env.stored_files()) == 2
    assert env.mounter.mounted == set()  # unmounted after the offload
    assert rec.firmware.state.mass_storage is False  # locked again: records and charges
    snap = bench.supervisor.snapshot()
    assert [b.bay for b in snap] == ["B1"]
    assert snap[0].state == "released" and snap[0].officer_no == "0042"
    assert snap[0].battery is not None and snap[0].storage is not None
    assert snap[0].offload_result is not None and snap[0].offload_result.stored == 2
    assert snap[0].faults == ()
    record = snap[0].as_record()
    assert json.loads(json.dumps(record)) == record  # ready for dockctl

    done = await bench.unplug("B1")
    assert done.state is State.REMOVED
    kinds = env.kinds(s.session_id)
    assert kinds[-1] == "undocked"
    undocked = env.entries(session_id=s.session_id, kind="undocked")[0].data
    assert undocked["reason"] == "unplugged" and undocked["state_reached"] == "released"
    assert "offloaded" in undocked["done"] and "storage locked" in undocked["done"]
    assert bench.supervisor.snapshot() == []
    assert env.faults() == []


async def test_drifting_clock_is_set_and_read_back(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000002", clock_offset_s=-95.0))
    s = bench.session("SN000002")
    await wait_state(s, State.RELEASED, State.FAILED)
    e = env.entries(session_id=s.session_id, kind="clock_set")
    assert len(e) == 1
    d: Any = e[0].data
    assert -96_000 < d["drift_before_ms"] < -94_000
    assert abs(d["drift_after_ms"]) <= 1000 and d["set_ok"] is True
    assert env.faults() == []


async def test_unsynchronised_dock_measures_but_never_sets(env: Env,
                                                           make_bench: Any) -> None:
    bench: Bench = await make_bench(dock_synchronised=lambda: False)
    rec = await bench.plug("B1", spec("SN000003", clock_offset_s=3600.0))
    s = bench.session("SN000003")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert s.state is State.RELEASED  # footage still comes off
    assert rec.firmware.state.clock_sets == 0
    kinds = env.kinds(s.session_id)
    assert "clock_set" not in kinds and "clock_checked" in kinds
    d: Any = env.entries(session_id=s.session_id, kind="clock_checked")[0].data
    assert 3_599_000 < d["drift_before_ms"] < 3_601_000 and d["dock_synchronised"] is False
    (f,) = env.faults()
    assert f.code == "dock_clock_unsynchronised" and f.recorder == "SN000003"
    assert f.officer == "0042" and f.bay == "B1" and f.severity == "warning"


async def test_clock_that_will_not_set_is_a_fault(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000004", clock_offset_s=50.0,
                                faults=Faults(clock_set="ignored")))
    s = bench.session("SN000004")
    await wait_state(s, State.RELEASED, State.FAILED)
    d: Any = env.entries(session_id=s.session_id, kind="clock_set")[0].data
    assert d["set_ok"] is False and d["drift_after_ms"] > 49_000
    (f,) = env.faults()
    assert f.code == "clock_not_set" and "will not set" in f.reason
    assert s.state is State.RELEASED


async def test_recorder_without_officer(env: Env, bench: Bench) -> None:
    await bench.plug("B1", spec("SN000005", officer=None))
    s = bench.session("SN000005")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert s.state is State.RELEASED
    e = env.entries(session_id=s.session_id, kind="identified")[0]
    assert e.officer is None and e.data["officer_assigned"] is False
    assert bench.supervisor.snapshot()[0].officer_no is None
    assert all(t.officer_no is None for t in s.machine.history)
    assert s.machine.history[0].serial is None  # authenticated before identified
    assert all(t.serial == "SN000005" for t in s.machine.history[1:])


async def test_every_transition_is_reported(env: Env, make_bench: Any) -> None:
    from agent.session.state_machine import Transition

    seen: list[Transition] = []
    bench: Bench = await make_bench(on_transition=seen.append)
    await bench.plug("B7", spec("SN000006"))
    s = bench.session("SN000006")
    await wait_state(s, State.RELEASED, State.FAILED)
    await bench.unplug("B7")
    assert [t.target.value for t in seen] == [
        "authenticated", "identified", "clock_checked", "status_read", "storage_unlocked",
        "mounted", "offloading", "released", "removed"]
    assert all(t.bay == "B7" for t in seen)
    assert all(t.officer_no == "0042" and t.serial == "SN000006" for t in seen[1:])
    assert [t.at for t in seen] == sorted(t.at for t in seen)
    assert seen == s.machine.history
