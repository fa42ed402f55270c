"""An officer assignment requested while the recorder was away is written at its next
docking, read back, and recorded in the custody ledger with the request marked applied."""

from __future__ import annotations

from session_bench import Bench, Env, spec, wait_state

from agent.session.state_machine import State
from agent.store import assignments


async def test_pending_assignment_is_written_at_docking(env: Env, bench: Bench) -> None:
    env.db.write_sync(lambda c: assignments.request(
        c, "SN000077", officer_no="0099", officer_name="王芳", unit_no="U-17",
        unit_name="卫生监督所", requested_by="central"))
    rec = await bench.plug("B1", spec("SN000077"))
    s = bench.session("SN000077")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert s.state is State.RELEASED, s.faults

    # The recorder itself now carries the new officer record.
    assert rec.firmware.state.officer.officer_no == "0099"
    assert rec.firmware.state.officer.officer_name == "王芳"
    entry = env.entries(session_id=s.session_id, kind="officer_assigned")[0]
    assert entry.officer == "0099"
    assert entry.data["after"]["unit_name"] == "卫生监督所"  # type: ignore[index]
    assert entry.data["before"]["officer_no"] == "0042"  # type: ignore[index]
    # Everything after the assignment carries the new officer.
    assert env.entries(session_id=s.session_id, kind="offloaded")[0].officer == "0099"
    assert env.query(lambda c: assignments.pending(c, "SN000077")) is None
    assert bench.supervisor.snapshot()[0]["officer_no"] == "0099"


async def test_assignment_while_docked_is_applied_now(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000078"))
    s = bench.session("SN000078")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert await s.apply_pending_assignment() is False  # nothing pending: nothing written
    env.db.write_sync(lambda c: assignments.request(c, "SN000078", officer_no="0100"))
    assert await s.apply_pending_assignment() is True
    assert rec.firmware.state.officer.officer_no == "0100"
    assert [e.officer for e in env.entries(kind="officer_assigned")] == ["0100"]
    assert await s.apply_pending_assignment() is False  # applied once, not again
