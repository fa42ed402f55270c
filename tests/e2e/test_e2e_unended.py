"""A docking session cut short by a power loss or a killed agent is closed in the ledger
at the next start: without it the ledger shows the recorder docked for ever (found by the
HIL power-cut trials, docs/power-cut.md)."""

from __future__ import annotations

import json

from .conftest import RigFactory
from .harness import until
from .test_e2e_crash import crash_spec


async def test_a_session_cut_short_is_closed_at_the_next_start(make_rig: RigFactory) -> None:
    rig = make_rig(None)
    spec = crash_spec("BWC20011", 31)
    await rig.start_dock()
    await rig.plug("1", spec)
    rig.start_agent()
    await until(lambda: bool(rig.query("SELECT 1 FROM evidence_files")),
                "a file committed, the offload still going", agent=rig.agent)
    rig.agent.kill9()
    cut = [r["session_id"] for r in rig.query(
        "SELECT session_id FROM ledger WHERE kind = 'docked'")]
    assert len(cut) == 1 and not rig.query("SELECT 1 FROM ledger WHERE kind = 'undocked'")

    rig.start_agent()
    await rig.wait_released(spec.serial, sessions=2)
    rows = rig.query("SELECT seq, kind, session_id, recorder, data FROM ledger"
                     " WHERE kind IN ('docked', 'undocked') ORDER BY seq")
    kinds = [(r["kind"], r["session_id"]) for r in rows]
    # The cut session is closed before the next docking is opened, under its own id ...
    assert kinds[:2] == [("docked", cut[0]), ("undocked", cut[0])], kinds
    assert kinds[2][0] == "docked" and kinds[2][1] != cut[0], kinds
    closing = json.loads(rows[1]["data"])
    assert closing["end_observed"] is False and rows[1]["recorder"] == spec.serial
    assert closing["docked_seq"] == rows[0]["seq"]
    # ... and the second, clean, start adds nothing more.
    assert rig.agent.terminate() == 0
    rig.start_agent()
    await rig.wait_released(spec.serial, sessions=3)
    closed = rig.query("SELECT session_id FROM ledger WHERE kind = 'undocked'")
    assert [r["session_id"] for r in closed].count(cut[0]) == 1
    code, out, err = await rig.dockctl("verify", "--deep")
    assert code == 0, out + err
    assert rig.agent.terminate() == 0
